"""Work shared by this process and worker processes: the pattern of both parallel paths (saliency images,
evaluation runs on SQLite).

The process that runs a stage already holds what the work needs (the model, the algorithm, an open tracker), so it
takes jobs too instead of waiting for workers. Workers come from joblib's reusable executor, so they outlive one
call; a worker gets jobs only once its warm-up (imports, opening the store) has finished, and then is kept fed with
one job running and one queued while this process does the next job itself. A cold start therefore never holds
this process up: a small input is done here before the worker is even ready.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any


def share_work(
    jobs: Iterable[Any],
    here: Callable[[Any], Any],
    remote: Callable[..., Any],
    remote_args: tuple,
    processes: int,
    warmup: Callable[..., Any] | None = None,
) -> Iterator[tuple[int, Any]]:
    """``(index, result)`` of every job as it finishes: ``here(job)`` in this process, ``remote(*remote_args,
    job)`` in ``processes - 1`` workers once ``warmup(*remote_args)`` has run in one of them (module-level
    functions, as they are pickled by name). ``jobs`` may be lazy: it is read only as fast as the work goes.

    On an early exit (an error, Ctrl-C, SIGTERM raised as an exception) no new job starts, and the jobs already
    handed to workers (at most two each) finish before the exception leaves, so nothing a worker does lands
    afterwards; closing what a worker that died left open is the caller's.
    """
    from concurrent.futures import FIRST_COMPLETED, Future, wait

    from joblib.externals.loky import get_reusable_executor

    workers = max(1, processes - 1)
    executor = get_reusable_executor(max_workers=workers)
    warming = executor.submit(warmup, *remote_args) if warmup is not None else None
    pending = enumerate(jobs)
    running: dict[Future, int] = {}
    more, ok = True, False
    try:
        while more or running:
            if warming is not None and warming.done():
                warming.result()  # a worker that cannot do the work says why
                warming = None
            while warming is None and more and len(running) < 2 * workers:
                item = next(pending, None)
                if item is None:
                    more = False
                else:
                    running[executor.submit(remote, *remote_args, item[1])] = item[0]
            item = next(pending, None) if more else None
            if item is not None:
                yield item[0], here(item[1])
                done = [f for f in running if f.done()]
            else:
                more = False
                done = list(wait(running, return_when=FIRST_COMPLETED).done) if running else []
            for future in done:
                yield running.pop(future), future.result()
        ok = True
    finally:
        if not ok:
            # the jobs handed out finish (a worker's own Ctrl-C ends its run KILLED): once this returns, nothing a
            # worker does can land. Killing the workers instead races loky's manager thread (a KeyError in it).
            wait(list(running))

"""Work shared by this process and worker processes: the pattern of both parallel paths (saliency images,
evaluation runs on SQLite).

The process that runs a stage already holds what the work needs (the model, the algorithm, an open tracker), so it
takes jobs too instead of waiting for workers. Workers come from joblib's reusable executor, so they outlive one
call; a worker gets jobs only once its warm-up (imports, opening the store) has finished, and then is kept fed with
one job running and one queued while this process does the next job itself. A cold start therefore never holds
this process up: a small input is done here before the worker is even ready.

A worker that dies, or an executor whose manager thread stopped, never leaves this process waiting: every wait on
the workers is bounded and checks that they can still answer, and a broken executor is discarded so that the next
call starts fresh workers (:class:`WorkerDied`).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from typing import Any

from xaitk_exp.errors import WorkerDied

#: seconds between checks that the workers can still answer, while this process waits on them
POLL_S = 0.5
#: loky's warning when a worker it retired (idle timeout, memory guard) held queued jobs; a new worker takes them
RETIRED_WARNING = "A worker stopped while some jobs were given to the executor"


def share_work(
    jobs: Iterable[Any],
    here: Callable[[Any], Any],
    remote: Callable[..., Any],
    remote_args: tuple[Any, ...],
    processes: int,
    warmup: Callable[..., Any] | None = None,
) -> Generator[tuple[int, Any], None, None]:
    """``(index, result)`` of every job as it finishes: ``here(job)`` in this process, ``remote(*remote_args,
    job)`` in ``processes - 1`` workers once ``warmup(*remote_args)`` has run in one of them (module-level
    functions, as they are pickled by name). ``jobs`` may be lazy: it is read only as fast as the work goes.

    On an early exit (an error, Ctrl-C, SIGTERM raised as an exception) no new job starts, and the jobs already
    handed to workers (at most two each) finish before the exception leaves, so nothing a worker does lands
    afterwards; closing what a worker that died left open is the caller's. A worker that dies raises
    :class:`WorkerDied` (after the results already in are yielded) instead of waiting for it.
    """
    from concurrent.futures import FIRST_COMPLETED, Future, wait

    workers = max(1, processes - 1)
    executor = _executor(workers)
    warming = executor.submit(warmup, *remote_args) if warmup is not None else None
    pending = enumerate(jobs)
    running: dict[Future, int] = {}
    more, ok = True, False
    try:
        while more or running:
            if warming is not None and warming.done():
                _result(executor, warming)  # a worker that cannot do the work says why
                warming = None
            while warming is None and more and len(running) < 2 * workers:
                item = next(pending, None)
                if item is None:
                    more = False
                else:
                    running[_submit(executor, remote, *remote_args, item[1])] = item[0]
            item = next(pending, None) if more else None
            if item is not None:
                yield item[0], here(item[1])
                done = [f for f in running if f.done()]
                if running and not done:
                    _check(executor)  # a dead worker is noticed while this process works too
            else:
                more = False
                done = []
                while running and not done:  # bounded waits: a dead worker or manager thread is noticed
                    done = list(wait(running, timeout=POLL_S, return_when=FIRST_COMPLETED).done)
                    if not done:
                        _check(executor)
            for future in sorted(done, key=lambda f: f.exception() is not None):  # the results in first, then errors
                yield running.pop(future), _result(executor, future)
        ok = True
    finally:
        if not ok:
            # the jobs handed out finish (a worker's own Ctrl-C ends its run KILLED): once this returns, nothing a
            # worker does can land. Killing the workers instead races loky's manager thread (a KeyError in it).
            # A broken executor finishes nothing more: then there is nothing left to wait for.
            _drain(executor, list(running))


def _executor(workers: int) -> Any:
    """joblib's reusable executor, a new one when the last one's manager thread is gone (it would take jobs and
    never run them)."""
    import warnings

    from joblib.externals.loky import get_reusable_executor

    # loky retires a worker whose memory grew by more than 300 MB since its first job (its leak guard: a worker kept
    # from an ONNX stage that then loads torch.export's modules for a pt2 model) and starts another, warning if jobs
    # are queued. The warning is raised in loky's manager thread: under warnings-as-errors (pytest, -W error) it
    # would kill that thread, and no job would ever finish. The retirement itself is harmless: keep it quiet.
    warnings.filterwarnings("ignore", message=RETIRED_WARNING, category=UserWarning)
    executor = get_reusable_executor(max_workers=workers)
    if _why_broken(executor) is not None:
        _discard(executor, WorkerDied("the previous executor stopped"))
        executor = get_reusable_executor(max_workers=workers)
    return executor


def _submit(executor: Any, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return executor.submit(fn, *args)
    except Exception as exc:
        from joblib.externals.loky.process_executor import BrokenProcessPool

        if isinstance(exc, BrokenProcessPool):
            raise _died(executor, exc) from exc
        raise


def _result(executor: Any, future: Any) -> Any:
    """The future's result; a broken pool (a worker died) as :class:`WorkerDied`, the job's own errors as raised."""
    from joblib.externals.loky.process_executor import BrokenProcessPool

    try:
        return future.result()
    except BrokenProcessPool as exc:
        raise _died(executor, exc) from exc


def _check(executor: Any) -> None:
    """Raise :class:`WorkerDied` when ``executor`` can no longer finish the jobs it holds."""
    why = _why_broken(executor)
    if why is not None:
        raise _died(executor, None, why)


def _drain(executor: Any, futures: list) -> None:
    """Wait for ``futures`` while the executor can finish them."""
    from concurrent.futures import wait

    while futures:
        futures = list(wait(futures, timeout=POLL_S).not_done)
        if futures and _why_broken(executor) is not None:
            _discard(executor, WorkerDied("a worker process died"))
            return


def _why_broken(executor: Any) -> str | None:
    """Why ``executor`` cannot finish its jobs (broken by a dead worker, or its manager thread gone), else None."""
    flags = getattr(executor, "_flags", None)
    if flags is not None and flags.broken is not None:
        return _exit_codes(flags.broken) or type(flags.broken).__name__
    thread = getattr(executor, "_executor_manager_thread", None)
    if thread is not None and not thread.is_alive() and not (flags is not None and flags.shutdown):
        return "the executor's manager thread stopped"
    return None


def _exit_codes(exc: BaseException) -> str:
    import re

    found = re.search(r"exit codes of the workers are (\{[^}]*\})", str(exc))
    return f"exit codes {found.group(1)}" if found else ""


def _died(executor: Any, exc: BaseException | None, why: str | None = None) -> WorkerDied:
    """The one-line error for a worker that died; the executor is discarded (the next call starts new workers)."""
    why = why or _why_broken(executor) or (_exit_codes(exc) if exc is not None else "") or "it stopped"
    err = WorkerDied(
        f"a worker process died ({why}) and the jobs it held were lost; rerun with n_jobs=1 to do the work in this "
        "process alone (a worker may have run out of memory or crashed in native code)"
    )
    _discard(executor, err)
    return err


def _discard(executor: Any, err: BaseException) -> None:
    """Mark ``executor`` broken so that :func:`get_reusable_executor` replaces it, fail what it still holds and kill
    its workers: nothing waits on it afterwards."""
    from concurrent.futures import InvalidStateError

    flags = getattr(executor, "_flags", None)
    if flags is None:
        return
    if flags.broken is None:
        flags.flag_as_broken(err)
    thread = getattr(executor, "_executor_manager_thread", None)
    if thread is not None and thread.is_alive():
        return  # loky's own manager fails the futures and kills the workers of a broken pool
    for item in list(getattr(executor, "_pending_work_items", {}).values()):
        try:
            item.future.set_exception(err)
        except InvalidStateError:
            pass
    for proc in list(getattr(executor, "_processes", {}).values()):
        try:
            proc.kill()
        except Exception:
            pass

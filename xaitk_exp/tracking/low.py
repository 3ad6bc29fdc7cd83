"""Low level: MlflowClient with explicit run ids, batched writes (one ``log_batch`` per write). No global state.

A run costs ``create_run`` + one ``log_batch`` + ``set_terminated``, the least MLflow's public API allows. Against a
server or a database (not SQLite, whose writes queue behind one lock) the per-image runs of :meth:`log_runs` are
written by a few threads at once, since the server answers requests in parallel; on SQLite, with ``n_jobs`` > 1,
worker processes write batches of them beside the stage's process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from itertools import islice
from typing import Any, cast
from urllib.parse import urlsplit

from xaitk_exp import schema
from xaitk_exp.parallel import share_work
from xaitk_exp.schema import EVALUATION_SUMMARY_RUN_ID, PARENT_RUN_ID
from xaitk_exp.tracking.factory import ReopenArgs, worker_tracker
from xaitk_exp.tracking.signals import sigterm_raises
from xaitk_exp.tracking.tracker import Tracker, _linked

#: threads writing per-image runs to a tracking server or a database; SQLite and file stores get one
PARALLEL_WORKERS = 4
#: runs a worker process takes at a time (:meth:`LowTracker.log_runs` with ``processes`` > 1)
RUNS_PER_BATCH = 25
PARALLEL_SCHEMES = ("http", "https", "postgresql", "mysql", "mssql")


class LowTracker(Tracker):
    level = "low"

    def __init__(self, uri: str, artifact_root: str | None = None, sqlite_journal: str = "wal") -> None:
        super().__init__(uri, artifact_root, sqlite_journal)
        scheme = urlsplit(uri).scheme.split("+")[0]
        self.workers = PARALLEL_WORKERS if scheme in PARALLEL_SCHEMES else 1
        self._context: dict[str, str] | None = None

    def _context_tags(self) -> dict[str, str]:
        """MLflow's context tags (``mlflow.user``, ``mlflow.source.*``, git), resolved once: the fluent API resolves
        the same values on every run, at about 2 ms each."""
        if self._context is None:
            from mlflow.tracking.context.registry import resolve_tags

            self._context = resolve_tags({})
        return self._context

    def _start_run(self, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
        run = self.client.create_run(experiment_id, run_name=run_name, tags={**self._context_tags(), **tags})
        return str(run.info.run_id)

    def log_runs(
        self,
        experiment_id: str,
        runs: Iterable[tuple[str, Mapping[str, Any], Mapping[str, float]]],
        parent_run_id: str | None = None,
        processes: int = 1,
        summary_run_id: str | None = None,
    ) -> list[str]:
        """As :meth:`Tracker.log_runs`, with the runs' own ``start_time`` taken in order (strictly increasing, so
        ordering by start time, MLflow's tie-break in searches, gives the order of ``runs``).

        Against a server or a database the runs are written by a thread pool (the server answers requests in
        parallel). On SQLite with ``processes`` > 1, ``processes - 1`` worker processes write batches of runs
        beside this one, each through its own client: writing a run costs mostly MLflow's own Python work (about
        17 ms a run, where a WAL commit is a fraction of a millisecond), which threads cannot spread over cores.
        A run left open by a worker that was stopped is closed KILLED.
        """
        context = self._context_tags()
        items = _stamped(
            (schema.trial_run_name(name, run_tags), {**context, **run_tags}, dict(metrics))
            for name, tags, metrics in _linked(runs, summary_run_id)
            for run_tags in [self._run_tags(experiment_id, tags, parent_run_id)]
        )
        with sigterm_raises():  # a run being written when SIGTERM comes is closed KILLED
            if processes < 2 or self.workers > 1:
                # a server already takes this process's requests in parallel: more client processes beside it only
                # slowed it down here (2 cores shared by client, server and database)
                return self._write_items(experiment_id, items)
            return self._write_items_in_processes(experiment_id, items, processes, parent_run_id or summary_run_id)

    def _write_items(self, experiment_id: str, items: Iterable[tuple[Any, ...]]) -> list[str]:
        """Runs ``(name, tags, metrics, start_time)`` of this process: one after another, or by a thread pool."""
        if self.workers < 2:
            return [self._write_run(experiment_id, *item) for item in items]
        slots = threading.Semaphore(2 * self.workers)  # submit just ahead of the writers: start times stay honest
        failed: list[Future[str]] = []

        def done(f: Future[str]) -> None:
            slots.release()
            if not f.cancelled() and f.exception() is not None:
                failed.append(f)

        futures: list[Future[str]] = []
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="xaitk-exp-runs")
        try:
            for item in items:
                slots.acquire()
                if failed:
                    slots.release()
                    break
                f = pool.submit(self._write_run, experiment_id, *item)
                f.add_done_callback(done)
                futures.append(f)
            return [f.result() for f in futures]  # the first failure, in order, is raised
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # Ctrl-C: runs not yet begun are never created

    def _write_items_in_processes(
        self, experiment_id: str, items: Iterator[tuple[Any, ...]], processes: int, parent_run_id: str | None
    ) -> list[str]:
        """Batches of runs shared by this process and ``processes - 1`` workers
        (:func:`xaitk_exp.parallel.share_work`); a run a stopped worker left open is closed KILLED."""
        batches = iter(lambda: list(islice(items, RUNS_PER_BATCH)), [])
        args = (self.reopen_args(), experiment_id)
        results: dict[int, list[str]] = {}
        try:
            with closing(share_work(batches, lambda b: self._write_items(experiment_id, b), write_runs, args,
                                    processes, open_worker_tracker)) as work:
                for k, run_ids in work:
                    results[k] = run_ids
        except BaseException:
            if parent_run_id:
                self._close_open_children(experiment_id, parent_run_id)
            raise
        return [run_id for k in sorted(results) for run_id in results[k]]

    def _close_open_children(self, experiment_id: str, parent_run_id: str) -> None:
        """Best effort after a stop: the runs of ``parent_run_id`` (nested, or linked by tag) still RUNNING are
        closed KILLED."""
        for link in (PARENT_RUN_ID, EVALUATION_SUMMARY_RUN_ID):
            try:
                flt = f"tags.`{link}` = '{parent_run_id}' and attributes.status = 'RUNNING'"
                for run in self.search([experiment_id], flt, max_results=50000):
                    self.client.set_terminated(run.info.run_id, "KILLED")
            except Exception:
                pass

    def _write_run(
        self, experiment_id: str, run_name: str, tags: dict[str, str], metrics: Mapping[str, float], start_time: int
    ) -> str:
        """One run: FINISHED, or FAILED with the error recorded, or KILLED on Ctrl-C / SIGTERM (as
        :meth:`Tracker.run`)."""
        run_id = self.client.create_run(experiment_id, start_time=start_time, tags=tags, run_name=run_name).info.run_id
        with self.closed_on_error(run_id):
            self.log(run_id, metrics=metrics)
        self.client.set_terminated(run_id, "FINISHED", end_time=max(int(time.time() * 1000), start_time))
        return str(run_id)

    def _resume_run(self, run_id: str) -> None:
        self.client.update_run(run_id, status="RUNNING")

    def _end_run(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status=status)

    def _log(self, run_id: str, params: dict[str, str], metrics: dict[str, float], tags: dict[str, str], step: int) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, step) for k, v in metrics.items()],
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
            synchronous=True,
        )

    def _log_history(self, run_id: str, key: str, values: list[float], first_step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, v, now, first_step + i) for i, v in enumerate(values)]
        self.client.log_batch(run_id, metrics=metrics, synchronous=True)

    def _log_artifact(self, run_id: str, local_path: str, artifact_path: str | None) -> None:
        self.client.log_artifact(run_id, local_path, artifact_path)

    def _log_artifacts(self, run_id: str, local_dir: str, artifact_path: str | None) -> None:
        self.client.log_artifacts(run_id, local_dir, artifact_path)

    # lineage: the client calls of :class:`Tracker` (log_inputs, create_logged_model + log_outputs +
    # log_model_artifacts + finalize_logged_model, create_model_version, log_image), with the context tags cached
    def _create_logged_model(self, experiment_id: str, run_id: str, params: dict[str, str], name: str) -> Any:
        return self.client.create_logged_model(
            experiment_id, name=name, source_run_id=run_id, tags=dict(self._context_tags()), params=params
        )


def _stamped(runs: Iterable[tuple[str, dict[str, str], dict[str, float]]]) -> Iterator[tuple[Any, ...]]:
    """``(name, tags, metrics, start_time)``: start times taken as the runs come, kept strictly increasing."""
    last = 0
    for name, tags, metrics in runs:
        last = max(int(time.time() * 1000), last + 1)
        yield name, tags, metrics, last


def open_worker_tracker(reopen_args: ReopenArgs, experiment_id: str = "") -> LowTracker:
    """Warm-up of a worker: its tracker on the store (:func:`xaitk_exp.tracking.worker_tracker`)."""
    return cast(LowTracker, worker_tracker(reopen_args))  # reopen_args name the low level (LowTracker.log_runs)


def write_runs(reopen_args: ReopenArgs, experiment_id: str, batch: list[tuple[Any, ...]]) -> list[str]:
    """Worker body of :meth:`LowTracker.log_runs` with processes: the batch written through this process's own
    tracker on the same store."""
    return open_worker_tracker(reopen_args)._write_items(experiment_id, batch)

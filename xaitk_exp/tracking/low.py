"""Low level: ``MlflowClient`` with explicit run ids; one ``log_batch`` per write. No global state.

A run costs ``create_run`` + one ``log_batch`` + ``set_terminated``, the least MLflow's public API allows. Against a
server or a database (not SQLite, whose writes queue behind one lock) the per-image runs of :meth:`log_runs` are
written by a few threads at once, since the server answers requests in parallel.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from xaitk_exp.tracking.base import Tracker

#: threads writing per-image runs to a tracking server or a database; SQLite and file stores get one
PARALLEL_WORKERS = 4
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
        return run.info.run_id

    def log_runs(
        self,
        experiment_id: str,
        runs: Iterable[tuple[str, Mapping[str, Any], Mapping[str, float]]],
        parent_run_id: str | None = None,
    ) -> list[str]:
        """As :meth:`Tracker.log_runs`; with ``workers`` > 1 the runs are written by a thread pool.

        Start times are taken in submission order and kept strictly increasing, so ordering runs by start time
        (MLflow's tie-break in searches) gives the same order as a sequential write.
        """
        if self.workers < 2:
            return super().log_runs(experiment_id, runs, parent_run_id)
        from concurrent.futures import Future, ThreadPoolExecutor

        context = self._context_tags()
        slots = threading.Semaphore(2 * self.workers)  # submit just ahead of the writers: start times stay honest
        failed: list[Future] = []

        def done(f: Future) -> None:
            slots.release()
            if not f.cancelled() and f.exception() is not None:
                failed.append(f)

        futures: list[Future] = []
        last = 0
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="xaitk-exp-runs")
        try:
            for run_name, tags, metrics in runs:
                slots.acquire()
                if failed:
                    slots.release()
                    break
                last = max(int(time.time() * 1000), last + 1)
                all_tags = {**context, **self._run_tags(experiment_id, tags, parent_run_id)}
                f = pool.submit(self._write_run, experiment_id, run_name, all_tags, metrics, last)
                f.add_done_callback(done)
                futures.append(f)
            return [f.result() for f in futures]  # the first failure, in order, is raised
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # Ctrl-C: runs not yet begun are never created

    def _write_run(
        self, experiment_id: str, run_name: str, tags: dict[str, str], metrics: Mapping[str, float], start_time: int
    ) -> str:
        """One run in a worker thread: FINISHED, or FAILED with the error recorded (as :meth:`Tracker.run`)."""
        run_id = self.client.create_run(experiment_id, start_time=start_time, tags=tags, run_name=run_name).info.run_id
        try:
            self.log(run_id, metrics=metrics)
        except BaseException as exc:
            self._close(run_id, "FAILED", exc)
            raise
        self.client.set_terminated(run_id, "FINISHED", end_time=max(int(time.time() * 1000), start_time))
        return run_id

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

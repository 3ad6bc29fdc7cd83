"""Low level: ``MlflowClient`` with explicit run ids; one ``log_batch`` per write. No global state."""

from __future__ import annotations

import time

from xaitk_exp.tracking.base import Tracker


class LowTracker(Tracker):
    level = "low"

    def _start_run(self, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
        from mlflow.tracking.context.registry import resolve_tags

        run = self.client.create_run(experiment_id, run_name=run_name, tags=resolve_tags(tags))
        return run.info.run_id

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

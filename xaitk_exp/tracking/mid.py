"""Mid level: the fluent mlflow.* API (``mlflow.start_run``, ``log_params``, ...), which keeps a per-thread stack of
active runs.

Every run opened here is closed here (``end_run`` in :meth:`Tracker.run`), so nothing leaks between jobs that
share a worker process.
"""

from __future__ import annotations

from typing import Any, Literal

from xaitk_exp.schema import PARENT_RUN_ID
from xaitk_exp.tracking.lineage import DatasetRecord
from xaitk_exp.tracking.stores import use_tracking_uri
from xaitk_exp.tracking.tracker import Tracker


class MidTracker(Tracker):
    level = "mid"

    def __init__(self, uri: str, artifact_root: str | None = None, sqlite_journal: str = "wal") -> None:
        super().__init__(uri, artifact_root, sqlite_journal)
        import mlflow

        use_tracking_uri(uri)
        self._mlflow = mlflow
        self._model_runs: set[str] = set()  # runs a model was logged into (see _log_metrics)

    def thread_bound(self) -> bool:
        return self._mlflow.active_run() is not None  # MLflow's active-run stack is per thread

    def _start_run(self, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
        # the parent, if any, is passed as the tag itself so the record matches the other levels
        nested = self._mlflow.active_run() is not None
        active = self._mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags, nested=nested)
        if nested and PARENT_RUN_ID not in tags:  # fluent start_run nests under the active run; this one is top-level
            self.client.delete_tag(active.info.run_id, PARENT_RUN_ID)  # (an image run while its summary is open)
        return str(active.info.run_id)

    def _resume_run(self, run_id: str) -> None:
        self._mlflow.start_run(run_id=run_id, nested=self._mlflow.active_run() is not None)

    def _end_run(self, run_id: str, status: str) -> None:
        active = self._mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            self._mlflow.end_run(status=status)
        else:  # not on this thread's stack (should not happen): close it by id
            self.client.set_terminated(run_id, status=status)

    def _log(self, run_id: str, params: dict[str, str], metrics: dict[str, float], tags: dict[str, str], step: int) -> None:
        if params:
            self._mlflow.log_params(params, run_id=run_id)
        if metrics:
            self._log_metrics(run_id, metrics, step)
        if tags:
            self._set_tags(run_id, tags)

    def _log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        # ``log_metrics(run_id=...)`` first reads the run back from the store (to link the metrics to models the run
        # logged); for the active run the fluent API uses the run object it holds, no read. Same record, unless a
        # model was logged into the run since it started: then the read is needed.
        active = self._mlflow.active_run()
        if active is not None and active.info.run_id == run_id and run_id not in self._model_runs:
            self._mlflow.log_metrics(metrics, step=step)
        else:
            self._mlflow.log_metrics(metrics, step=step, run_id=run_id)

    def _set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        active = self._mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            self._mlflow.set_tags(tags)
        else:
            for k, v in tags.items():
                self.client.set_tag(run_id, k, v)

    def _log_history(self, run_id: str, key: str, values: list[float], first_step: int) -> None:
        for i, v in enumerate(values):
            self._mlflow.log_metric(key, v, step=first_step + i, run_id=run_id)

    def _log_artifact(self, run_id: str, local_path: str, artifact_path: str | None) -> None:
        self._mlflow.log_artifact(local_path, artifact_path, run_id=run_id)

    def _log_artifacts(self, run_id: str, local_dir: str, artifact_path: str | None) -> None:
        self._mlflow.log_artifacts(local_dir, artifact_path, run_id=run_id)

    # ----- lineage: fluent functions where MLflow has them, the client where it has none (log_outputs, model files)
    def _is_active(self, run_id: str) -> bool:
        active = self._mlflow.active_run()
        return active is not None and active.info.run_id == run_id

    def _log_dataset(self, run_id: str, dataset: DatasetRecord, context: str) -> None:
        if self._is_active(run_id):
            self._mlflow.log_input(dataset.to_mlflow(), context=context)
        else:
            super()._log_dataset(run_id, dataset, context)

    def _log_model_metrics(
        self, run_id: str, model_id: str, metrics: dict[str, float], dataset: DatasetRecord | None, step: int
    ) -> None:
        # the fluent call adds the model to the run's inputs itself (and the dataset, were it not logged yet)
        self._mlflow.log_metrics(
            metrics, step=step, run_id=run_id, model_id=model_id,
            dataset=dataset.to_mlflow() if dataset is not None else None, synchronous=True,
        )

    def _create_logged_model(self, experiment_id: str, run_id: str, params: dict[str, str], name: str) -> Any:
        self._model_runs.add(run_id)  # metrics logged to it later must read the run back (see _log_metrics)
        return self._mlflow.initialize_logged_model(
            name=name, source_run_id=run_id, params=params, experiment_id=experiment_id
        )

    def _finalize_logged_model(self, model_id: str, status: Literal["READY", "FAILED"]) -> None:
        self._mlflow.finalize_logged_model(model_id, status)

    def _log_image(self, run_id: str, image: Any, key: str, step: int) -> None:
        if self._is_active(run_id):
            self._mlflow.log_image(image, key=key, step=step, synchronous=True)
        else:
            super()._log_image(run_id, image, key, step)

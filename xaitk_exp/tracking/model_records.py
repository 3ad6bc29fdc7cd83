"""What a tracker records about models and data beyond runs: the trained model (its artifact folder and MLflow 3
logged model), dataset inputs, metrics linked to a model, the registry, and images. Part of
:class:`~xaitk_exp.tracking.tracker.Tracker`: the public methods shape and check, each level implements the ``_``
methods it writes differently."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from xaitk_exp.schema import MODEL_DIR, logged_model_name
from xaitk_exp.tracking.limits import MAX_METRICS
from xaitk_exp.tracking.lineage import (
    DatasetRecord,
    ModelRef,
    _quote,
    link_step_metrics,
    logged_model_folder,
    logged_model_of_run,
    model_id_of_version,
    resolve_model_uri,
)
from xaitk_exp.tracking.model_io import save_sklearn_model


class ModelRecords:
    """The model and lineage half of the tracker interface (``client``, ``uri`` and the writes come from it)."""

    client: Any
    uri: str

    def _log_artifacts(self, run_id: str, local_dir: str, artifact_path: str | None) -> None:
        raise NotImplementedError  # each level's (Tracker declares it abstract)

    def log_model(self, run_id: str, model: Any, input_example: Any) -> str:
        """The estimator as an MLflow sklearn model (skops format) in the run's ``sklearn-model/`` folder, and the
        same model as an MLflow 3 logged model produced by the run (the UI's Logged models column, the model's
        page). Returns the logged model's id."""
        with tempfile.TemporaryDirectory() as tmp:
            path = save_sklearn_model(model, Path(tmp, MODEL_DIR), input_example)
            return self._log_model(run_id, model, input_example, str(path))

    def log_model_folder(self, run_id: str, saved_dir: str, artifact_path: str, name: str) -> str:
        """A saved MLflow model folder of any flavour (``mlflow.onnx``, ``mlflow.pytorch``) in the run's
        ``artifact_path/`` folder and as the run's MLflow 3 logged model ``name``, with the same client calls at
        every level. Returns the logged model's id."""
        self._log_artifacts(run_id, saved_dir, artifact_path)
        return self._log_logged_model(run_id, saved_dir, name)

    def _log_model(self, run_id: str, model: Any, input_example: Any, saved_dir: str) -> str:
        self._log_artifacts(run_id, saved_dir, MODEL_DIR)
        return self._log_logged_model(run_id, saved_dir, logged_model_name(type(model).__name__))

    def _log_logged_model(self, run_id: str, saved_dir: str, name: str) -> str:
        """What ``mlflow.sklearn.log_model`` records besides files, through the client: a logged model ``name``
        with the run's params, as the run's output at step 0; the run's step-0 metrics linked to it; the files;
        READY (FAILED if a write fails)."""
        from mlflow.entities import LoggedModelOutput

        run = self.client.get_run(run_id)
        logged = self._create_logged_model(run.info.experiment_id, run_id, dict(run.data.params), name)
        try:
            self.client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
            link_step_metrics(self.client, run_id, logged.model_id)
            with tempfile.TemporaryDirectory() as tmp:
                folder = logged_model_folder(saved_dir, Path(tmp, MODEL_DIR), logged, run_id)
                self.client.log_model_artifacts(logged.model_id, str(folder))
        except BaseException:
            self._finalize_logged_model(logged.model_id, "FAILED")
            raise
        self._finalize_logged_model(logged.model_id, "READY")
        return str(logged.model_id)

    def _create_logged_model(self, experiment_id: str, run_id: str, params: dict[str, str], name: str) -> Any:
        from mlflow.tracking.context.registry import resolve_tags

        return self.client.create_logged_model(
            experiment_id, name=name, source_run_id=run_id, tags=resolve_tags({}), params=params
        )

    def _finalize_logged_model(self, model_id: str, status: Literal["READY", "FAILED"]) -> None:
        self.client.finalize_logged_model(model_id, status)

    # ----- lineage: dataset inputs, models as inputs, the registry, images -----------------------------------------
    def log_dataset(self, run_id: str, dataset: DatasetRecord, context: str) -> None:
        """The data the run used as an MLflow dataset input (name, digest, source; ``context`` as its context tag):
        the UI's Dataset column and ``dataset.name`` / ``dataset.digest`` / ``dataset.context`` filters."""
        self._log_dataset(run_id, dataset, context)

    def _log_dataset(self, run_id: str, dataset: DatasetRecord, context: str) -> None:
        self.client.log_inputs(run_id, datasets=[dataset.to_input(context)])

    def log_model_metrics(
        self,
        run_id: str,
        model_id: str,
        metrics: Mapping[str, float],
        dataset: DatasetRecord | None = None,
        step: int = 0,
    ) -> None:
        """Metrics of ``run_id`` that evaluate logged model ``model_id`` (on ``dataset``, already logged with
        :meth:`log_dataset`): the model becomes an input of the run, and the model's page lists the metrics."""
        self._log_model_metrics(run_id, model_id, {k: float(v) for k, v in metrics.items()}, dataset, step)

    def _log_model_metrics(
        self, run_id: str, model_id: str, metrics: dict[str, float], dataset: DatasetRecord | None, step: int
    ) -> None:
        from mlflow.entities import LoggedModelInput, Metric

        self.client.log_inputs(run_id, models=[LoggedModelInput(model_id)])
        now = int(time.time() * 1000)
        name, digest = (dataset.name, dataset.digest) if dataset is not None else (None, None)
        batch = [Metric(k, v, now, step, model_id=model_id, dataset_name=name, dataset_digest=digest, run_id=run_id)
                 for k, v in metrics.items()]
        for start in range(0, len(batch), MAX_METRICS):
            self.client.log_batch(run_id, metrics=batch[start : start + MAX_METRICS], synchronous=True)

    def register_model(self, model_id: str, run_id: str, name: str, alias: str | None = None) -> ModelRef:
        """Logged model ``model_id`` as a version of registered model ``name`` (created if missing); a version
        already made from this logged model is reused. ``alias`` then points at the version."""
        versions = self.client.search_model_versions(f"name = '{_quote(name)}'", max_results=1000)
        version = next((v for v in versions if model_id_of_version(v) == model_id), None)
        if version is None:
            version = self._register_model(model_id, run_id, name)
        if alias:
            self.client.set_registered_model_alias(name, alias, str(version.version))
        return ModelRef(name, str(version.version), run_id, model_id)

    def _register_model(self, model_id: str, run_id: str, name: str) -> Any:
        """The same client calls at every level. The version's source is the logged model's storage location (what
        ``models:/<model_id>`` resolves to): MLflow 3.17's registry resolves a ``models:/<model_id>`` source through
        the process-wide tracking URI, which the low level never sets."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        source = self.client.get_logged_model(model_id).artifact_location
        return self.client.create_model_version(name, source, run_id=run_id, model_id=model_id)

    def log_image(self, run_id: str, picture: str | Path, key: str, step: int = 0) -> None:
        """A picture file as an MLflow image under ``key`` (``images/<key>+step+...png`` and a thumbnail): the UI's
        image views show it and compare one key across runs."""
        from PIL import Image

        with Image.open(picture) as image:
            image.load()
            self._log_image(run_id, image, key, step)

    def _log_image(self, run_id: str, image: Any, key: str, step: int) -> None:
        self.client.log_image(run_id, image, key=key, step=step, synchronous=True)

    # ----- lineage reads -----------------------------------------------------------------------------------------
    def model_ref(self, uri: str, key: str = "model.uri") -> ModelRef | None:
        """The registered version (or logged model) a ``models:/`` URI names; None for ``runs:/`` URIs. An unknown
        name, version or alias is a one-line :class:`ConfigError` listing what exists."""
        return resolve_model_uri(self.client, uri, key)

    def logged_model_of(self, run_id: str) -> str | None:
        """The id of the logged model train run ``run_id`` produced (None for runs recorded before there was one)."""
        try:
            run = self.client.get_run(run_id)
        except Exception:
            return None
        return logged_model_of_run(self.client, run.info.experiment_id, run_id)


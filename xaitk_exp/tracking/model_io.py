"""Saving and loading scikit-learn models in MLflow's format (skops), behind the type trust of
:mod:`xaitk_exp.security.trust`."""

from __future__ import annotations

import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

from xaitk_exp.errors import ConfigError, TrackingError
from xaitk_exp.lazy import import_skops
from xaitk_exp.security.trust import check_model_types, trusted_types
from xaitk_exp.tracking.stores import use_tracking_uri


def pip_requirements() -> list[str]:
    """Pinned requirements written beside the model (skips MLflow's slow requirement inference)."""
    return [f"{pkg}=={version(pkg)}" for pkg in ("mlflow", "scikit-learn", "skops", "numpy")]


def save_sklearn_model(model: Any, path: Path, input_example: Any) -> Path:
    """An MLflow sklearn model folder (MLmodel, env files, ``model.skops``) with a signature from the example."""
    import mlflow.sklearn

    import_skops()  # before MLflow imports skops itself: skops.io would pull PyTorch in wherever it is installed
    mlflow.sklearn.save_model(
        model,
        str(path),
        serialization_format="skops",
        input_example=input_example,
        skops_trusted_types=trusted_types(model),
        pip_requirements=pip_requirements(),
    )
    return path


def load_model(uri: str, tracking_uri: str, allow_pickle: bool = False) -> Any:
    """Load ``runs:/<id>/sklearn-model`` or ``models:/<name>/<version>`` after checking its trusted types."""
    import mlflow
    from mlflow.exceptions import MlflowException


    import_skops()
    use_tracking_uri(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp, tracking_uri=tracking_uri)
        except (MlflowException, OSError) as exc:
            raise ConfigError(
                "model.uri", uri, "an existing 'runs:/<run_id>/sklearn-model' or 'models:/<name>/<version>'"
            ) from exc
        mlmodel = Path(local, "MLmodel")
        if not mlmodel.is_file():
            raise ConfigError("model.uri", uri, "a folder holding an MLflow model (no MLmodel file found)")
        check_model_types(mlmodel.read_text(), uri, allow_pickle)
        try:
            model = mlflow.sklearn.load_model(local)
        except Exception as exc:
            raise TrackingError(f"model.uri={uri!r} could not be loaded: {type(exc).__name__}: {exc}") from exc
    if not hasattr(model, "predict_proba"):
        raise ConfigError("model.uri", uri, "a classifier with predict_proba")
    return model

"""Estimators: build from config, save in MLflow's skops format, load only what the allow-list trusts."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from xaitk_exp.errors import ConfigError, TrackingError, UnsafeConfigError

#: module prefixes whose types a stored skops model may list as trusted
TRUSTED_TYPE_PREFIXES = ("sklearn.", "numpy.", "builtins.", "scipy.")


def trusted_types(model: Any) -> list[str]:
    """The types skops does not trust by default that this model holds (for example the MLP's ``SGDOptimizer``).

    Only scikit-learn's own types are listed; anything else is refused with :class:`UnsafeConfigError`.
    """
    import skops.io as sio

    untrusted = sio.get_untrusted_types(data=sio.dumps(model))
    bad = [t for t in untrusted if not t.startswith(TRUSTED_TYPE_PREFIXES)]
    if bad:
        raise UnsafeConfigError(
            f"model: types {bad} cannot be stored safely in the skops format; only scikit-learn types are trusted"
        )
    return sorted(untrusted)


def pip_requirements() -> list[str]:
    """Pinned requirements written beside the model (skips MLflow's slow requirement inference)."""
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("mlflow", "scikit-learn", "skops", "numpy")]


def save_sklearn_model(model: Any, path: Path, input_example: Any) -> Path:
    """An MLflow sklearn model folder (MLmodel, env files, ``model.skops``) with a signature from the example."""
    import mlflow.sklearn

    mlflow.sklearn.save_model(
        model,
        str(path),
        serialization_format="skops",
        input_example=input_example,
        skops_trusted_types=trusted_types(model),
        pip_requirements=pip_requirements(),
    )
    return path


def check_model_types(mlmodel_text: str, uri: str, allow_pickle: bool = False) -> None:
    """Refuse a stored model whose MLmodel lists types outside :data:`TRUSTED_TYPE_PREFIXES`, or is pickled."""
    import yaml

    meta = yaml.safe_load(mlmodel_text) or {}
    flavor = (meta.get("flavors") or {}).get("sklearn")
    if flavor is None:
        raise ConfigError("model.uri", uri, "an MLflow scikit-learn model (its MLmodel has no sklearn flavour)")
    fmt = flavor.get("serialization_format")
    if fmt != "skops" and not allow_pickle:
        raise UnsafeConfigError(
            f"model.uri={uri!r} is stored as {fmt!r}, which runs code when loaded; only 'skops' is loaded "
            "unless model.allow_pickle=true"
        )
    bad = [t for t in flavor.get("skops_trusted_types") or [] if not str(t).startswith(TRUSTED_TYPE_PREFIXES)]
    if bad:
        raise UnsafeConfigError(
            f"model.uri={uri!r} asks to trust types {bad}; only scikit-learn types are trusted"
        )


def load_model(uri: str, tracking_uri: str, allow_pickle: bool = False) -> Any:
    """Load ``runs:/<id>/sklearn-model`` or ``models:/<name>/<version>`` after checking its trusted types."""
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri)
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


def check_classifier(model: Any, key: str = "model._target_") -> None:
    if not hasattr(model, "predict_proba"):
        raise ConfigError(key, f"{type(model).__module__}.{type(model).__name__}", "an estimator with predict_proba")

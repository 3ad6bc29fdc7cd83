"""Estimators: build from config, save in MLflow's skops format, load only what the allow-list trusts."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from xaitk_exp.errors import ConfigError, TrackingError, UnsafeConfigError

#: a stored skops model may ask to trust only classes defined in these packages (scikit-learn's own classes:
#: ``builtins.``/``numpy.`` prefixes would let a crafted MLmodel trust ``builtins.eval`` and run code)
TRUSTED_TYPE_PREFIXES = ("sklearn.",)


def is_trusted_type(name: str) -> bool:
    """True when ``name`` (``module.Class``) is a class scikit-learn itself defines."""
    import importlib
    import inspect

    if not isinstance(name, str) or not name.startswith(TRUSTED_TYPE_PREFIXES):
        return False
    module, _, attr = name.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError):
        return False
    return inspect.isclass(obj) and str(getattr(obj, "__module__", "")).startswith(TRUSTED_TYPE_PREFIXES)


def trusted_types(model: Any) -> list[str]:
    """The types skops does not trust by default that this model holds (for example the MLP's ``SGDOptimizer``).

    Only scikit-learn's own types are listed; anything else is refused with :class:`UnsafeConfigError`.
    """
    from xaitk_exp.models.lazy import import_skops

    sio = import_skops()  # not `import skops.io`: that pulls PyTorch in wherever it is installed
    untrusted = sio.get_untrusted_types(data=sio.dumps(model))
    bad = [t for t in untrusted if not is_trusted_type(t)]
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

    from xaitk_exp.models.lazy import import_skops

    import_skops()
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
    bad = [t for t in flavor.get("skops_trusted_types") or [] if not is_trusted_type(t)]
    if bad:
        raise UnsafeConfigError(
            f"model.uri={uri!r} asks to trust types {bad}; only scikit-learn's own classes are trusted"
        )
    if flavor.get("code") and not allow_pickle:  # MLflow would put the model's code folder first on sys.path
        raise UnsafeConfigError(
            f"model.uri={uri!r} ships code ({flavor['code']!r}) that loading would import; refused unless "
            "model.allow_pickle=true"
        )
    model_file = str(flavor.get("pickled_model") or "")
    if not model_file or Path(model_file).name != model_file or model_file in (".", ".."):
        raise UnsafeConfigError(f"model.uri={uri!r} names model file {model_file!r}; a file inside the model folder")


def load_model(uri: str, tracking_uri: str, allow_pickle: bool = False) -> Any:
    """Load ``runs:/<id>/sklearn-model`` or ``models:/<name>/<version>`` after checking its trusted types."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from xaitk_exp.models.lazy import import_skops
    from xaitk_exp.tracking import use_tracking_uri

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


def check_classifier(model: Any, key: str = "model._target_") -> None:
    if not hasattr(model, "predict_proba"):
        raise ConfigError(key, f"{type(model).__module__}.{type(model).__name__}", "an estimator with predict_proba")


def check_params(model: Any, key: str = "model") -> None:
    """scikit-learn's own constructor-argument check, run before any run is opened (``fit`` would run it inside
    the run). Raises :class:`ConfigError` naming ``model.<param>``, the value and what scikit-learn accepts."""
    import re

    validate = getattr(model, "_validate_params", None)
    if validate is None or not hasattr(model, "_parameter_constraints"):  # not a scikit-learn estimator
        return
    try:
        validate()
    except (ValueError, TypeError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        found = re.match(r"The '(\w+)' parameter of (\w+) must be (.*)\. Got .* instead\.?$", text)
        if not found:
            raise ConfigError(key, type(model).__name__, f"arguments scikit-learn accepts ({text})") from exc
        param, cls, allowed = found.groups()
        raise ConfigError(f"{key}.{param}", model.get_params(deep=False).get(param), f"{allowed} ({cls})") from exc

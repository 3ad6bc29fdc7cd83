"""Estimators: build from config, save in MLflow's skops format, load only what the allow-list trusts."""

from __future__ import annotations

from typing import Any

from xaitk_exp.errors import ConfigError


def check_classifier(model: Any, key: str = "model._target_") -> None:
    if not hasattr(model, "predict_proba"):
        raise ConfigError(key, f"{type(model).__module__}.{type(model).__name__}", "an estimator with predict_proba")


def check_params(model: Any, key: str = "model") -> None:
    """scikit-learn's own constructor-argument check, run before any run is opened (``fit`` would run it inside
    the run). Raises :class:`ConfigError` naming ``model.<param>``, the value and what scikit-learn accepts."""
    import re

    # private, with a reason: scikit-learn has no public way to check constructor arguments without fitting
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

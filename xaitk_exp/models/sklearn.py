"""Estimators: build from config, save in MLflow's skops format, load only what the allow-list trusts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from xaitk_exp.errors import ConfigError
from xaitk_exp.models.registry import ModelSource


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
    _check_layer_sizes(model, key)


def _check_layer_sizes(model: Any, key: str) -> None:
    """``hidden_layer_sizes`` (the MLPs): scikit-learn's constraint accepts any array-like and only ``fit`` (inside
    the run) finds a size of 0, a negative or a non-integer one."""
    sizes = model.get_params(deep=False).get("hidden_layer_sizes")
    if sizes is None or isinstance(sizes, (str, bytes)):
        return
    values = list(sizes) if isinstance(sizes, (list, tuple)) or hasattr(sizes, "__array__") else [sizes]
    import numbers

    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and int(v) >= 1 for v in values):
        raise ConfigError(f"{key}.hidden_layer_sizes", sizes, "a list of positive integers, one per hidden layer "
                                                              f"({type(model).__name__})")


#: copies of an MLP's weights alive while it trains: the weights, their gradients, the optimizer's state (two for
#: adam) and the temporaries of one update
MLP_WEIGHT_COPIES = 6


def check_fit_memory(model: Any, n_features: int, n_classes: int, key: str = "model") -> None:
    """Refuse, before the train run opens, an MLP whose weights would not fit in the memory available now: a large
    ``dataset.shape`` makes the first layer ``H*W*C x hidden`` (the OS's OOM killer would end the job without a
    word)."""
    sizes = model.get_params(deep=False).get("hidden_layer_sizes") if hasattr(model, "get_params") else None
    if sizes is None:
        return
    layers = [int(n_features), *(list(sizes) if isinstance(sizes, (list, tuple)) else [sizes]), max(1, n_classes)]
    weights = sum(a * b + b for a, b in zip(layers, layers[1:]))
    need = MLP_WEIGHT_COPIES * weights * 8
    if need < 2**28:
        return
    import psutil

    from xaitk_exp.data.bounds import gigabytes

    available = psutil.virtual_memory().available
    if need > available:
        raise ConfigError(
            f"{key}.hidden_layer_sizes", sizes,
            f"layers whose weights fit in memory: {n_features} input features (dataset.shape) into {layers[1]} units "
            f"need about {gigabytes(need)} while training, {gigabytes(available)} is available (make dataset.shape "
            "or the layers smaller)",
        )


# ----- the source: an estimator the train stage fits here, recorded in MLflow's sklearn flavour (skops) -------------
def build_estimator(node: Mapping[str, Any], extra_allowed: Sequence[str] = ()) -> Any:
    """The unfitted estimator of a ``model`` node (without ``name`` and ``register``), checked before any run opens."""
    from xaitk_exp.security.targets import instantiate
    from xaitk_exp.settings.nodes import estimator_node

    model = instantiate(estimator_node(node), "model", list(extra_allowed))
    check_classifier(model)
    check_params(model)
    return model


def _is_estimator(node: Mapping[str, Any]) -> bool:
    return not node.get("source") and not node.get("uri")


#: the recorder is the train stage's ``tracker.log_model`` (flavour ``sklearn``, skops format): it records a fitted
#: model, so it runs inside the train run rather than on a loaded one
SOURCE = ModelSource(
    name="estimator",
    load=build_estimator,
    framework="scikit-learn",
    matches=_is_estimator,
    trained_here=True,
    image_model=False,
)

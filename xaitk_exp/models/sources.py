"""Image classifiers that are not scikit-learn estimators: ONNX Runtime files, PyTorch models and MAITE models.

The config group ``model`` picks a source with ``model.source`` (the sources registered in
:mod:`xaitk_exp.models.registry`: ``onnx``, ``torch``, ``maite``; the scikit-learn configs have no ``source``).
Every such source becomes an :class:`ImageModel`: class indices in ``classes_``, names in
``class_names``, and :meth:`ImageModel.predict_proba` mapping images in ``[0, 1]`` to probabilities. The black box
xaitk-saliency queries is :class:`xaitk_exp.models.blackbox.ImageModelBlackbox` around it.

Heavy libraries (onnxruntime, torch, maite) are imported by the source that needs them, when it loads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xaitk_exp.errors import ConfigError
from xaitk_exp.models import registry
from xaitk_exp.models.image_model import ImageModel

#: at most this many classes get a ``Class_<c>_conf`` metric and a map by default
MANY_CLASSES = 20
TOP_K_MANY = 5


def is_image_model(node: Any) -> bool:
    """True when the ``model`` config node (or a built model) is of a source loaded as an :class:`ImageModel`."""
    if isinstance(node, ImageModel):
        return True
    if getattr(node, "get", None) is None or not node.get("source"):
        return False
    try:
        return registry.source_for(node).image_model
    except ConfigError:  # an unknown model.source: building the model says so in one line
        return False


def build_image_model(node: Mapping[str, Any], extra_allowed: Sequence[str] = ()) -> ImageModel:
    """The :class:`ImageModel` of a ``model`` config node whose source is an image-model source (loaded, not yet
    probed: :meth:`ImageModel.check_images` learns the output size)."""
    source = registry.source_for(node)
    if not source.image_model or source.load is None:
        raise ConfigError("model.source", node.get("source"), f"one of {', '.join(registry.names(True))}")
    model: ImageModel = source.load(node, extra_allowed)
    return model


def display_name(node: Mapping[str, Any]) -> str:
    """The experiment name prefix of a ``model`` node with a source, without loading the model."""
    if node.get("name"):
        return str(node["name"])
    path = node.get("path")
    if path and path != "???":
        return Path(str(path)).stem
    return str(node.get("_target_") or node.get("source")).rsplit(".", 1)[-1]


# ----- many classes: which get a metric, which get a map ---------------------------------------------------------
def top_k_setting(value: Any, key: str = "maps.top_k") -> int | None:
    """``maps.top_k``: ``auto`` -> None (decided per model), ``0`` -> every class, ``k`` -> k classes."""
    if value is None or value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(key, value, "auto, 0 (every class) or a positive number of classes")
    return int(value)


def classes_kept(n_classes: int, top_k: int | None) -> int:
    """How many classes keep a map (or a ``Class_<c>_conf`` metric): all up to :data:`MANY_CLASSES`, else
    :data:`TOP_K_MANY`, unless ``top_k`` says otherwise (0: all)."""
    if top_k is None:
        return n_classes if n_classes <= MANY_CLASSES else TOP_K_MANY
    return n_classes if top_k == 0 else min(top_k, n_classes)


def top_classes(probs: np.ndarray, k: int) -> list[int]:
    """The ``k`` class indices of ``[Cl]`` probabilities by decreasing value (ties: the lower index first); every
    index in natural order when ``k`` covers them all."""
    probs = np.asarray(probs)
    if k >= len(probs):
        return list(range(len(probs)))
    order = np.lexsort((np.arange(len(probs)), -probs))
    return [int(i) for i in order[:k]]

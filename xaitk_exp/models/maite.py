"""``model=maite``: any object following MAITE's image-classification ``Model`` protocol, built by the factory in
``model._target_`` (arguments in ``model.args``). It is called on a sequence of ``(C, H, W)`` arrays and returns one
``(Cl,)`` score vector per image; class names come from ``metadata["index2label"]``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from xaitk_exp.errors import ConfigError
from xaitk_exp.models.image_model import ImageModel
from xaitk_exp.models.registry import ModelSource


class MaiteModel(ImageModel):
    """The black box hands the model its inputs as float32 ``(C, H, W)`` arrays (after ``model.preprocess``)."""

    source = "maite"

    def __init__(self, node: Mapping[str, Any], extra_allowed: Sequence[str] = ()) -> None:
        if not node.get("_target_") or node.get("_target_") == "???":
            raise ConfigError(
                "model._target_", node.get("_target_"), "a factory that returns a MAITE image-classification model"
            )
        super().__init__(node, extra_allowed)
        if self.preprocess.layout != "NCHW":
            raise ConfigError(
                "model.preprocess.layout", self.preprocess.layout, "NCHW: MAITE models take (C, H, W) arrays"
            )
        meta = getattr(self._runtime, "metadata", None) or {}
        self.sha256 = _digest(str(self.node["_target_"]), self.node.get("args"), meta.get("id"))

    def _load_runtime(self) -> Any:
        from xaitk_exp.security.targets import instantiate

        target = str(self.node["_target_"])
        model = instantiate({"_target_": target, **dict(self.node.get("args") or {})}, "model", self.extra_allowed)
        if not callable(model):
            raise ConfigError(
                "model._target_", target, "a factory returning a callable MAITE model (model(batch) -> scores)"
            )
        return model

    def model_names(self) -> list[str] | None:
        meta = getattr(self._runtime, "metadata", None) or {}
        index2label = meta.get("index2label") if isinstance(meta, Mapping) else None
        if not index2label:
            return None
        return [str(index2label[k]) for k in sorted(index2label)]

    def _scores(self, runtime: Any, batch: np.ndarray) -> np.ndarray:
        out = runtime([batch[i] for i in range(len(batch))])
        return np.stack([_to_numpy(row) for row in out]) if len(out) else np.empty((0, self.n_outputs or 0))


def _to_numpy(value: Any) -> np.ndarray:
    """A score vector from whatever array type the model returns (numpy, torch on any device, ...)."""
    for step in ("detach", "cpu"):
        if hasattr(value, step) and callable(getattr(value, step)):
            value = getattr(value, step)()
    return np.asarray(value).reshape(-1)


def _digest(target: str, args: Any, model_id: Any) -> str:
    import hashlib
    import json

    blob = json.dumps([target, args, model_id], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


#: no recorder: any Python object, so the train run records ``model_info.json`` and the config's factory (``none``);
#: the digest covers the factory, its arguments and the model's metadata id, known once it is built
SOURCE = ModelSource(name="maite", load=MaiteModel, framework="maite", extra="maite")

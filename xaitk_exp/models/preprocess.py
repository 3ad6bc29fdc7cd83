"""What a network expects of its input, applied inside the black box after the saliency perturbation.

xaitk-saliency perturbs images as a person sees them (floats in ``[0, 1]``, ``[H, W]`` or ``[H, W, C]``): masks and
fill values act there. Only then are the images normalised per channel and laid out for the network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from xaitk_exp.errors import ConfigError

LAYOUTS = ("NCHW", "NHWC")


@dataclass(frozen=True)
class Preprocess:
    """Per-channel ``(x - mean) / std`` and the axis order, in float32.

    ``mean`` / ``std``: one value per channel (or one for all), None for 0 and 1; ``layout``: ``NCHW`` (PyTorch,
    most ONNX exports, MAITE) or ``NHWC`` (TensorFlow exports).
    """

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    layout: str = "NCHW"

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | None, key: str = "model.preprocess") -> Preprocess:
        """Checked values of the ``model.preprocess`` node; raises :class:`ConfigError` naming the key."""
        node = dict(node or {})
        unknown = sorted(set(node) - {"mean", "std", "layout"})
        if unknown:
            raise ConfigError(f"{key}.{unknown[0]}", node[unknown[0]], "one of the keys mean, std, layout")
        layout = str(node.get("layout") or "NCHW").upper()
        if layout not in LAYOUTS:
            raise ConfigError(f"{key}.layout", node.get("layout"), f"one of {', '.join(LAYOUTS)}")
        mean = _per_channel(node.get("mean"), f"{key}.mean", positive=False)
        std = _per_channel(node.get("std"), f"{key}.std", positive=True)
        return cls(mean, std, layout)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """``[N, H, W]`` or ``[N, H, W, C]`` images in ``[0, 1]`` -> float32 ``[N, C, H, W]`` (NCHW) or
        ``[N, H, W, C]`` (NHWC), normalised per channel. Grayscale images get one channel axis."""
        x: np.ndarray = np.asarray(images, dtype=np.float32)
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4:
            raise ValueError(f"expected [N, H, W] or [N, H, W, C] images, got shape {list(x.shape)}")
        if self.mean is not None:
            x = x - np.asarray(self.mean, dtype=np.float32)
        if self.std is not None:
            x = x / np.asarray(self.std, dtype=np.float32)
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x)

    def config(self) -> dict[str, Any]:
        return {"mean": list(self.mean) if self.mean else None, "std": list(self.std) if self.std else None,
                "layout": self.layout}


def _per_channel(value: Any, key: str, positive: bool) -> tuple[float, ...] | None:
    if value is None:
        return None
    vals: Sequence[Any] = value if isinstance(value, (list, tuple)) else [value]
    ok = bool(vals) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)
    if ok and positive:
        ok = all(v > 0 for v in vals)
    if not ok:
        what = "positive numbers" if positive else "numbers"
        raise ConfigError(key, value, f"null, a number or a list of {what}, one per channel")
    return tuple(float(v) for v in vals)

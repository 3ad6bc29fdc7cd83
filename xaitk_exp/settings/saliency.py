"""The ``saliency`` node: our keys (name, fill, sign) and checks of the constructor arguments xaitk-saliency accepts
silently but cannot use. Sizes are checked against the data once per job (:meth:`SaliencySettings.check_fits`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from xaitk_exp.errors import ConfigError
from xaitk_exp.settings.nodes import to_dict

#: keys of the ``saliency`` node that are ours, not the generator's: its name, the occlusion value, and the sign
#: that turns the generator's maps into this project's convention (positive = evidence for the class)
SALIENCY_RESERVED = ("name", "fill", "sign")


def saliency_sign(node: Any) -> int:
    """The ``sign`` of a ``saliency`` node: 1 (the default: the generator's maps already have positive = evidence
    for the class) or -1 (its maps mean the opposite and are negated). Raises :class:`ConfigError` otherwise."""
    sign = to_dict(node).get("sign", 1)
    if isinstance(sign, bool) or sign not in (1, -1):
        raise ConfigError("saliency.sign", sign, "1 or -1 (-1 negates the generator's maps)")
    return int(sign)


#: the value that lets a size follow the image (:func:`resolve_auto`)
AUTO = "auto"
#: a colour image's occlusion value under ``fill: auto``: each image's own mean colour
MEAN_FILL = "image mean colour"
#: a window's side is this fraction of the image's side (per axis), its stride a third of the window
WINDOW_FRACTION = 6
STRIDE_FRACTION = 3
RISE_GRID_MAX = 7  # RISE's s x s grid: half the short side, at least 2 and at most 7 cells (RISE's 224x224 choice)


def auto_sizes(image_hw: tuple[int, int]) -> dict[str, Any]:
    """The sizes ``auto`` stands for on ``[H, W]`` images: a window of about 1/6 of each side, a stride of a third
    of the window (per axis, so a non-square image gets a non-square window), at most about 16 x 16 positions at any
    size (225 at 224x224); RISE's grid count ``s`` from the short side. 8x8 digits get what the configs said before
    ``auto``: window [2, 2], stride [1, 1], radius [1.5, 1.5], RISE s 4."""
    h, w = (int(v) for v in image_hw[:2])
    window = [max(1, math.ceil(h / WINDOW_FRACTION)), max(1, math.ceil(w / WINDOW_FRACTION))]
    return {
        "window_size": window,
        "stride": [max(1, math.ceil(v / STRIDE_FRACTION)) for v in window],
        "radius": [0.75 * v for v in window],
        "cell": window,
        "s": min(RISE_GRID_MAX, max(2, min(h, w) // 2)),
    }


def resolve_auto(node: Any, image_shape: tuple[int, ...]) -> Any:
    """A plain ``saliency`` node with every ``auto`` replaced by its value for ``image_shape`` (``[H, W]`` or
    ``[H, W, C]``); other values are kept (a stride ``auto`` follows a given window). ``fill: auto``: 0 (black) on
    grayscale images, each image's mean colour on colour images (:data:`MEAN_FILL`); ``fill_colors: auto``: black
    and white in the image's channels. Nested nodes (an occlusion's perturber) are resolved too."""
    if not isinstance(node, Mapping):
        return node
    sizes = auto_sizes((int(image_shape[0]), int(image_shape[1])))
    channels = int(image_shape[2]) if len(image_shape) > 2 else 1
    target = str(node.get("_target_", ""))
    out = {k: resolve_auto(v, image_shape) if isinstance(v, Mapping) else v for k, v in node.items()}
    if out.get("window_size") == AUTO:
        out["window_size"] = list(sizes["window_size"])
    if out.get("stride") == AUTO:
        base = out.get("window_size") if isinstance(out.get("window_size"), (list, tuple)) else None
        if "radius" in out and isinstance(out["radius"], (list, tuple)):
            base = [max(1, math.ceil(r / 0.75)) for r in out["radius"]]
        out["stride"] = [max(1, math.ceil(v / STRIDE_FRACTION)) for v in base] if base else list(sizes["stride"])
    if out.get("radius") == AUTO:
        out["radius"] = list(sizes["radius"])
    if out.get("s") == AUTO:  # RandomGrid's s is a cell size in pixels; RISE's (and MC-RISE's) a grid count
        out["s"] = list(sizes["cell"]) if target.endswith(("RandomGrid", "RandomGridStack")) else sizes["s"]
    if out.get("fill") == AUTO:
        out["fill"] = 0 if channels == 1 else MEAN_FILL
    if out.get("fill_colors") == AUTO:
        out["fill_colors"] = [[0] * channels, [1] * channels]
    return out


def auto_keys(node: Any, prefix: str = "") -> list[str]:
    """The keys of a ``saliency`` node (dotted, nested ones too) set to ``auto``."""
    if not isinstance(node, Mapping):
        return []
    keys = []
    for k, v in node.items():
        if isinstance(v, Mapping):
            keys += auto_keys(v, f"{prefix}{k}.")
        elif v == AUTO:
            keys.append(f"{prefix}{k}")
    return keys


def _positive_pair(key: str, value: Any, image_hw: tuple[int, int] | None, bound: bool) -> None:
    vals = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(vals) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in vals) or min(vals) < 1:
        raise ConfigError(key, value, "two positive integers [height, width]")
    if bound and image_hw is not None and (vals[0] > image_hw[0] or vals[1] > image_hw[1]):
        raise ConfigError(key, value, f"at most the image size {list(image_hw)}")


def validate_saliency(node: Any, image_hw: tuple[int, int] | None = None, key: str = "saliency") -> None:
    """Check the constructor arguments of a ``saliency`` node (without our keys); sizes also against ``image_hw``."""
    node = to_dict(node)
    if not isinstance(node, Mapping):
        return
    for k, v in node.items():
        path = f"{key}.{k}"
        if v == AUTO and k in ("window_size", "stride", "s", "radius", "fill_colors"):
            continue  # follows the image: resolve_auto, checked against it by check_fits
        if k == "window_size":
            _positive_pair(path, v, image_hw, bound=True)
        elif k == "stride":
            _positive_pair(path, v, image_hw, bound=False)
        elif k == "s":
            if isinstance(v, (list, tuple)):
                _positive_pair(path, v, image_hw, bound=True)
            elif not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(path, v, "a positive integer grid size")
            elif image_hw is not None and v > min(image_hw):
                raise ConfigError(path, v, f"at most the image size {min(image_hw)}")
        elif k in ("n", "k"):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(path, v, "a positive integer")
        elif k == "p1":
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 <= float(v) <= 1.0:
                raise ConfigError(path, v, "a probability in [0, 1]")
        elif k == "radius":
            vals = v if isinstance(v, (list, tuple)) else [v]
            if not vals or any(not isinstance(x, (int, float)) or isinstance(x, bool) or x <= 0 for x in vals):
                raise ConfigError(path, v, "a positive number or [radius_y, radius_x] of positive numbers")
        elif k == "threads":
            if v is not None and (not isinstance(v, int) or v < 0):
                raise ConfigError(path, v, "a non-negative integer or null")
        elif k == "fill_colors":
            if not isinstance(v, list) or not v:
                raise ConfigError(path, v, "a non-empty list of colours, e.g. [[0], [1]]")
        elif isinstance(v, Mapping):
            validate_saliency(v, image_hw, path)


@dataclass(frozen=True)
class SaliencySettings:
    """A checked ``saliency`` node. ``arguments`` is what the generator's constructor gets (with ``_target_``)."""

    name: str  # the algorithm's name: the config option, tagged Saliency_algorithm
    sign: int = 1  # 1, or -1 for a generator whose maps mean the opposite (MC-RISE)
    fill: Any = None  # the occlusion value set on the generator after construction (None: its own)
    arguments: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_node(cls, node: Any) -> SaliencySettings:
        node = to_dict(node)
        if not isinstance(node, Mapping) or "_target_" not in node or "name" not in node:
            name = node.get("name") if isinstance(node, Mapping) else node
            raise ConfigError("saliency", name, "a saliency config with _target_ and name")
        arguments = {k: v for k, v in node.items() if k not in SALIENCY_RESERVED}
        validate_saliency(arguments)
        return cls(name=str(node["name"]), sign=saliency_sign(node), fill=node.get("fill"), arguments=arguments)

    def check_fits(self, image_hw: Sequence[int]) -> None:
        """Refuse a window or grid larger than the images (``image_hw``: their height and width)."""
        hw = (int(image_hw[0]), int(image_hw[1]))
        validate_saliency(resolve_auto(self.arguments, hw), hw)

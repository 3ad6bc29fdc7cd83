"""The ``saliency`` node: our keys (name, fill, sign) and checks of the constructor arguments xaitk-saliency accepts
silently but cannot use. Sizes are checked against the data once per job (:meth:`SaliencySettings.check_fits`)."""

from __future__ import annotations

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
        validate_saliency(self.arguments, (int(image_hw[0]), int(image_hw[1])))

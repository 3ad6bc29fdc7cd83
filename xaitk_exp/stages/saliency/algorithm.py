"""Build xaitk-saliency algorithms from config and compute maps with them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from xaitk_exp.security.targets import instantiate
from xaitk_exp.settings.nodes import to_dict
from xaitk_exp.settings.saliency import MEAN_FILL, SALIENCY_RESERVED, auto_keys, resolve_auto, saliency_sign
from xaitk_exp.stages.saliency.rise import chunked_for


class Algorithm:
    """A configured saliency generator plus the settings its ``get_config()`` leaves out (``fill``, the name, the
    sign).

    Every map this class returns means one thing: positive values are evidence FOR the class (the region raises
    its confidence), negative values evidence against. xaitk-saliency's occlusion, RISE and sliding-window scorers
    already follow that convention; MC-RISE's scorer does the opposite (positive where filling a region with a
    colour raises the confidence), so its config says ``sign: -1`` and its maps are negated here, where they are
    made. A config without ``sign`` (every run recorded before the key existed) keeps the generator's own sign.

    ``needs_channels``: MC-RISE wants ``[H, W, C]`` input even for grayscale; maps come back
    ``[k_colors, n_classes, H, W]`` for it and ``[n_classes, H, W]`` otherwise.

    RISE and MC-RISE (``RISEStack``, ``PerturbationOcclusion(RISEGrid, RISEScoring)``, ``MCRISEStack``) are computed
    a chunk of masks at a time (:mod:`.rise`, the black box's ``chunk_size`` masks), with the same maps bit for bit
    and memory bounded by the chunk; the generator itself is kept untouched for ``get_config()``.
    """

    def __init__(self, cfg: Any, image_shape: tuple[int, ...], extra_allowed: Iterable[str] = ()) -> None:
        node = to_dict(cfg)
        self.auto = auto_keys(node)  # the settings that follow the image (recorded as the param auto_settings)
        node = resolve_auto(node, tuple(image_shape))
        self.name: str = node["name"]
        self.fill = node.get("fill")
        self.sign = saliency_sign(node)
        self._sign_given = "sign" in node  # recorded as a param only when configured: old runs reproduce as they were
        ctor = {k: v for k, v in node.items() if k not in SALIENCY_RESERVED}  # checked once per job (ctx.settings)
        self.target: str = ctor["_target_"]
        self.generator = instantiate(ctor, "saliency", extra_allowed)
        if self.fill is not None and self.fill != MEAN_FILL and hasattr(self.generator, "fill"):
            self.generator.fill = self.fill
        self.needs_channels = type(self.generator).__name__ == "MCRISEStack"
        self._chunked = chunked_for(self.generator)

    def config(self) -> dict[str, Any]:
        """What ran: the generator's ``get_config()``, its class, and ``fill`` (which ``get_config`` omits)."""
        params = dict(self.generator.get_config())
        params["fill"] = self.fill
        if self._sign_given:
            params["sign"] = self.sign
        params["algorithm"] = self.name
        params["class"] = self.target
        if self.auto:
            params["auto_settings"] = ",".join(self.auto)
        return params

    def prepare(self, image: np.ndarray) -> np.ndarray:
        return image[..., None] if self.needs_channels and image.ndim == 2 else image

    def compute(self, image: np.ndarray, blackbox: Any) -> np.ndarray:
        """Maps for every class of ``blackbox``: ``[n_classes, H, W]`` (MC-RISE: ``[k, n_classes, H, W]``), in
        ``[-1, 1]``, positive = evidence for the class (see the class docstring)."""
        image = self.prepare(image)
        if self.fill == MEAN_FILL and hasattr(self.generator, "fill"):  # fill: auto on a colour image
            channels = image.shape[2] if image.ndim == 3 else 1
            self.generator.fill = np.asarray(image, dtype=float).reshape(-1, channels).mean(axis=0)
        if self._chunked is not None:
            from xaitk_exp.stages.saliency.rise import DEFAULT_CHUNK

            maps = self._chunked(image, blackbox, int(getattr(blackbox, "chunk_size", DEFAULT_CHUNK)))
        else:
            maps = np.asarray(self.generator(image, blackbox))
        return -maps if self.sign == -1 else maps


def class_maps(maps: np.ndarray) -> np.ndarray:
    """``[n_classes, H, W]`` maps for display and metrics; MC-RISE's per-colour maps are averaged."""
    return maps.mean(axis=0) if maps.ndim == 4 else maps

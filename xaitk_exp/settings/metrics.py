"""The ``metrics:`` config block as a small frozen record that checks itself."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from xaitk_exp.errors import ConfigError
from xaitk_exp.settings.nodes import to_dict

AUTO_STEPS = 100  # step=auto: about this many deletion/insertion steps per curve
SUBSTRATES = ("auto", "zeros", "mean", "blur")  # what deleted pixels become (besides a number)


@dataclass(frozen=True)
class MetricSettings:
    """What ``metrics:`` asks for (``mufidelity``'s two keys sit flat here). Raises :class:`ConfigError` for a bad
    value, naming its key in the config."""

    enabled: bool = True  # false: no metrics, no curves picture, no summary in the evaluation run
    step: int | None = None  # pixels switched per deletion/insertion step; None (auto): ceil(H*W / 100)
    substrate: str | float = "auto"  # auto (zeros if grayscale, else the mean colour) | zeros | mean | blur | a number
    blur_sigma: float = 2.0  # Gaussian sigma in pixels, for substrate=blur (> 0)
    subsets: int = 128  # mufidelity.subsets: random pixel subsets (>= 3: a rank correlation needs 3 points)
    fraction: float = 0.25  # mufidelity.fraction: share of the pixels in each subset, in (0, 1)
    complexity: bool = True  # also log Complexity (entropy of |S| / sum|S|)
    sanity: bool = False  # also log the xcorr sanity checks (another class's map, a permuted-label model's map)
    seed: int = 0  # seeds tie-breaks, random orders, subsets, the other class and the label permutation (>= 0)

    def __post_init__(self) -> None:
        for key in ("enabled", "complexity", "sanity"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"metrics.{key}", getattr(self, key), "true or false")
        step: Any = self.step  # a config may say auto
        if step == "auto" or step is None:
            object.__setattr__(self, "step", None)
        elif not _is_int(step) or step < 1:
            raise ConfigError("metrics.step", step, "a positive integer (pixels per step) or auto")
        if not (self.substrate in SUBSTRATES or _is_num(self.substrate)):
            raise ConfigError("metrics.substrate", self.substrate, f"one of {', '.join(SUBSTRATES)} or a number")
        if not isinstance(self.substrate, str):
            object.__setattr__(self, "substrate", float(self.substrate))
        if not _is_num(self.blur_sigma) or self.blur_sigma <= 0:
            raise ConfigError("metrics.blur_sigma", self.blur_sigma, "a positive number of pixels")
        if not _is_int(self.subsets) or self.subsets < 3:
            raise ConfigError("metrics.mufidelity.subsets", self.subsets,
                              "an integer >= 3 (a rank correlation needs 3 points)")
        if not _is_num(self.fraction) or not 0 < self.fraction < 1:
            raise ConfigError("metrics.mufidelity.fraction", self.fraction, "a fraction strictly between 0 and 1")
        if not _is_int(self.seed) or self.seed < 0:
            raise ConfigError("metrics.seed", self.seed, "a non-negative integer")
        object.__setattr__(self, "blur_sigma", float(self.blur_sigma))
        object.__setattr__(self, "fraction", float(self.fraction))

    def step_for(self, n_pixels: int) -> int:
        return self.step if self.step is not None else max(1, math.ceil(n_pixels / AUTO_STEPS))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


_FIELDS = ("enabled", "step", "substrate", "blur_sigma", "complexity", "sanity", "seed")


def settings_from_config(node: Any) -> MetricSettings:
    """The record of a ``metrics:`` node (DictConfig or dict; None = disabled: configs saved before metrics
    existed). Missing keys take their defaults; raises :class:`ConfigError` naming the key, the value and what is
    allowed."""
    node = to_dict(node)
    if node is None:
        return MetricSettings(enabled=False)
    if not isinstance(node, dict):
        raise ConfigError("metrics", node, "a mapping with keys enabled, step, substrate, mufidelity, sanity, seed")
    mu = node.get("mufidelity") or {}
    if not isinstance(mu, dict):
        raise ConfigError("metrics.mufidelity", mu, "a mapping with keys subsets and fraction")
    given = {k: node[k] for k in _FIELDS if k in node}
    given.update({k: mu[k] for k in ("subsets", "fraction") if k in mu})
    return MetricSettings(**given)

"""The ``metrics:`` config block, validated into a small frozen record."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from xaitk_exp.errors import ConfigError
from xaitk_exp.metrics.faithfulness import SUBSTRATES

AUTO_STEPS = 100  # step=auto: about this many deletion/insertion steps per curve


@dataclass(frozen=True)
class MetricSettings:
    """What ``metrics:`` asks for. ``step=None`` means auto: ``ceil(H*W / 100)`` pixels per step."""

    enabled: bool = True
    step: int | None = None
    substrate: str | float = "auto"
    blur_sigma: float = 2.0
    subsets: int = 128
    fraction: float = 0.25
    complexity: bool = True
    sanity: bool = False
    seed: int = 0

    def step_for(self, n_pixels: int) -> int:
        return self.step if self.step is not None else max(1, math.ceil(n_pixels / AUTO_STEPS))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _flag(node: Any, key: str, default: bool) -> bool:
    v = node.get(key, default)
    if not isinstance(v, bool):
        raise ConfigError(f"metrics.{key}", v, "true or false")
    return v


def settings_from_config(node: Any) -> MetricSettings:
    """Validate a ``metrics:`` node (DictConfig or dict; None = disabled). Raises :class:`ConfigError` naming the
    key, the value and what is allowed."""
    from xaitk_exp.settings.nodes import to_dict

    node = to_dict(node)
    if node is None:
        return MetricSettings(enabled=False)
    if not isinstance(node, dict):
        raise ConfigError("metrics", node, "a mapping with keys enabled, step, substrate, mufidelity, sanity, seed")
    enabled = _flag(node, "enabled", True)
    step = node.get("step", "auto")
    if step == "auto" or step is None:
        step = None
    elif not _is_int(step) or step < 1:
        raise ConfigError("metrics.step", step, "a positive integer (pixels per step) or auto")
    substrate = node.get("substrate", "auto")
    if not (substrate in SUBSTRATES or _is_num(substrate)):
        raise ConfigError("metrics.substrate", substrate, f"one of {', '.join(SUBSTRATES)} or a number")
    sigma = node.get("blur_sigma", 2.0)
    if not _is_num(sigma) or sigma <= 0:
        raise ConfigError("metrics.blur_sigma", sigma, "a positive number of pixels")
    mu = node.get("mufidelity") or {}
    if not isinstance(mu, dict):
        raise ConfigError("metrics.mufidelity", mu, "a mapping with keys subsets and fraction")
    subsets = mu.get("subsets", 128)
    if not _is_int(subsets) or subsets < 3:
        raise ConfigError("metrics.mufidelity.subsets", subsets, "an integer >= 3 (a rank correlation needs 3 points)")
    fraction = mu.get("fraction", 0.25)
    if not _is_num(fraction) or not 0 < fraction < 1:
        raise ConfigError("metrics.mufidelity.fraction", fraction, "a fraction strictly between 0 and 1")
    seed = node.get("seed", 0)
    if not _is_int(seed) or seed < 0:
        raise ConfigError("metrics.seed", seed, "a non-negative integer")
    return MetricSettings(
        enabled=enabled,
        step=step,
        substrate=substrate if isinstance(substrate, str) else float(substrate),
        blur_sigma=float(sigma),
        subsets=subsets,
        fraction=float(fraction),
        complexity=_flag(node, "complexity", True),
        sanity=_flag(node, "sanity", False),
        seed=seed,
    )

"""Config helpers: tracking URI resolution, validation, hashing, and safe instantiation from ``_target_``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from xaitk_exp.errors import ConfigError
from xaitk_exp.schema import LEVELS, SQLITE_JOURNALS, STAGES
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
    if len(vals) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
        raise ConfigError(key, value, "two positive integers [height, width]")
    if min(vals) < 1:
        raise ConfigError(key, value, "two positive integers [height, width]")
    if bound and image_hw is not None and (vals[0] > image_hw[0] or vals[1] > image_hw[1]):
        raise ConfigError(key, value, f"at most the image size {list(image_hw)}")


def validate_saliency(node: Any, image_hw: tuple[int, int] | None = None, key: str = "saliency") -> None:
    """Check the constructor arguments xaitk-saliency accepts silently but cannot use."""
    node = to_dict(node)
    if not isinstance(node, Mapping):
        return
    for k, v in node.items():
        path = f"{key}.{k}"
        if k in ("window_size",):
            _positive_pair(path, v, image_hw, bound=True)
        elif k in ("stride",):
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
        elif k in ("radius",):
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


_INT_KEYS = {
    "evaluation.num_images": 1,
    "query.max_results": 1,
    "n_jobs": None,
    "chunk_size": 1,
    "seed": 0,
}


def validate(cfg: DictConfig) -> None:
    """Validate the top-level settings that do not depend on data. Raises :class:`ConfigError`."""
    if cfg.stage not in STAGES:
        raise ConfigError("stage", cfg.stage, f"one of {', '.join(STAGES)}")
    for key, minimum in _INT_KEYS.items():
        value = OmegaConf.select(cfg, key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(key, value, "an integer")
        if minimum is not None and value < minimum:
            raise ConfigError(key, value, f"an integer >= {minimum}")
    if cfg.n_jobs == 0:
        raise ConfigError("n_jobs", 0, "a positive integer, or -1 for every core")
    for key in ("force", "progress"):
        if not isinstance(cfg.get(key), bool):
            raise ConfigError(key, cfg.get(key), "true or false")
    if cfg.evaluation.split not in ("train", "test"):
        raise ConfigError("evaluation.split", cfg.evaluation.split, "one of train, test")
    journal = cfg.tracking.get("sqlite_journal", "wal")
    if journal not in SQLITE_JOURNALS:
        raise ConfigError("tracking.sqlite_journal", journal, " or ".join(SQLITE_JOURNALS))
    q = cfg.query
    if q.min_conf is not None and (
        not isinstance(q.min_conf, (int, float)) or isinstance(q.min_conf, bool) or not 0 <= q.min_conf <= 1
    ):
        raise ConfigError("query.min_conf", q.min_conf, "a confidence in [0, 1]")
    if q.order_by is not None and not re.fullmatch(r"[\w.`' ]+?( (ASC|DESC))?", str(q.order_by), re.IGNORECASE):
        raise ConfigError("query.order_by", q.order_by, "'<metrics|params|tags|attributes>.<name> [ASC|DESC]'")
    if cfg.logging.level not in LEVELS:
        raise ConfigError("logging.level", cfg.logging.level, f"one of {', '.join(LEVELS)}")
    saliency = to_dict(cfg.saliency)
    if "_target_" not in saliency or "name" not in saliency:
        raise ConfigError("saliency", saliency.get("name"), "a saliency config with _target_ and name")
    validate_saliency({k: v for k, v in saliency.items() if k not in SALIENCY_RESERVED})
    saliency_sign(saliency)
    from xaitk_exp.settings.metrics import settings_from_config
    from xaitk_exp.tracking.lineage import parse_register

    settings_from_config(cfg.get("metrics"))
    from xaitk_exp.models.sources import top_k_setting

    top_k_setting(OmegaConf.select(cfg, "maps.top_k", default="auto"))
    parse_register(OmegaConf.select(cfg, "model.register", default=None))

"""Config nodes as plain data, and the stable hashes that decide reuse."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf


def to_dict(node: Any) -> Any:
    """A resolved plain-Python copy of a config node (or the value itself)."""
    if isinstance(node, DictConfig) or OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def config_hash(*parts: Any) -> str:
    """A stable 16-hex-digit hash of config nodes (resolved, keys sorted)."""
    blob = json.dumps([to_dict(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


#: keys of a model config that set up the job, not the estimator (never passed to its constructor)
MODEL_SETTINGS = ("name", "register")


def estimator_node(model: Any) -> dict[str, Any]:
    """A model config as the estimator's constructor takes it: without :data:`MODEL_SETTINGS`."""
    return {k: v for k, v in to_dict(model).items() if k not in MODEL_SETTINGS}

"""The one place a config is checked: :func:`validate` turns it into a typed :class:`Settings`, once per run."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from omegaconf import DictConfig, OmegaConf

from xaitk_exp import schema
from xaitk_exp.errors import ConfigError
from xaitk_exp.settings.config import Settings, from_node, resolved_num_images
from xaitk_exp.settings.metrics import settings_from_config
from xaitk_exp.settings.nodes import to_dict
from xaitk_exp.settings.saliency import SaliencySettings

#: what :func:`validate` reads besides the records it builds itself
_PLAIN = ("stage", "task", "seed", "force", "n_jobs", "chunk_size", "progress", "allow_targets", "train_run_id",
          "evaluation_run_id", "update_run_id", "run_id", "sweep_run_id", schema.REPRODUCED_FROM, "shard", "shards",
          "evaluation", "query", "maps", "sweep", "tracking")

#: MLflow's rules for registered model aliases (letters, digits, ``_`` and ``-``; ``latest`` and ``v<N>`` reserved)
_ALIAS = re.compile(r"[\w-]{1,255}")
_VERSION_ALIAS = re.compile(r"[vV]\d+")


def validate(cfg: DictConfig | Mapping[str, Any]) -> Settings:
    """The typed settings of a composed (or saved) config; raises the first :class:`ConfigError` in it.

    Only the settings are checked: the dataset and model nodes are their constructors' to check. A config without
    ``metrics`` (saved before metrics existed) has them off; other missing keys take the defaults of
    ``conf/config.yaml``.
    """
    node = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))
    values = {k: to_dict(node[k]) for k in _PLAIN if k in node}
    if isinstance(values.get("evaluation"), Mapping) and "num_images" in values["evaluation"]:
        evaluation = values["evaluation"]  # auto: 20 for a model trained here, every image for one made elsewhere
        evaluation["num_images"] = resolved_num_images(evaluation["num_images"], node.get("model"))
    values["logging"] = {"level": OmegaConf.select(node, "logging.level", default="mid")}
    settings = from_node(Settings, values, "")  # the plain keys first, then the nodes with records of their own
    check_model_name(node)
    return replace(
        settings,
        saliency=SaliencySettings.from_node(node["saliency"]) if "saliency" in node else None,
        metrics=settings_from_config(node.get("metrics")),
        register=parse_register(OmegaConf.select(node, "model.register", default=None)),
    )


def check_model_name(node: DictConfig) -> None:
    """``model.name`` (or, for a model file, the file's stem that stands in for it) is a name MLflow accepts for the
    logged model and the experiments: checked here, before any run opens, not by MLflow halfway through training."""
    name = OmegaConf.select(node, "model.name", default=None, throw_on_missing=False)
    if name is not None:
        if not isinstance(name, str) or not schema.model_name_ok(name):
            raise ConfigError("model.name", name, schema.model_name_rule())
        return
    path = OmegaConf.select(node, "model.path", default=None, throw_on_missing=False)
    if OmegaConf.select(node, "model.source", default=None) and isinstance(path, str) and path != "???":
        from pathlib import Path

        stem = Path(path).stem
        if not schema.model_name_ok(stem):
            raise ConfigError("model.name", None, schema.model_name_rule(),
                              f"the default, model.path's file name {stem!r}, is not one: set model.name")


def parse_register(value: Any, key: str = "model.register") -> tuple[str, str | None] | None:
    """``model.register``: ``<name>`` or ``<name>@<alias>`` -> (name, alias); None when unset. One-line errors."""
    if value is None or value == "":
        return None
    allowed = "null, '<name>' or '<name>@<alias>' (name without '/' or ':'; alias of letters, digits, _ and -)"
    if not isinstance(value, str):
        raise ConfigError(key, value, allowed)
    name, _, alias = value.partition("@")
    if not name.strip() or any(c in name for c in "/:") or name != name.strip():
        raise ConfigError(key, value, allowed)
    if "@" in value:
        if not _ALIAS.fullmatch(alias):
            raise ConfigError(key, value, allowed)
        if alias.lower() == "latest" or _VERSION_ALIAS.fullmatch(alias):
            raise ConfigError(key, value, "an alias other than 'latest' and 'v<number>', which MLflow reserves")
        return name, alias
    return name, None

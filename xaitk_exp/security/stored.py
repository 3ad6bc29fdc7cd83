"""Configs that someone else could have written (a run's stored config, a saved ``.hydra`` folder) are data.

OmegaConf resolves ``${...}`` on access: ``${oc.env:MLFLOW_TRACKING_PASSWORD}`` reads this process's environment,
``${oc.decode:...}`` parses text, a custom resolver runs code. A stored config is written resolved
(:func:`xaitk_exp.stages.provenance.config_texts`), so any ``${`` left in it was put there by hand: refused, never
resolved. A ``.hydra`` folder keeps Hydra's unresolved config, whose ``${seed}``-style references to other keys are
the shipped config's own; only resolvers (``${name:...}``) are refused there.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from xaitk_exp.errors import UnsafeConfigError

#: a reference to another key of the same config (``${seed}``, ``${.x}``, ``${..a.b}``, ``${a[0]}``): no resolver
_NODE_REFERENCE = re.compile(r"\$\{\s*\.*[A-Za-z_][\w\-]*(?:\.[A-Za-z_][\w\-]*|\[\d+\])*\s*\}")


def _strings(node: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """``(dotted key, text)`` of every string, key or value, in a plain container (never resolved)."""
    if isinstance(node, Mapping):
        for k, v in node.items():
            path = f"{key}.{k}" if key else str(k)
            yield path, str(k)
            yield from _strings(v, path)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _strings(v, f"{key}[{i}]")
    elif isinstance(node, str):
        yield key, node


def plain(node: Any) -> Any:
    """A config node as plain containers, interpolations left unresolved (``OmegaConf.to_container(resolve=False)``)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=False) if OmegaConf.is_config(node) else node


def refuse_interpolations(node: Any, source: str) -> None:
    """Refuse a stored config holding any ``${`` (an interpolation or a resolver), naming the first key."""
    for key, text in _strings(plain(node)):
        if "${" in text:
            raise UnsafeConfigError(
                f"{source}: {key}={_short(text)!r} holds an interpolation; a stored config is data, so its "
                "interpolations and resolvers are refused, not resolved"
            )


def refuse_resolvers(node: Any, source: str) -> None:
    """Refuse resolvers (``${oc.env:...}``, ``${oc.decode:...}``, custom ones, nested ones) in a config read from a
    folder; references to the config's own keys (``${seed}``) stay."""
    for key, text in _strings(plain(node)):
        if "${" in _NODE_REFERENCE.sub("", text):
            raise UnsafeConfigError(
                f"{source}: {key}={_short(text)!r} calls a resolver; a config read from a folder is data, so "
                "resolvers (${{name:...}}) are refused, not run (references such as ${{seed}} stay)"
            )


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_folder_config(cfg: Any) -> None:
    """For a job whose config Hydra read from a folder (``--config-path``/``--config-dir``, a rerun from a saved
    ``.hydra`` folder): refuse resolvers in it before anything reads the config. The shipped config (a package
    source) and configs composed outside Hydra's command line are not checked here."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return
        folders = [s.path for s in HydraConfig.get().runtime.config_sources if s.schema == "file"]
    except Exception:
        return
    if folders:
        refuse_resolvers(cfg, f"the config read from {folders[0]}")

"""Datasets as a registry: one :class:`DatasetKind` per loader, registered in the loader's own module by a top-level
``DATASET = DatasetKind(...)``.

A kind says what the rest of the package asks about a dataset besides loading it (the loader is the ``_target_``
class of ``conf/dataset/<name>.yaml``, built behind the allow-list):

- ``name``: the config option (``dataset=<name>``);
- ``loader``: the loader class; a ``dataset`` node selects the kind whose class its ``_target_`` names (by its
  module path or by the ``xaitk_exp.data`` re-export);
- ``lineage``: ``node -> (source type, source)``, where the data comes from, for the dataset inputs MLflow shows
  (None: the node's ``path`` folder if it has one, else the loader's class);
- ``extra``: the pip extra that installs what it needs (None: core dependencies).

Adding a dataset is its module (the loader and its ``DATASET``), its ``conf/dataset/<name>.yaml`` and its tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xaitk_exp.lazy import registered_in

Lineage = Callable[[Mapping[str, Any]], tuple[str, str]]


@dataclass(frozen=True)
class DatasetKind:
    """One dataset loader; see the module's docstring for each field."""

    name: str
    loader: type
    lineage: Lineage | None = None
    extra: str | None = None

    def targets(self) -> tuple[str, ...]:
        """The ``_target_`` paths that name the loader."""
        return (f"{self.loader.__module__}.{self.loader.__name__}", f"xaitk_exp.data.{self.loader.__name__}")

    def source(self, node: Mapping[str, Any]) -> tuple[str, str]:
        """(source type, source) of a node of this kind."""
        if self.lineage is not None:
            return self.lineage(node)
        return folder_source(node) or ("code", str(node.get("_target_") or self.targets()[0]))


def folder_source(node: Mapping[str, Any]) -> tuple[str, str] | None:
    """``("local", <folder URI>)`` for a node with a ``path``, else None."""
    if node.get("path"):
        return "local", Path(str(node.get("path"))).expanduser().resolve().as_uri()
    return None


_REGISTERED: dict[str, DatasetKind] = {}
_DISCOVERED = False


def register(kind: DatasetKind) -> DatasetKind:
    """Add ``kind`` (a later one with the same name replaces it); returns it."""
    _REGISTERED[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    _REGISTERED.pop(name, None)


def kinds() -> list[DatasetKind]:
    """Every registered dataset kind, by name."""
    global _DISCOVERED
    if not _DISCOVERED:
        _DISCOVERED = True
        for _, kind in registered_in(__package__ or "xaitk_exp.data", "DATASET"):
            if isinstance(kind, DatasetKind) and kind.name not in _REGISTERED:
                _REGISTERED[kind.name] = kind
    return [_REGISTERED[n] for n in sorted(_REGISTERED)]


def kind_for(node: Mapping[str, Any]) -> DatasetKind | None:
    """The kind whose loader a ``dataset`` node's ``_target_`` names; None for a loader no module registered."""
    target = str(node.get("_target_", ""))
    return next((k for k in kinds() if target in k.targets()), None)


def dataset_source(node: Mapping[str, Any]) -> tuple[str, str]:
    """(source type, source) of a ``dataset`` node, for MLflow's dataset inputs: its kind's, else its folder, else
    the loader's class."""
    kind = kind_for(node)
    if kind is not None:
        return kind.source(node)
    return folder_source(node) or ("code", str(node.get("_target_", "")) or "unknown")

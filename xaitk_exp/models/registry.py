"""Model sources as a registry: one :class:`ModelSource` per way a model reaches the stages.

A source registers itself in ONE module of ``xaitk_exp/models/`` by a top-level ``SOURCE = ModelSource(...)``; that
record says everything the rest of the package asks about the source:

- ``name``: the ``model.source`` value that selects it (scikit-learn's configs carry no ``source``: their sources
  select themselves with ``matches``);
- ``load``: the loader, ``(model node, allow_targets) -> model`` (None: a model already in the tracking store,
  which the stages load through the tracker);
- the recorder: ``record`` saves a loaded model as an MLflow model folder and returns its format (tag
  ``Model_format``), ``flavour`` is the MLflow flavour it writes and ``load_recorded`` reads that folder back;
  ``formats`` are the formats whose runs load back from the store. No recorder: the train run records the model's
  file or factory (``file`` / ``none``);
- ``digest``: the SHA-256 of what a node names, without loading it (None: learnt by loading);
- ``framework``: the distribution whose version tags the experiments (tags ``framework`` and ``version``);
- ``extra``: the pip extra that installs it (``pip install 'xaitk-exp[<extra>]'``; None: a core dependency);
- ``trained_here``: the train stage fits it (scikit-learn estimators) rather than recording a model made elsewhere;
- ``image_model``: it loads as an :class:`~xaitk_exp.models.image_model.ImageModel` (recorded by hash, evaluated on
  every image) rather than as a scikit-learn estimator.

The modules are found by reading ``xaitk_exp/models/*.py`` for that assignment and imported on the first lookup, so
that adding a source is its module, its ``conf/model/<name>.yaml`` and its tests. :func:`register` adds one at run
time (a plugin, a test).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xaitk_exp.errors import ConfigError
from xaitk_exp.lazy import registered_in

Node = Mapping[str, Any]
#: ``(loaded model, folder, image shape) -> format``: writes an MLflow model folder (created)
Recorder = Callable[[Any, Path, Sequence[int]], str]
#: ``(folder, the flavour's MLmodel entry, the node's shared settings, allow_targets) -> model``
RecordedLoader = Callable[[Path, Mapping[str, Any], dict[str, Any], Sequence[str]], Any]

#: formats (tag ``Model_format``) every source may record: its file, or nothing (a factory)
FILE = "file"
NONE = "none"


def _no_digest(node: Node) -> str | None:
    return None


@dataclass(frozen=True)
class ModelSource:
    """One model source; see the module's docstring for each field."""

    name: str
    load: Callable[[Node, Sequence[str]], Any] | None
    framework: str
    extra: str | None = None
    digest: Callable[[Node], str | None] = _no_digest
    record: Recorder | None = None
    flavour: str | None = None
    load_recorded: RecordedLoader | None = None
    formats: tuple[str, ...] = ()
    matches: Callable[[Node], bool] | None = None
    trained_here: bool = False
    image_model: bool = True

    def selects(self, node: Node) -> bool:
        """True when the ``model`` node picks this source."""
        if self.matches is not None:
            return self.matches(node)
        return node.get("source") == self.name

    def framework_version(self) -> tuple[str, str]:
        """``(framework, installed version)``, ``unknown`` when it is not installed."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            return self.framework, version(self.framework)
        except PackageNotFoundError:
            return self.framework, "unknown"


_REGISTERED: dict[str, ModelSource] = {}
_DISCOVERED = False


def register(source: ModelSource) -> ModelSource:
    """Add ``source`` (a later one with the same name replaces it); returns it."""
    _REGISTERED[source.name] = source
    return source


def unregister(name: str) -> None:
    """Remove the source ``name`` (a test's own source, once the test is done)."""
    _REGISTERED.pop(name, None)


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    for _, source in registered_in(__package__ or "xaitk_exp.models", "SOURCE"):
        if isinstance(source, ModelSource) and source.name not in _REGISTERED:
            _REGISTERED[source.name] = source


def sources() -> list[ModelSource]:
    """Every registered source, by name."""
    _discover()
    return [_REGISTERED[n] for n in sorted(_REGISTERED)]


def names(image_models_only: bool = False) -> list[str]:
    """The ``model.source`` values (with ``image_models_only``: of the sources loaded as image models)."""
    return [s.name for s in sources() if s.image_model or not image_models_only]


def source_for(node: Any) -> ModelSource:
    """The source a ``model`` node selects; one-line :class:`ConfigError` on an unknown ``model.source``."""
    get = getattr(node, "get", None)
    if get is None:
        raise ConfigError("model", node, "a model config (model=<name>)")
    found = [s for s in sources() if s.matches is None and s.selects(node)]  # an explicit source wins
    found = found or [s for s in sources() if s.matches is not None and s.selects(node)]
    if not found:
        allowed = ", ".join(s.name for s in sources() if s.matches is None)
        raise ConfigError("model.source", get("source"), f"one of {allowed}")
    return found[0]


def source_named(name: str) -> ModelSource | None:
    """The source registered as ``name``, if any."""
    _discover()
    return _REGISTERED.get(name)


def with_flavour(flavours: Mapping[str, Any]) -> ModelSource | None:
    """The image-model source whose recorder wrote one of ``flavours`` (an MLmodel's ``flavors``), if any."""
    return next((s for s in sources() if s.flavour and s.flavour in flavours and s.load_recorded), None)


def stored_formats() -> tuple[str, ...]:
    """Every format a recorder writes that loads back from the store."""
    return tuple(f for s in sources() for f in s.formats)

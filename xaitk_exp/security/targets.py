"""The allow-list of ``_target_`` classes a config (a stored one above all) may build, and building behind it."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterable, Mapping
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate as _instantiate

from xaitk_exp.errors import ConfigError, UnsafeConfigError
from xaitk_exp.settings.config import prefix_parts  # the rule lives with the setting
from xaitk_exp.settings.nodes import to_dict

#: module prefixes a ``_target_`` may name; ``allow_targets`` in the config adds more.
ALLOWED_TARGET_PREFIXES = ("sklearn.", "xaitk_saliency.", "xaitk_exp.")
#: the same, as dotted components: these prefixes admit classes only
_BUILT_IN = tuple(tuple(p.rstrip(".").split(".")) for p in ALLOWED_TARGET_PREFIXES)


def trusted_prefixes(extra_allowed: Iterable[str] = ()) -> tuple[tuple[str, ...], ...]:
    """The built-in prefixes and ``extra_allowed`` as tuples of dotted components (``"mylab."`` -> ``("mylab",)``).

    A blank prefix, or one with an empty component (``"a..b"``, ``".x"``), would trust everything or nothing
    predictable: refused in one line naming ``allow_targets``.
    """
    out: list[tuple[str, ...]] = []
    for prefix in [*ALLOWED_TARGET_PREFIXES, *extra_allowed]:
        parts = prefix_parts(prefix)
        if parts not in out:
            out.append(parts)
    return tuple(out)


def _under(dotted: str, prefixes: tuple[tuple[str, ...], ...]) -> bool:
    """True when ``dotted`` starts with one of ``prefixes`` component by component (``mylab`` covers ``mylab.x``,
    not ``mylabevil``)."""
    parts = tuple(dotted.split("."))
    return any(parts[: len(p)] == p for p in prefixes)


def check_targets(node: Any, extra_allowed: Iterable[str] = (), key: str = "") -> None:
    """Refuse any ``_target_`` outside the allow-list (scikit-learn, xaitk-saliency, this package, ``extra``).

    A path is checked twice: its text must lie under a trusted prefix (checked before anything is imported), and the
    object it reaches must be *defined* under one (``obj.__module__``), reached without passing through a module
    imported from elsewhere: ``xaitk_exp.cli.logging.FileHandler`` names the standard library's class and is refused.
    """
    prefixes = trusted_prefixes(extra_allowed)
    _check(to_dict(node), prefixes, key)


def _check(node: Any, prefixes: tuple[tuple[str, ...], ...], key: str) -> None:
    if isinstance(node, Mapping):
        target = node.get("_target_")
        if target is not None:
            _check_target(str(target), prefixes, f"{key + '.' if key else ''}_target_")
        for k, v in node.items():
            _check(v, prefixes, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _check(v, prefixes, f"{key}[{i}]")


def _refuse(where: str, target: str, why: str) -> UnsafeConfigError:
    return UnsafeConfigError(f"{where}={target!r} is not allowed: {why}")


def _check_target(target: str, prefixes: tuple[tuple[str, ...], ...], where: str) -> None:
    trusted = ", ".join(".".join(p) for p in prefixes)
    if not _under(target, prefixes):  # refused before importing anything: importing runs the module's code
        raise _refuse(where, target, f"only classes from {trusted} may be built (add a prefix to allow_targets to "
                                     "trust more)")
    obj = _reach(target, where)
    module, name = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    defined = f"{module}.{name}" if isinstance(module, str) and isinstance(name, str) else module
    if not isinstance(defined, str) or not _under(defined, prefixes):  # where it is defined, not how it was reached
        raise _refuse(where, target, f"it is defined in {module or 'no module'}, outside {trusted}")
    if _under(target, _BUILT_IN) and not inspect.isclass(obj):
        # built-in prefixes admit classes only: ``sklearn.datasets.fetch_openml`` is a function that downloads
        raise _refuse(where, target, "it is not a class (only estimators, datasets and saliency classes may be built)")


def _reach(target: str, where: str) -> object:
    """The object ``target`` names, walked as Hydra walks it (attributes, else submodules), refusing a module met
    under another name than the path (a module imported by a trusted one, such as ``xaitk_exp.cli.os``)."""
    import types

    parts = target.split(".")
    if any(not p for p in parts):
        raise _refuse(where, target, "a dotted path has no empty part")
    try:
        obj: object = importlib.import_module(parts[0])
    except Exception as exc:
        raise ConfigError(where, target, f"an importable class ({type(exc).__name__}: {exc})") from None
    for m in range(1, len(parts)):
        path = ".".join(parts[: m + 1])
        try:
            obj = getattr(obj, parts[m])
        except AttributeError:
            if not isinstance(obj, types.ModuleType):
                missing = f"{'.'.join(parts[:m])} has no {parts[m]}"
                raise ConfigError(where, target, f"an importable class ({missing})") from None
            try:
                obj = importlib.import_module(path)
            except Exception as exc:
                raise ConfigError(where, target, f"an importable class ({type(exc).__name__}: {exc})") from None
        if isinstance(obj, types.ModuleType) and obj.__name__ != path:
            raise _refuse(where, target, f"{path} is the module {obj.__name__} imported there, not a part of the path")
    if isinstance(obj, types.ModuleType):
        raise _refuse(where, target, "it is a module, not a class")
    return obj


def instantiate(node: Any, key: str, extra_allowed: Iterable[str] = (), **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` behind the allow-list, with errors that name the config key."""
    check_targets(node, extra_allowed, key)
    try:
        return _instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__ or exc
        msg = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        raise ConfigError(key, to_dict(node).get("_target_"), f"arguments that the class accepts ({msg})") from exc

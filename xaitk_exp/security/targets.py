"""The allow-list of ``_target_`` classes a config (a stored one above all) may build, and building behind it."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterable, Mapping
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate as _instantiate

from xaitk_exp.errors import ConfigError, UnsafeConfigError
from xaitk_exp.settings.nodes import to_dict

#: module prefixes a ``_target_`` may name; ``allow_targets`` in the config adds more.
ALLOWED_TARGET_PREFIXES = ("sklearn.", "xaitk_saliency.", "xaitk_exp.")


def check_targets(node: Any, extra_allowed: Iterable[str] = (), key: str = "") -> None:
    """Refuse any ``_target_`` outside the allow-list (scikit-learn, xaitk-saliency, this package, ``extra``)."""
    # each prefix once: the recursion below passes ``allowed`` on as its ``extra_allowed``
    allowed = tuple(dict.fromkeys([*ALLOWED_TARGET_PREFIXES, *(str(p) for p in extra_allowed)]))
    node = to_dict(node)
    if isinstance(node, Mapping):
        target = node.get("_target_")
        if target is not None and not (
            str(target).startswith(allowed) or str(target) in allowed
        ):
            raise UnsafeConfigError(
                f"{key + '.' if key else ''}_target_={target!r} is not allowed: only classes from "
                f"{', '.join(p.rstrip('.') for p in allowed)} may be built (add a prefix to allow_targets to trust more)"
            )
        if target is not None and str(target).startswith(ALLOWED_TARGET_PREFIXES):
            _require_class(str(target), key)
        for k, v in node.items():
            check_targets(v, allowed, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            check_targets(v, allowed, f"{key}[{i}]")


def _require_class(target: str, key: str) -> None:
    """Built-in prefixes admit classes only: ``sklearn.datasets.fetch_openml`` is a function that downloads."""
    try:
        obj = _resolve(target)
    except (ImportError, AttributeError):
        return  # instantiate reports the missing class, naming the key
    if not inspect.isclass(obj):
        raise UnsafeConfigError(
            f"{key + '.' if key else ''}_target_={target!r} is not allowed: it is not a class "
            "(only estimators, datasets and saliency classes may be built)"
        )


def instantiate(node: Any, key: str, extra_allowed: Iterable[str] = (), **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` behind the allow-list, with errors that name the config key."""
    check_targets(node, extra_allowed, key)
    try:
        return _instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__ or exc
        msg = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        raise ConfigError(key, to_dict(node).get("_target_"), f"arguments that the class accepts ({msg})") from exc


def _resolve(path: str) -> object:
    """The object a dotted ``path`` names: the longest importable module prefix, then attributes."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"no module in {path!r}")

"""Which model types loading a stored model may trust (skops), and refusing the rest."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import yaml

from xaitk_exp.errors import ConfigError, UnsafeConfigError
from xaitk_exp.lazy import import_skops

#: a stored skops model may ask to trust only classes defined in these packages (scikit-learn's own classes:
#: ``builtins.``/``numpy.`` prefixes would let a crafted MLmodel trust ``builtins.eval`` and run code)
TRUSTED_TYPE_PREFIXES = ("sklearn.",)


def is_trusted_type(name: str) -> bool:
    """True when ``name`` (``module.Class``) is a class scikit-learn itself defines."""
    if not isinstance(name, str) or not name.startswith(TRUSTED_TYPE_PREFIXES):
        return False
    module, _, attr = name.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError):
        return False
    return inspect.isclass(obj) and str(getattr(obj, "__module__", "")).startswith(TRUSTED_TYPE_PREFIXES)


def trusted_types(model: Any) -> list[str]:
    """The types skops does not trust by default that this model holds (for example the MLP's ``SGDOptimizer``).

    Only scikit-learn's own types are listed; anything else is refused with :class:`UnsafeConfigError`.
    """
    sio = import_skops()  # not `import skops.io`: that pulls PyTorch in wherever it is installed

    untrusted = sio.get_untrusted_types(data=sio.dumps(model))
    bad = [t for t in untrusted if not is_trusted_type(t)]
    if bad:
        raise UnsafeConfigError(
            f"model: types {bad} cannot be stored safely in the skops format; only scikit-learn types are trusted"
        )
    return sorted(untrusted)


def check_model_types(mlmodel_text: str, uri: str, allow_pickle: bool = False) -> None:
    """Refuse a stored model whose MLmodel lists types outside :data:`TRUSTED_TYPE_PREFIXES`, or is pickled."""
    meta = yaml.safe_load(mlmodel_text) or {}
    flavor = (meta.get("flavors") or {}).get("sklearn")
    if flavor is None:
        raise ConfigError("model.uri", uri, "an MLflow scikit-learn model (its MLmodel has no sklearn flavour)")
    fmt = flavor.get("serialization_format")
    if fmt != "skops" and not allow_pickle:
        raise UnsafeConfigError(
            f"model.uri={uri!r} is stored as {fmt!r}, which runs code when loaded; only 'skops' is loaded "
            "unless model.allow_pickle=true"
        )
    bad = [t for t in flavor.get("skops_trusted_types") or [] if not is_trusted_type(t)]
    if bad:
        raise UnsafeConfigError(
            f"model.uri={uri!r} asks to trust types {bad}; only scikit-learn's own classes are trusted"
        )
    if flavor.get("code") and not allow_pickle:  # MLflow would put the model's code folder first on sys.path
        raise UnsafeConfigError(
            f"model.uri={uri!r} ships code ({flavor['code']!r}) that loading would import; refused unless "
            "model.allow_pickle=true"
        )
    model_file = str(flavor.get("pickled_model") or "")
    if not model_file or Path(model_file).name != model_file or model_file in (".", ".."):
        raise UnsafeConfigError(f"model.uri={uri!r} names model file {model_file!r}; a file inside the model folder")

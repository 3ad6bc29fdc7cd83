"""Config helpers: tracking URI resolution, validation, hashing, and safe instantiation from ``_target_``."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from omegaconf import DictConfig, OmegaConf

from xaitk_exp.errors import ConfigError, UnsafeConfigError

TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "file")
STAGES = ("all", "train", "evaluation", "saliency", "reproduce")
LEVELS = ("high", "mid", "low")
#: module prefixes a ``_target_`` may name; ``allow_targets`` in the config adds more.
ALLOWED_TARGET_PREFIXES = ("sklearn.", "xaitk_saliency.", "xaitk_exp.")
SALIENCY_RESERVED = ("name", "fill")


def to_dict(node: Any) -> Any:
    """A resolved plain-Python copy of a config node (or the value itself)."""
    if isinstance(node, DictConfig) or OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def config_hash(*parts: Any) -> str:
    """A stable 16-hex-digit hash of config nodes (resolved, keys sorted)."""
    blob = json.dumps([to_dict(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def resolve_tracking(cfg: DictConfig) -> tuple[str, str | None]:
    """The tracking URI and, for a local SQLite store, the artifact root beside it.

    Order: ``tracking.uri``, then ``MLFLOW_TRACKING_URI``, then ``sqlite:///<cwd>/outputs/mlflow.db``.
    """
    uri = cfg.tracking.get("uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        out = Path.cwd() / "outputs"
        out.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{out / 'mlflow.db'}"
    scheme = urlsplit(str(uri)).scheme.split("+")[0]
    if scheme not in TRACKING_SCHEMES:
        raise ConfigError("tracking.uri", redact_uri(str(uri)), f"a URI with scheme {', '.join(TRACKING_SCHEMES)}")
    return str(uri), cfg.tracking.get("artifact_root") or default_artifact_root(str(uri))


def default_artifact_root(uri: str) -> str | None:
    """``mlartifacts/`` beside a SQLite database; None for a server, which decides for itself."""
    if not uri.startswith("sqlite:///"):
        return None
    db_path = Path(uri[len("sqlite:///") :])
    db_path.parent.mkdir(parents=True, exist_ok=True)
    return str(db_path.parent / "mlartifacts")


def redact_uri(uri: str) -> str:
    """The URI with any password (and token-like user info) replaced by ``***``."""
    parts = urlsplit(uri)
    if parts.password is None and "@" not in parts.netloc:
        return uri
    host = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    # a user name alone (``http://<token>@host``) is often the secret itself: hide it too
    netloc = f"{user}:***@{host}" if user and parts.password is not None else f"***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def redact_text(text: str, uri: str | None) -> str:
    """``text`` with the secret part of ``uri`` (password, or a lone user name) replaced by ``***``."""
    if not uri or "@" not in str(uri):
        return text
    parts = urlsplit(str(uri))
    text = text.replace(str(uri), redact_uri(str(uri)))
    userinfo = parts.netloc.rsplit("@", 1)[0]
    secret = parts.password if parts.password is not None else userinfo
    for variant in {userinfo, secret}:
        if variant and len(variant) >= 3:
            text = text.replace(f"{variant}@", "***@")
    if secret and len(secret) >= 3:
        text = text.replace(secret, "***")
    return text


def redact_overrides(overrides: Iterable[str]) -> list[str]:
    """Command-line overrides with any URI's credentials replaced (``tracking.uri=http://user:***@host``)."""
    out = []
    for item in overrides:
        key, sep, value = str(item).partition("=")
        # Hydra escapes ':' in multirun overrides (``http\\://user\\:pw@host``): unescape before parsing
        out.append(f"{key}{sep}{redact_uri(value.replace(chr(92), '').strip(chr(39) + chr(34)))}"
                   if sep and "@" in value else str(item))
    return out


def check_targets(node: Any, extra_allowed: Iterable[str] = (), key: str = "") -> None:
    """Refuse any ``_target_`` outside the allow-list (scikit-learn, xaitk-saliency, this package, ``extra``)."""
    allowed = tuple(ALLOWED_TARGET_PREFIXES) + tuple(str(p) for p in extra_allowed)
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
    import inspect

    from hydra._internal.utils import _locate

    try:
        obj = _locate(target)
    except ImportError:
        return  # instantiate reports the missing class, naming the key
    if not inspect.isclass(obj):
        raise UnsafeConfigError(
            f"{key + '.' if key else ''}_target_={target!r} is not allowed: it is not a class "
            "(only estimators, datasets and saliency classes may be built)"
        )


def instantiate(node: Any, key: str, extra_allowed: Iterable[str] = (), **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` behind the allow-list, with errors that name the config key."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as _instantiate

    check_targets(node, extra_allowed, key)
    try:
        return _instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__ or exc
        msg = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        raise ConfigError(key, to_dict(node).get("_target_"), f"arguments that the class accepts ({msg})") from exc


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
    if journal not in ("wal", "delete"):
        raise ConfigError("tracking.sqlite_journal", journal, "wal or delete")
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
    from xaitk_exp.metrics.settings import settings_from_config
    from xaitk_exp.models.sources import top_k_setting

    settings_from_config(cfg.get("metrics"))
    top_k_setting(OmegaConf.select(cfg, "maps.top_k", default="auto"))

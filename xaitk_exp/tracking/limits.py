"""MLflow's limits and the shape of what is logged: batch sizes, strings, safe artifact paths."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

MAX_PARAMS, MAX_TAGS, MAX_METRICS = 100, 100, 1000  # per log_batch call
MAX_PARAM_CHARS = 6000  # characters of one param value


def stringify(value: Any) -> str:
    if isinstance(value, str):
        return value
    return repr(value) if isinstance(value, (list, tuple, dict)) else str(value)


def chunks(d: dict[str, Any], size: int) -> Iterator[dict[str, Any]]:
    items = list(d.items())
    for i in range(0, len(items), size):
        yield dict(items[i : i + size])


_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")


def safe_artifact_path(path: str | None) -> str | None:
    """A relative artifact path that cannot leave the run's folder: ``\\`` counts as ``/``; empty, ``.`` and
    ``..`` parts are dropped; characters other than letters, digits and ``._-`` become ``_``. None if nothing is
    left (the run's root folder)."""
    if path is None:
        return None
    parts = [_UNSAFE_CHARS.sub("_", p) for p in str(path).replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return "/".join(parts) or None


def parent_dir(artifact_file: str) -> str | None:
    parent = os.path.dirname(artifact_file)
    return parent or None


def short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]

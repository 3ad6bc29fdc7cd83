"""Provenance: what produced a run (code commit, package versions, the resolved config as files)."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from collections.abc import Iterable, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from xaitk_exp.security.redact import redact_overrides, redact_uri

PACKAGES = ("xaitk-exp", "mlflow", "scikit-learn", "xaitk-saliency", "numpy", "hydra-core", "skops")


_GIT: list[str | None] = []


def git_commit() -> str | None:
    """The commit of the git checkout this package runs from, if any."""
    if not _GIT:
        here = Path(__file__).resolve().parent
        try:
            out = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=False
            )
            _GIT.append(out.stdout.strip() if out.returncode == 0 else None)
        except (OSError, subprocess.SubprocessError):
            _GIT.append(None)
    return _GIT[0]


def package_versions() -> dict[str, str]:
    """Python's and :data:`PACKAGES`' versions, read once per process (every stage records them)."""
    return dict(_package_versions())


@functools.cache
def _package_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for pkg in PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def config_texts(cfg: DictConfig, overrides: Iterable[str], pinned: Mapping[str, str] | None = None) -> dict[str, str]:
    """``config.yaml`` (resolved, with the run ids a stage ``pinned`` after the check), ``overrides.yaml`` and
    ``environment.json``: name -> text. Credentials in the tracking URI stay on this machine."""
    resolved: Any = OmegaConf.to_container(cfg, resolve=True)
    resolved.update(pinned or {})
    if (resolved.get("tracking") or {}).get("uri"):
        resolved["tracking"]["uri"] = redact_uri(str(resolved["tracking"]["uri"]))
    return {
        "config.yaml": yaml.safe_dump(resolved, sort_keys=False),
        "overrides.yaml": yaml.safe_dump({"overrides": redact_overrides(overrides)}, sort_keys=False),
        "environment.json": json.dumps(package_versions(), indent=2, sort_keys=True),
    }

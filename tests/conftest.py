"""Shared fixtures: compose the real config with Hydra and run stages against a real SQLite store in tmp_path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]


def exe() -> list[str]:
    """The installed command, as a user runs it (falls back to ``python -m xaitk_exp``)."""
    found = shutil.which("xaitk-exp", path=str(Path(sys.executable).parent)) or shutil.which("xaitk-exp")
    return [found] if found else [sys.executable, "-m", "xaitk_exp"]


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A fresh SQLite tracking URI in a temporary folder."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def make_cfg(tmp_path: Path, store: str) -> Callable[..., DictConfig]:
    """Compose the shipped config with overrides, pointed at the temporary store, progress bars off."""

    def _make(*overrides: str, uri: str | None = None) -> DictConfig:
        from xaitk_exp.app import compose_config

        return compose_config([f"tracking.uri={uri or store}", "progress=false", *overrides])

    return _make


@pytest.fixture
def run_stage(make_cfg: Callable[..., DictConfig], tmp_path: Path):
    """Run the pipeline in-process for the given overrides; returns the stage context."""
    from xaitk_exp.app import run

    def _run(*overrides: str, uri: str | None = None):
        cfg = make_cfg(*overrides, uri=uri)
        return run(cfg, list(overrides), tmp_path)

    return _run


@pytest.fixture
def client(store: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=store)


def run_cli(args: list[str], cwd: Path, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the installed ``xaitk-exp`` command in ``cwd`` (its default store lands in ``cwd/outputs``)."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("MLFLOW_TRACKING_URI", None) if env is None or "MLFLOW_TRACKING_URI" not in env else None
    return subprocess.run(
        [*exe(), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env, check=False
    )

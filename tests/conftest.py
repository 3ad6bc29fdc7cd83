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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "with_upstream: the test's store starts with the default train and evaluation runs (made once)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files that hold a slow test first, then the others; each file's tests stay together and in order. pytest-xdist
    (``--dist loadfile`` in pyproject.toml) hands out whole files in this order: the long files start early and the
    many short ones fill the end, instead of one worker being left alone on a long file at the end."""

    def file(item: pytest.Item) -> str:
        return item.nodeid.split("::")[0]

    order: dict[str, int] = {}
    slow: set[str] = set()
    for item in items:
        order.setdefault(file(item), len(order))
        if item.get_closest_marker("slow"):
            slow.add(file(item))
    items.sort(key=lambda item: (file(item) not in slow, order[file(item)]))


@pytest.fixture(autouse=True)
def _restore_environment():
    """Each test leaves ``os.environ`` and the working directory as it found them (an in-process stage sets
    ``MLFLOW_TRACKING_URI``; a later test in the same worker must not write to that store)."""
    saved, cwd = dict(os.environ), os.getcwd()
    yield
    forget_artifact_repos()
    if os.getcwd() != cwd:
        os.chdir(cwd)
    if dict(os.environ) != saved:
        os.environ.clear()
        os.environ.update(saved)


def forget_artifact_repos() -> None:
    """Empty MLflow's process-wide cache of each run's artifact repository, keyed by run id alone: copies of the
    upstream store hold the same run ids, and a test would write its artifacts into the store cached first (the
    template, or an earlier test's copy)."""
    repos = getattr(sys.modules.get("mlflow.tracking._tracking_service.utils"), "_artifact_repos_cache", None)
    if repos is not None:
        repos.clear()


@pytest.fixture(scope="session")
def upstream_store(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``upstream_store(*overrides)``: a store holding the default config's train run and evaluation with those
    overrides, made in-process once per session (per xdist worker) and shared; give it to :func:`copy_store`, never
    write to it."""
    from xaitk_exp.app import compose_config, run

    made: dict[tuple[str, ...], Path] = {}

    def _make(*overrides: str) -> Path:
        if overrides not in made:
            folder = tmp_path_factory.mktemp("upstream")
            uri = f"sqlite:///{folder / 'mlflow.db'}"
            saved = dict(os.environ)  # session-scoped: what the stages set must not stay for every later test
            try:
                for stage in ("train", "evaluation"):
                    run(compose_config([f"tracking.uri={uri}", "progress=false", *overrides, f"stage={stage}"]), [],
                        folder)
            finally:
                os.environ.clear()
                os.environ.update(saved)
                forget_artifact_repos()
            made[overrides] = folder
        return made[overrides]

    return _make


@pytest.fixture(scope="session")
def upstream_template(upstream_store: Callable[..., Path]) -> Path:
    """A store holding the default config's train run and evaluation (20 image runs), made once per session."""
    return upstream_store()


def copy_store(template: Path, target: Path) -> None:
    """Copy a SQLite store and its artifacts to ``target``, re-pointing every stored path at the copy."""
    import sqlite3

    source = sqlite3.connect(template / "mlflow.db")
    con = sqlite3.connect(target / "mlflow.db")
    try:
        source.backup(con)  # takes what still sits in the -wal file too
        shutil.copytree(template / "mlartifacts", target / "mlartifacts")
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for _, column, kind, *_ in con.execute(f"PRAGMA table_info('{table}')").fetchall():
                if "CHAR" in kind.upper() or "TEXT" in kind.upper():
                    con.execute(
                        f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) WHERE "{column}" LIKE ?',
                        (str(template), str(target), f"%{template}%"),
                    )
        con.commit()
    finally:
        con.close()
        source.close()


@pytest.fixture
def store(tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A SQLite tracking URI in a temporary folder: empty, or with ``@pytest.mark.with_upstream`` a copy of the
    session's store that already holds the default train run and evaluation (the stage tests stop retraining)."""
    if request.node.get_closest_marker("with_upstream"):
        copy_store(request.getfixturevalue("upstream_template"), tmp_path)
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


def local_client(cwd: Path):
    """A client on the default store a command run in ``cwd`` writes (``cwd/outputs/mlflow.db``)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{cwd / 'outputs' / 'mlflow.db'}")


def experiment_runs(client, experiment: str) -> list:
    """Every run of ``experiment`` (none when it does not exist)."""
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=1000)


def sweep_table(client, parent_id: str, tmp: Path) -> list[dict[str, str]]:
    """The rows of a sweep's ``sweep_summary.csv``, from its parent run."""
    import csv
    import io

    local = client.download_artifacts(parent_id, "sweep_summary.csv", str(tmp))
    return list(csv.DictReader(io.StringIO(Path(local).read_text())))

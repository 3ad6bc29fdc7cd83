"""Tracking stores: which one a job writes to, and opening a SQLite store safely (lock, migrations, journal)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from omegaconf import DictConfig

from xaitk_exp.errors import ConfigError, TrackingError
from xaitk_exp.schema import SQLITE_JOURNALS
from xaitk_exp.security.redact import redact_uri
from xaitk_exp.settings.config import TrackingSettings, tracking_settings

TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "file")


def resolve_tracking(settings: TrackingSettings | DictConfig) -> tuple[str, str | None]:
    """The tracking URI and, for a local SQLite store, the artifact root beside it, from a job's checked
    ``tracking`` settings (or a config's, checked here: the sweep's launcher, benchmarks).

    Order: ``tracking.uri``, then ``MLFLOW_TRACKING_URI``, then ``sqlite:///<cwd>/outputs/mlflow.db``.
    """
    tracking = settings if isinstance(settings, TrackingSettings) else tracking_settings(settings)
    uri = tracking.uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        out = Path.cwd() / "outputs"
        out.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{out / 'mlflow.db'}"
    scheme = urlsplit(str(uri)).scheme.split("+")[0]
    if scheme not in TRACKING_SCHEMES:
        raise ConfigError("tracking.uri", redact_uri(str(uri)), f"a URI with scheme {', '.join(TRACKING_SCHEMES)}")
    return str(uri), tracking.artifact_root or default_artifact_root(str(uri))


def default_artifact_root(uri: str) -> str | None:
    """``mlartifacts/`` beside a SQLite database; None for a server, which decides for itself."""
    if not uri.startswith("sqlite:///"):
        return None
    db_path = Path(uri[len("sqlite:///") :])
    db_path.parent.mkdir(parents=True, exist_ok=True)
    return str(db_path.parent / "mlartifacts")




def open_sqlite_store(uri: str, journal: str = "wal") -> Any:
    """A client on a SQLite store, opened (and if new, migrated) by one process at a time, in ``journal`` mode.

    Two processes opening a fresh store at once race in MLflow's schema migrations ("table ... already exists",
    "duplicate column", a leftover ``_alembic_tmp_*`` table that breaks the store for good): an exclusive lock on
    ``<database>.lock`` beside the file serialises the opening, which costs one short wait.

    ``wal`` (write-ahead log) makes each commit an append to ``<database>-wal`` instead of writing, syncing and
    deleting a rollback journal: a run costs about 40% less on this kind of disk, and readers (the MLflow UI, a
    query) no longer wait for a writer. Commits stay fully synced, so nothing committed is lost on a crash. WAL
    needs every process on one host (not a network file system): ``delete`` is SQLite's classic mode.
    """
    from mlflow import MlflowClient

    db = Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None
    if db is None or str(db) in ("", ":memory:"):
        return MlflowClient(tracking_uri=uri)
    db.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not on POSIX: open without the lock
        _set_journal(db, journal)
        return MlflowClient(tracking_uri=uri)
    with open(db.with_name(db.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            _set_journal(db, journal)
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return client


def _set_journal(db: Path, journal: str) -> None:
    """Put the database file in ``journal`` mode (a property of the file: it holds for every later connection)."""
    if journal not in SQLITE_JOURNALS:
        raise ConfigError("tracking.sqlite_journal", journal, " or ".join(SQLITE_JOURNALS))
    current = "unknown"
    try:
        con = sqlite3.connect(db, timeout=60)
    except sqlite3.Error as exc:
        raise TrackingError(f"tracking.uri: the SQLite store {db} cannot be opened ({exc})") from exc
    try:
        current = str(con.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        if current != journal:
            current = str(con.execute(f"PRAGMA journal_mode={journal.upper()}").fetchone()[0]).lower()
    except sqlite3.Error:
        pass  # busy with another transaction: the store works in its present mode
    finally:
        con.close()
    if current != journal:  # leaving WAL needs the only connection to the file
        import sys

        print(
            f"xaitk-exp: warning: tracking.sqlite_journal={journal} not applied: {db} is open elsewhere (an MLflow "
            f"UI, another run?); it stays in {current} mode until every other connection closes",
            file=sys.stderr,
        )


def use_tracking_uri(uri: str) -> None:
    """Point MLflow's fluent API at ``uri`` without leaking it into ``MLFLOW_TRACKING_URI``.

    ``mlflow.set_tracking_uri`` also exports the environment variable, which later jobs in the same process and
    every subprocess would then take as their default store.
    """
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before

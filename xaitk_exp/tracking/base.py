"""The tracker interface the stages talk to. Stages never import ``mlflow`` themselves.

Public methods validate and shape the data (template method); subclasses implement the ``_``-prefixed writes
with their own MLflow API level. Reads (search, get) are shared and go through ``MlflowClient``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import tempfile
import traceback
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from xaitk_exp.errors import RunKilled, TrackingError

MAX_PARAMS, MAX_TAGS, MAX_METRICS = 100, 100, 1000
MAX_PARAM_CHARS = 6000
MODEL_DIR = "sklearn-model"


def _stringify(value: Any) -> str:
    if isinstance(value, str):
        return value
    return repr(value) if isinstance(value, (list, tuple, dict)) else str(value)


class Tracker(ABC):
    """Writes runs to one MLflow tracking store. ``artifact_root`` places new experiments' artifacts."""

    level = "abstract"

    def __init__(self, uri: str, artifact_root: str | None = None, sqlite_journal: str = "wal") -> None:
        from mlflow import MlflowClient

        from xaitk_exp.config import default_artifact_root

        self.uri = uri
        self.sqlite_journal = sqlite_journal
        self.artifact_root = artifact_root or default_artifact_root(uri)  # never ./mlruns in the working directory
        if "@" in uri.split("://", 1)[-1].split("/", 1)[0]:
            # MLflow prints "View run <name> at: <tracking URL>/#/..." on every fluent end_run, credentials included
            os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        self.client = (
            _open_sqlite_store(uri, sqlite_journal) if uri.startswith("sqlite:") else MlflowClient(tracking_uri=uri)
        )
        self._experiments: dict[str, str] = {}
        self._sweep_experiments: dict[str, str | None] = {}

    def reopen_args(self) -> tuple[str, str, str | None, str]:
        """What :func:`xaitk_exp.tracking.make_tracker` needs to open the same tracker in another process."""
        return self.level, self.uri, self.artifact_root, self.sqlite_journal

    # ----- experiments -------------------------------------------------------------------------------------------
    def experiment(self, name: str, create: bool = True) -> str | None:
        """The id of experiment ``name``, created with tags ``framework``, ``version``, ``Experiment`` if missing."""
        if name in self._experiments:
            return self._experiments[name]
        from mlflow.exceptions import MlflowException

        exp = self._get_experiment(name)
        if exp is None and create:
            import sklearn

            location = None
            if self.artifact_root:
                safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
                location = Path(self.artifact_root, safe).as_uri()
            tags = {"framework": "scikit-learn", "version": sklearn.__version__, "Experiment": name}
            try:
                self.client.create_experiment(name, artifact_location=location, tags=tags)
            except MlflowException:  # created meanwhile by a parallel job
                pass
            exp = self._get_experiment(name)
        if exp is None:
            return None
        self._experiments[name] = exp.experiment_id
        return exp.experiment_id

    def _get_experiment(self, name: str) -> Any:
        try:
            return self.client.get_experiment_by_name(name)
        except Exception as exc:  # unreachable server, broken store
            raise TrackingError(self._scrub(f"tracking.uri: the tracking store cannot be read ({_short(exc)})")) from exc

    # ----- runs --------------------------------------------------------------------------------------------------
    @contextmanager
    def run(
        self,
        experiment_id: str,
        run_name: str,
        tags: Mapping[str, Any] | None = None,
        parent_run_id: str | None = None,
        run_id: str | None = None,
    ) -> Iterator[str]:
        """Open a run (or reopen ``run_id``) and close it with an honest status.

        FINISHED on success; FAILED with ``traceback.txt`` and an ``error`` tag on an exception; KILLED on
        Ctrl-C or SIGTERM. The run id is yielded.
        """
        all_tags = self._run_tags(experiment_id, tags, parent_run_id)
        if run_id is None:
            run_id = self._start_run(experiment_id, run_name, all_tags)
        else:
            self._resume_run(run_id)
            if all_tags:
                self._log(run_id, {}, {}, all_tags, 0)
        previous = _install_sigterm()
        try:
            with self.closed_on_error(run_id):
                yield run_id
            self._end_run(run_id, "FINISHED")
        finally:
            _restore_sigterm(previous)

    @contextmanager
    def closed_on_error(self, run_id: str) -> Iterator[None]:
        """An exception inside closes ``run_id``: KILLED on Ctrl-C or SIGTERM, else FAILED with the error."""
        try:
            yield
        except (KeyboardInterrupt, RunKilled):
            self._close(run_id, "KILLED", None)
            raise
        except BaseException as exc:
            self._close(run_id, "FAILED", exc)
            raise

    def _run_tags(
        self, experiment_id: str, tags: Mapping[str, Any] | None, parent_run_id: str | None
    ) -> dict[str, str]:
        """A run's tags as strings, with ``mlflow.parentRunId`` (the given parent, else the sweep's run if any)."""
        all_tags = {k: self._scrub(_stringify(v)) for k, v in (tags or {}).items()}
        if not parent_run_id and all_tags.get("Sweep_run_id"):
            parent_run_id = self._sweep_parent_in(experiment_id, all_tags["Sweep_run_id"])
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        return all_tags

    def log_runs(
        self,
        experiment_id: str,
        runs: Iterable[tuple[str, Mapping[str, Any], Mapping[str, float]]],
        parent_run_id: str | None = None,
        processes: int = 1,
    ) -> list[str]:
        """Many small runs, one per ``(run_name, tags, metrics)``, each opened and closed like :meth:`run`.

        The evaluation's per-image runs come through here, so each level writes them with as few store calls as
        its API allows. ``runs`` may be a lazy iterator; the run ids come back in its order. ``processes``: how
        many processes may write (``n_jobs``); the fluent levels keep one active run per thread and write here.
        """
        ids = []
        for run_name, tags, metrics in runs:
            with self.run(experiment_id, run_name, tags=tags, parent_run_id=parent_run_id) as run_id:
                self.log(run_id, metrics=metrics)
            ids.append(run_id)
        return ids

    def _sweep_parent_in(self, experiment_id: str, sweep_run_id: str) -> str | None:
        """The sweep's parent run when it lives in ``experiment_id`` (MLflow nests runs only within one experiment;
        elsewhere the ``Sweep_run_id`` tag links them)."""
        if sweep_run_id not in self._sweep_experiments:
            try:
                self._sweep_experiments[sweep_run_id] = self.client.get_run(sweep_run_id).info.experiment_id
            except Exception:
                self._sweep_experiments[sweep_run_id] = None
        return sweep_run_id if self._sweep_experiments[sweep_run_id] == experiment_id else None

    def start_run(self, experiment_id: str, run_name: str, tags: Mapping[str, Any] | None = None) -> str:
        """Open a run that outlives one ``with`` block (a sweep's parent); close it with :meth:`finish_run`."""
        return self._start_run(experiment_id, run_name, {k: self._scrub(_stringify(v)) for k, v in (tags or {}).items()})

    def finish_run(self, run_id: str, status: str = "FINISHED") -> None:
        self._end_run(run_id, status)

    def _close(self, run_id: str, status: str, exc: BaseException | None) -> None:
        """Best effort: record the error, then the status; never mask the original exception."""
        try:
            if exc is not None:
                text = self._scrub("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
                self._log(run_id, {}, {}, {"error": self._scrub(_short(exc))}, 0)
                self.log_text(run_id, text, "traceback.txt")
        except Exception:
            pass
        try:
            self._end_run(run_id, status)
        except Exception:
            pass

    def log(
        self,
        run_id: str,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, Any] | None = None,
        step: int = 0,
    ) -> None:
        """Log params, metrics and tags in as few calls as the level allows (chunks of MLflow's batch limits)."""
        p = {k: self._scrub(_stringify(v)) for k, v in (params or {}).items()}
        for k, v in p.items():
            if len(v) > MAX_PARAM_CHARS:
                raise TrackingError(f"param {k!r} is {len(v)} characters; MLflow keeps at most {MAX_PARAM_CHARS}")
        m = {k: float(v) for k, v in (metrics or {}).items()}
        t = {k: self._scrub(_stringify(v)) for k, v in (tags or {}).items()}
        if len(p) <= MAX_PARAMS and len(m) <= MAX_METRICS and len(t) <= MAX_TAGS:
            self._log(run_id, p, m, t, step)
            return
        for chunk in _chunks(p, MAX_PARAMS):
            self._log(run_id, chunk, {}, {}, step)
        for chunk in _chunks(m, MAX_METRICS):
            self._log(run_id, {}, chunk, {}, step)
        for chunk in _chunks(t, MAX_TAGS):
            self._log(run_id, {}, {}, chunk, step)

    def log_metric_history(self, run_id: str, key: str, values: list[float]) -> None:
        """One value per step ``0..len(values)-1`` (for example a loss per epoch)."""
        for start in range(0, len(values), MAX_METRICS):
            self._log_history(run_id, key, [float(v) for v in values[start : start + MAX_METRICS]], start)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        artifact_file = safe_artifact_path(artifact_file) or "file.txt"
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, Path(artifact_file).name)
            path.write_text(self._scrub(text))
            self.log_artifact(run_id, str(path), _parent(artifact_file))

    def log_dict(self, run_id: str, obj: Any, artifact_file: str) -> None:
        """A JSON (``.json``) or YAML (other suffixes) copy of ``obj``."""
        if artifact_file.endswith(".json"):
            text = json.dumps(obj, indent=2, sort_keys=True, default=str)
        else:
            import yaml

            text = yaml.safe_dump(obj, sort_keys=False)
        self.log_text(run_id, text, artifact_file)

    def log_artifact(self, run_id: str, local_path: str, artifact_path: str | None = None) -> None:
        """``local_path`` into the run's ``artifact_path`` folder; both names pass :func:`safe_artifact_path`."""
        name = Path(local_path).name
        safe = safe_artifact_path(name) or "file"
        text = self._secret_text(local_path)
        if safe != name or text is not None:  # named from data, or quoting the tracking URI's credentials
            with tempfile.TemporaryDirectory() as tmp:
                copy = Path(tmp, safe)
                if text is not None:
                    copy.write_text(text)
                else:
                    shutil.copyfile(local_path, copy)
                self._log_artifact(run_id, str(copy), safe_artifact_path(artifact_path))
            return
        self._log_artifact(run_id, local_path, safe_artifact_path(artifact_path))

    def log_table(self, run_id: str, columns: Mapping[str, list[Any]], artifact_file: str) -> None:
        """A table artifact (``.json``, columns of equal length) that the MLflow UI shows and compares."""
        data = {k: [self._scrub(v) if isinstance(v, str) else v for v in col] for k, col in columns.items()}
        self.client.log_table(run_id, data=data, artifact_file=safe_artifact_path(artifact_file) or "table.json")

    def log_artifacts(self, run_id: str, local_dir: str, artifact_path: str | None = None) -> None:
        """Every file under ``local_dir``; names that :func:`safe_artifact_path` would change are logged cleaned."""
        files = [p.relative_to(local_dir).as_posix() for p in Path(local_dir).rglob("*") if p.is_file()]
        if all(safe_artifact_path(f) == f for f in files):
            self._log_artifacts(run_id, local_dir, safe_artifact_path(artifact_path))
            return
        with tempfile.TemporaryDirectory() as tmp:
            for f in files:
                target = Path(tmp, safe_artifact_path(f) or "file")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(Path(local_dir, f), target)
            self._log_artifacts(run_id, tmp, safe_artifact_path(artifact_path))

    def log_model(self, run_id: str, model: Any, input_example: Any) -> None:
        """The estimator as an MLflow sklearn model (skops format) in the run's ``sklearn-model/`` folder."""
        from xaitk_exp.models.sklearn import save_sklearn_model

        with tempfile.TemporaryDirectory() as tmp:
            path = save_sklearn_model(model, Path(tmp, MODEL_DIR), input_example)
            self._log_model(run_id, model, input_example, str(path))

    def _log_model(self, run_id: str, model: Any, input_example: Any, saved_dir: str) -> None:
        self._log_artifacts(run_id, saved_dir, MODEL_DIR)

    # ----- reads (shared by every level) -------------------------------------------------------------------------
    def search(
        self,
        experiment_ids: list[str],
        filter_string: str = "",
        order_by: list[str] | None = None,
        max_results: int = 1000,
    ) -> list[Any]:
        """Runs matching an MLflow filter string, as ``mlflow.entities.Run`` objects."""
        from mlflow.exceptions import MlflowException

        try:
            return list(
                self.client.search_runs(
                    experiment_ids, filter_string=filter_string, order_by=order_by, max_results=max_results
                )
            )
        except MlflowException as exc:
            raise TrackingError(self._scrub(_short(exc))) from exc

    def get_run(self, run_id: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id)
        except MlflowException as exc:
            raise TrackingError(f"run {run_id!r} does not exist in {self.display_uri}") from exc

    def _scrub(self, text: str) -> str:
        """``text`` without the credentials of the tracking URI (MLflow's errors quote the URL it called)."""
        from xaitk_exp.config import redact_text

        return redact_text(text, self.uri)

    def _secret_text(self, local_path: str) -> str | None:
        """The scrubbed text of a small text file that quotes the tracking URI's credentials, else None."""
        if "@" not in self.uri or Path(local_path).suffix.lower() not in (".csv", ".json", ".yaml", ".yml", ".txt"):
            return None
        try:
            text = Path(local_path).read_text()
        except (OSError, UnicodeDecodeError):
            return None
        clean = self._scrub(text)
        return clean if clean != text else None

    @property
    def display_uri(self) -> str:
        from xaitk_exp.config import redact_uri

        return redact_uri(self.uri)

    def download(self, run_id: str, artifact_path: str, dst: str) -> str:
        return self.client.download_artifacts(run_id, safe_artifact_path(artifact_path) or "", dst)

    # ----- what each level implements ----------------------------------------------------------------------------
    @abstractmethod
    def _start_run(self, experiment_id: str, run_name: str, tags: dict[str, str]) -> str: ...

    @abstractmethod
    def _resume_run(self, run_id: str) -> None: ...

    @abstractmethod
    def _end_run(self, run_id: str, status: str) -> None: ...

    @abstractmethod
    def _log(self, run_id: str, params: dict[str, str], metrics: dict[str, float], tags: dict[str, str], step: int) -> None: ...

    @abstractmethod
    def _log_history(self, run_id: str, key: str, values: list[float], first_step: int) -> None: ...

    @abstractmethod
    def _log_artifact(self, run_id: str, local_path: str, artifact_path: str | None) -> None: ...

    @abstractmethod
    def _log_artifacts(self, run_id: str, local_dir: str, artifact_path: str | None) -> None: ...


#: SQLite journal modes ``tracking.sqlite_journal`` accepts
SQLITE_JOURNALS = ("wal", "delete")


def _open_sqlite_store(uri: str, journal: str = "wal") -> Any:
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
    import sqlite3

    from xaitk_exp.errors import ConfigError

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


def _chunks(d: dict[str, Any], size: int) -> Iterator[dict[str, Any]]:
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


def _parent(artifact_file: str) -> str | None:
    parent = os.path.dirname(artifact_file)
    return parent or None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


def _raise_killed(signum: int, frame: Any) -> None:
    raise RunKilled(f"received signal {signum}")


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """SIGTERM raises :class:`RunKilled` inside the block (main thread only), so that work in other processes that
    the block waits for can be stopped and its runs closed instead of the process vanishing."""
    previous = _install_sigterm()
    try:
        yield
    finally:
        _restore_sigterm(previous)


def _install_sigterm() -> Any:
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        return signal.signal(signal.SIGTERM, _raise_killed)
    except ValueError:
        return None


def _restore_sigterm(previous: Any) -> None:
    import threading

    if previous is None or threading.current_thread() is not threading.main_thread():
        return
    try:
        signal.signal(signal.SIGTERM, previous)
    except ValueError:
        pass

"""The tracker interface the stages talk to. Stages never import ``mlflow`` themselves.

Public methods validate and shape the data (template method); subclasses implement the ``_``-prefixed writes
with their own MLflow API level. Reads (search, get) are shared and go through ``MlflowClient``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import traceback
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, overload

from xaitk_exp import schema
from xaitk_exp.errors import RunKilled, TrackingError
from xaitk_exp.tracking.limits import (
    MAX_METRICS,
    MAX_PARAM_CHARS,
    MAX_PARAMS,
    MAX_TAGS,
    chunks,
    parent_dir,
    safe_artifact_path,
    short_error,
    stringify,
)
from xaitk_exp.tracking.model_records import ModelRecords
from xaitk_exp.tracking.processes import drop_killed, process_tags
from xaitk_exp.tracking.reads import StoreReader
from xaitk_exp.tracking.signals import install_sigterm, restore_sigterm
from xaitk_exp.tracking.stores import default_artifact_root, open_sqlite_store


class Tracker(StoreReader, ModelRecords, ABC):
    """Writes runs to one MLflow tracking store. ``artifact_root`` places new experiments' artifacts."""

    level = "abstract"

    def __init__(self, uri: str, artifact_root: str | None = None, sqlite_journal: str = "wal") -> None:
        from mlflow import MlflowClient

        self.uri = uri
        self.sqlite_journal = sqlite_journal
        self.artifact_root = artifact_root or default_artifact_root(uri)  # never ./mlruns in the working directory
        # MLflow prints "View run <name> at: <URL>" and "View experiment at: <URL>" on every fluent end_run against
        # a server (credentials included): two lines per image run; the stages print their own links instead
        # (a user may ask for them back with MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT=false, never with credentials)
        if "@" in uri.split("://", 1)[-1].split("/", 1)[0]:
            os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        sqlite = uri.startswith("sqlite:")
        self.client = open_sqlite_store(uri, sqlite_journal) if sqlite else MlflowClient(tracking_uri=uri)
        self._experiments: dict[str, str] = {}
        self._created: set[str] = set()
        self._sweep_experiments: dict[str, str | None] = {}

    def thread_bound(self) -> bool:
        """True when a run opened from another thread would be recorded differently than from this one (a fluent
        level with an active run here, which would become the new run's parent)."""
        return False

    def reopen_args(self) -> tuple[str, str, str | None, str]:
        """What :func:`xaitk_exp.tracking.make_tracker` needs to open the same tracker in another process."""
        return self.level, self.uri, self.artifact_root, self.sqlite_journal

    # ----- experiments -------------------------------------------------------------------------------------------
    @overload
    def experiment(self, name: str, create: Literal[True] = True, framework: tuple[str, str] | None = None) -> str: ...

    @overload
    def experiment(self, name: str, create: bool, framework: tuple[str, str] | None = None) -> str | None: ...

    def experiment(self, name: str, create: bool = True, framework: tuple[str, str] | None = None) -> str | None:
        """The id of experiment ``name``, created if missing with tags ``framework`` and ``version`` (the model's
        library: ``framework``, default scikit-learn) and ``Experiment``."""
        if name in self._experiments:
            return self._experiments[name]
        from mlflow.exceptions import MlflowException

        exp = self._get_experiment(name)
        if exp is None and create:
            if framework is None:
                import sklearn

                framework = ("scikit-learn", sklearn.__version__)
            location = None
            if self.artifact_root:
                safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
                location = Path(self.artifact_root, safe).as_uri()
            tags = {"framework": framework[0], "version": framework[1], "Experiment": name}
            try:
                new_id = self.client.create_experiment(name, artifact_location=location, tags=tags)
                self._created.add(new_id)
            except MlflowException:  # created meanwhile by a parallel job
                pass
            exp = self._get_experiment(name)
        if exp is None:
            if create:  # created, yet not found: the store lost it
                raise TrackingError(self._scrub(f"tracking.uri: experiment {name!r} was created but cannot be read back"))
            return None
        self._experiments[name] = str(exp.experiment_id)
        return self._experiments[name]

    def created_here(self, experiment_id: str) -> bool:
        """True when this tracker created the experiment, so it holds no run from an earlier job."""
        return experiment_id in self._created

    def _get_experiment(self, name: str) -> Any:
        try:
            return self.client.get_experiment_by_name(name)
        except Exception as exc:  # unreachable server, broken store
            raise TrackingError(self._scrub(f"tracking.uri: the tracking store cannot be read ({short_error(exc)})")) from exc

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
            run_id = self._start_run(experiment_id, schema.trial_run_name(run_name, all_tags), all_tags)
        else:
            self._resume_run(run_id)
            if all_tags:
                self._log(run_id, {}, {}, all_tags, 0)
        previous = install_sigterm()
        try:
            with self.closed_on_error(run_id):
                yield run_id
            self._end_run(run_id, "FINISHED")
        finally:
            restore_sigterm(previous)

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
        """A run's tags as strings, with ``mlflow.parentRunId`` (the given parent, else the sweep's run if any; never
        the sweep's for an evaluation's image run, which stays top-level, linked to its summary by tag) and the
        process that opens it (``Host``, ``Pid``, ``Process``: a later stage closes it if that process dies)."""
        all_tags = {**process_tags(), **{k: self._scrub(stringify(v)) for k, v in (tags or {}).items()}}
        if not parent_run_id and all_tags.get(schema.SWEEP_RUN_ID) and all_tags.get(schema.RUN_TYPE) != "image":
            parent_run_id = self._sweep_parent_in(experiment_id, all_tags[schema.SWEEP_RUN_ID])
        if parent_run_id:
            all_tags[schema.PARENT_RUN_ID] = parent_run_id
        return all_tags

    def log_runs(
        self,
        experiment_id: str,
        runs: Iterable[tuple[str, Mapping[str, Any], Mapping[str, float]]],
        parent_run_id: str | None = None,
        processes: int = 1,
        summary_run_id: str | None = None,
    ) -> list[str]:
        """Many small runs, one per ``(run_name, tags, metrics)``, each opened and closed like :meth:`run`.

        The evaluation's per-image runs come through here, so each level writes them with as few store calls as
        its API allows. ``runs`` may be a lazy iterator; the run ids come back in its order. ``processes``: how
        many processes may write (``n_jobs``); the fluent levels keep one active run per thread and write here.
        ``summary_run_id``: the run they belong to, as tag ``Evaluation_summary_run_id`` (top-level runs, not
        nested: MLflow's runs table folds nested runs under their parent, hiding them from a typed query).
        """
        ids = []
        for run_name, tags, metrics in _linked(runs, summary_run_id):
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
        given = {k: self._scrub(stringify(v)) for k, v in (tags or {}).items()}
        return self._start_run(experiment_id, run_name, {**process_tags(), **given})

    def finish_run(self, run_id: str, status: str = "FINISHED") -> None:
        self._end_run(run_id, status)

    def replace_killed(
        self, experiment_id: str, filter_string: str, key: str | None = None, keys: Iterable[str] | None = None
    ) -> int:
        """Delete the KILLED runs (and their children) of the work about to be redone, so that a relaunch after a
        kill leaves one run per unit of work (:func:`xaitk_exp.tracking.processes.drop_killed`). Best effort."""
        try:
            return drop_killed(self, experiment_id, filter_string, key, keys)
        except Exception:
            return 0

    def _close(self, run_id: str, status: str, exc: BaseException | None) -> None:
        """Best effort: record the error, then the status; never mask the original exception."""
        try:
            if exc is not None:
                text = self._scrub("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
                self._log(run_id, {}, {}, {schema.ERROR: self._scrub(short_error(exc))}, 0)
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
        p = {k: self._scrub(stringify(v)) for k, v in (params or {}).items()}
        for k, v in p.items():
            if len(v) > MAX_PARAM_CHARS:
                raise TrackingError(f"param {k!r} is {len(v)} characters; MLflow keeps at most {MAX_PARAM_CHARS}")
        m = {k: float(v) for k, v in (metrics or {}).items()}
        t = {k: self._scrub(stringify(v)) for k, v in (tags or {}).items()}
        if len(p) <= MAX_PARAMS and len(m) <= MAX_METRICS and len(t) <= MAX_TAGS:
            self._log(run_id, p, m, t, step)
            return
        for chunk in chunks(p, MAX_PARAMS):
            self._log(run_id, chunk, {}, {}, step)
        for chunk in chunks(m, MAX_METRICS):
            self._log(run_id, {}, chunk, {}, step)
        for chunk in chunks(t, MAX_TAGS):
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
            self.log_artifact(run_id, str(path), parent_dir(artifact_file))

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

    # ----- what each level implements ----------------------------------------------------------------------------
    @abstractmethod
    def _start_run(self, experiment_id: str, run_name: str, tags: dict[str, str]) -> str: ...

    @abstractmethod
    def _resume_run(self, run_id: str) -> None: ...

    @abstractmethod
    def _end_run(self, run_id: str, status: str) -> None: ...

    @abstractmethod
    def _log(self, run_id: str, params: dict[str, str], metrics: dict[str, float], tags: dict[str, str],
             step: int) -> None: ...

    @abstractmethod
    def _log_history(self, run_id: str, key: str, values: list[float], first_step: int) -> None: ...

    @abstractmethod
    def _log_artifact(self, run_id: str, local_path: str, artifact_path: str | None) -> None: ...

    @abstractmethod
    def _log_artifacts(self, run_id: str, local_dir: str, artifact_path: str | None) -> None: ...


def _linked(
    runs: Iterable[tuple[str, Mapping[str, Any], Mapping[str, float]]], summary_run_id: str | None
) -> Iterator[tuple[str, Mapping[str, Any], Mapping[str, float]]]:
    """``runs`` with the tag that links each to its summary run (when there is one)."""
    for name, tags, metrics in runs:
        yield name, ({**tags, schema.EVALUATION_SUMMARY_RUN_ID: summary_run_id} if summary_run_id else tags), metrics

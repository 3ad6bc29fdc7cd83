"""The tracker interface the stages talk to. Stages never import ``mlflow`` themselves.

Public methods validate and shape the data (template method); subclasses implement the ``_``-prefixed writes
with their own MLflow API level. Reads (search, get) are shared and go through ``MlflowClient``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from xaitk_exp.errors import RunKilled, TrackingError
from xaitk_exp.schema import MODEL_DIR, logged_model_name
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
from xaitk_exp.tracking.lineage import DatasetRecord, ModelRef
from xaitk_exp.tracking.reads import StoreReader
from xaitk_exp.tracking.signals import install_sigterm, restore_sigterm
from xaitk_exp.tracking.stores import open_sqlite_store


class Tracker(StoreReader, ABC):
    """Writes runs to one MLflow tracking store. ``artifact_root`` places new experiments' artifacts."""

    level = "abstract"

    def __init__(self, uri: str, artifact_root: str | None = None, sqlite_journal: str = "wal") -> None:
        from mlflow import MlflowClient

        from xaitk_exp.tracking.stores import default_artifact_root

        self.uri = uri
        self.sqlite_journal = sqlite_journal
        self.artifact_root = artifact_root or default_artifact_root(uri)  # never ./mlruns in the working directory
        if "@" in uri.split("://", 1)[-1].split("/", 1)[0]:
            # MLflow prints "View run <name> at: <tracking URL>/#/..." on every fluent end_run, credentials included
            os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        self.client = (
            open_sqlite_store(uri, sqlite_journal) if uri.startswith("sqlite:") else MlflowClient(tracking_uri=uri)
        )
        self._experiments: dict[str, str] = {}
        self._sweep_experiments: dict[str, str | None] = {}

    def reopen_args(self) -> tuple[str, str, str | None, str]:
        """What :func:`xaitk_exp.tracking.make_tracker` needs to open the same tracker in another process."""
        return self.level, self.uri, self.artifact_root, self.sqlite_journal

    # ----- experiments -------------------------------------------------------------------------------------------
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
            run_id = self._start_run(experiment_id, run_name, all_tags)
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
        """A run's tags as strings, with ``mlflow.parentRunId`` (the given parent, else the sweep's run if any)."""
        all_tags = {k: self._scrub(stringify(v)) for k, v in (tags or {}).items()}
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
        return self._start_run(experiment_id, run_name, {k: self._scrub(stringify(v)) for k, v in (tags or {}).items()})

    def finish_run(self, run_id: str, status: str = "FINISHED") -> None:
        self._end_run(run_id, status)

    def _close(self, run_id: str, status: str, exc: BaseException | None) -> None:
        """Best effort: record the error, then the status; never mask the original exception."""
        try:
            if exc is not None:
                text = self._scrub("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
                self._log(run_id, {}, {}, {"error": self._scrub(short_error(exc))}, 0)
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

    def log_model(self, run_id: str, model: Any, input_example: Any) -> str:
        """The estimator as an MLflow sklearn model (skops format) in the run's ``sklearn-model/`` folder, and the
        same model as an MLflow 3 logged model produced by the run (the UI's Logged models column, the model's
        page). Returns the logged model's id."""
        from xaitk_exp.tracking.model_io import save_sklearn_model

        with tempfile.TemporaryDirectory() as tmp:
            path = save_sklearn_model(model, Path(tmp, MODEL_DIR), input_example)
            return self._log_model(run_id, model, input_example, str(path))

    def _log_model(self, run_id: str, model: Any, input_example: Any, saved_dir: str) -> str:
        self._log_artifacts(run_id, saved_dir, MODEL_DIR)
        return self._log_logged_model(run_id, saved_dir, logged_model_name(type(model).__name__))

    def _log_logged_model(self, run_id: str, saved_dir: str, name: str) -> str:
        """What ``mlflow.sklearn.log_model`` records besides files, through the client: a logged model ``name``
        with the run's params, as the run's output at step 0; the run's step-0 metrics linked to it; the files;
        READY (FAILED if a write fails)."""
        from mlflow.entities import LoggedModelOutput

        from xaitk_exp.tracking.lineage import link_step_metrics, logged_model_folder

        run = self.client.get_run(run_id)
        logged = self._create_logged_model(run.info.experiment_id, run_id, dict(run.data.params), name)
        try:
            self.client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
            link_step_metrics(self.client, run_id, logged.model_id)
            with tempfile.TemporaryDirectory() as tmp:
                folder = logged_model_folder(saved_dir, Path(tmp, MODEL_DIR), logged, run_id)
                self.client.log_model_artifacts(logged.model_id, str(folder))
        except BaseException:
            self._finalize_logged_model(logged.model_id, "FAILED")
            raise
        self._finalize_logged_model(logged.model_id, "READY")
        return logged.model_id

    def _create_logged_model(self, experiment_id: str, run_id: str, params: dict[str, str], name: str) -> Any:
        from mlflow.tracking.context.registry import resolve_tags

        return self.client.create_logged_model(
            experiment_id, name=name, source_run_id=run_id, tags=resolve_tags({}), params=params
        )

    def _finalize_logged_model(self, model_id: str, status: str) -> None:
        self.client.finalize_logged_model(model_id, status)

    # ----- lineage: dataset inputs, models as inputs, the registry, images -----------------------------------------
    def log_dataset(self, run_id: str, dataset: DatasetRecord, context: str) -> None:
        """The data the run used as an MLflow dataset input (name, digest, source; ``context`` as its context tag):
        the UI's Dataset column and ``dataset.name`` / ``dataset.digest`` / ``dataset.context`` filters."""
        self._log_dataset(run_id, dataset, context)

    def _log_dataset(self, run_id: str, dataset: DatasetRecord, context: str) -> None:
        self.client.log_inputs(run_id, datasets=[dataset.to_input(context)])

    def log_model_metrics(
        self,
        run_id: str,
        model_id: str,
        metrics: Mapping[str, float],
        dataset: DatasetRecord | None = None,
        step: int = 0,
    ) -> None:
        """Metrics of ``run_id`` that evaluate logged model ``model_id`` (on ``dataset``, already logged with
        :meth:`log_dataset`): the model becomes an input of the run, and the model's page lists the metrics."""
        self._log_model_metrics(run_id, model_id, {k: float(v) for k, v in metrics.items()}, dataset, step)

    def _log_model_metrics(
        self, run_id: str, model_id: str, metrics: dict[str, float], dataset: DatasetRecord | None, step: int
    ) -> None:
        from mlflow.entities import LoggedModelInput, Metric

        self.client.log_inputs(run_id, models=[LoggedModelInput(model_id)])
        now = int(time.time() * 1000)
        name, digest = (dataset.name, dataset.digest) if dataset is not None else (None, None)
        batch = [Metric(k, v, now, step, model_id=model_id, dataset_name=name, dataset_digest=digest, run_id=run_id)
                 for k, v in metrics.items()]
        for start in range(0, len(batch), MAX_METRICS):
            self.client.log_batch(run_id, metrics=batch[start : start + MAX_METRICS], synchronous=True)

    def register_model(self, model_id: str, run_id: str, name: str, alias: str | None = None) -> ModelRef:
        """Logged model ``model_id`` as a version of registered model ``name`` (created if missing); a version
        already made from this logged model is reused. ``alias`` then points at the version."""
        from xaitk_exp.tracking.lineage import _quote, model_id_of_version

        versions = self.client.search_model_versions(f"name = '{_quote(name)}'", max_results=1000)
        version = next((v for v in versions if model_id_of_version(v) == model_id), None)
        if version is None:
            version = self._register_model(model_id, run_id, name)
        if alias:
            self.client.set_registered_model_alias(name, alias, str(version.version))
        return ModelRef(name, str(version.version), run_id, model_id)

    def _register_model(self, model_id: str, run_id: str, name: str) -> Any:
        """The same client calls at every level. The version's source is the logged model's storage location (what
        ``models:/<model_id>`` resolves to): MLflow 3.17's registry resolves a ``models:/<model_id>`` source through
        the process-wide tracking URI, which the low level never sets."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        source = self.client.get_logged_model(model_id).artifact_location
        return self.client.create_model_version(name, source, run_id=run_id, model_id=model_id)

    def log_image(self, run_id: str, picture: str | Path, key: str, step: int = 0) -> None:
        """A picture file as an MLflow image under ``key`` (``images/<key>+step+...png`` and a thumbnail): the UI's
        image views show it and compare one key across runs."""
        from PIL import Image

        with Image.open(picture) as image:
            image.load()
            self._log_image(run_id, image, key, step)

    def _log_image(self, run_id: str, image: Any, key: str, step: int) -> None:
        self.client.log_image(run_id, image, key=key, step=step, synchronous=True)

    # ----- lineage reads -----------------------------------------------------------------------------------------
    def model_ref(self, uri: str, key: str = "model.uri") -> ModelRef | None:
        """The registered version (or logged model) a ``models:/`` URI names; None for ``runs:/`` URIs. An unknown
        name, version or alias is a one-line :class:`ConfigError` listing what exists."""
        from xaitk_exp.tracking.lineage import resolve_model_uri

        return resolve_model_uri(self.client, uri, key)

    def logged_model_of(self, run_id: str) -> str | None:
        """The id of the logged model train run ``run_id`` produced (None for runs recorded before there was one)."""
        from xaitk_exp.tracking.lineage import logged_model_of_run

        try:
            run = self.client.get_run(run_id)
        except Exception:
            return None
        return logged_model_of_run(self.client, run.info.experiment_id, run_id)

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



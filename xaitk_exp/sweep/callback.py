"""Sweep-wide work for ``xaitk-exp -m``: a Hydra callback (``hydra.callbacks.sweep`` in ``conf/config.yaml``).

``on_multirun_start`` (launcher process, before any job): opens the tracking store once (SQLite migrations), creates
the experiments every job writes to, opens the sweep's parent run and hands its id to every job as the override
``sweep_run_id=<id>``; then runs each upstream (train + evaluation) that several jobs share once, so that parallel
jobs reuse it instead of each training their own. ``on_job_start``/``on_job_end`` (job process): write
``sweep_job.json`` (overrides, status, runtime, error, run ids) into the job's folder. ``on_multirun_end``: the
summary in the parent run (``sweep_summary.json`` table + CSV + ``sweep_montage.png``), then the parent's status.

Hydra raises a failed job's exception before ``on_multirun_end``; :func:`finish_open_sweeps` (called by the
entry point on the way out) writes the summary then, so failed jobs are listed, not hidden.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from xaitk_exp import schema
from xaitk_exp.security.redact import redact_overrides
from xaitk_exp.sweep.jobs import (
    FINAL_EXPERIMENT,
    IN_PROCESS_LAUNCHER,
    STAGE_EXPERIMENTS,
    all_reused,
    job_configs,
    model_class,
    prepare_upstream,
    probe_configs,
)
from xaitk_exp.sweep.records import (
    JOB_OUTPUT,
    JOB_RECORD,
    QUIET_KEY,
    SWEEP_KEY,
    end_leaked_fluent_runs,
    job_output,
    job_value,
    read_job_records,
    read_json,
    write_record,
)
from xaitk_exp.sweep.shards import merge_shards, open_shards
from xaitk_exp.sweep.summary import default_metric, job_line, rank_rows, summary_rows, sweep_note, write_summary
from xaitk_exp.tracking.ui import run_url, ui_command

if TYPE_CHECKING:
    from xaitk_exp.tracking.tracker import Tracker

_OPEN: list[SweepCallback] = []  # sweeps of this process whose summary is not written yet
FAILED: list[str] = []  # one line per sweep of this process that ended FAILED (the entry point exits non-zero)
_JOB_STDOUT: list[Any] = []  # the console of a job process whose own lines go to its folder (see _quiet_job)


class SweepCallback(Callback):
    """Parent run, shared upstream, per-job records and the summary of one multirun."""

    def __init__(self) -> None:
        self.parent_run_id: str | None = None
        self._config: DictConfig | None = None
        self._tracker: Tracker | None = None
        self._shards: list[Any] = []  # sharded jobs' shared records, merged when they have ended

    def __getstate__(self) -> dict[str, Any]:  # shipped to job processes: only the id travels
        return {"parent_run_id": self.parent_run_id}

    def __setstate__(self, state: dict[str, Any]) -> None:
        SweepCallback.__init__(self)
        self.parent_run_id = state.get("parent_run_id")

    # ----- launcher process ------------------------------------------------------------------------------------
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from xaitk_exp.app import http_settings
        from xaitk_exp.settings.config import tracking_settings
        from xaitk_exp.tracking.stores import resolve_tracking

        http_settings(config)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # parallel jobs' bars interleave
        uri, artifact_root = resolve_tracking(config)
        from xaitk_exp.tracking.factory import make_tracker

        journal = tracking_settings(config).sqlite_journal
        search = _open_search(config)  # optuna sweeper: check the space, open or continue the study
        tracker = make_tracker("low", uri, artifact_root, journal)  # no fluent run stack in the launcher process
        jobs = job_configs(config)
        shared = jobs or (search.probes if search is not None else probe_configs(config))
        classes = {model_class(j) for _, j in shared} | {model_class(config)}
        for cls in sorted(c for c in classes if c):
            for stage in STAGE_EXPERIMENTS:
                tracker.experiment(schema.experiment_name(cls, stage))
        base_class = model_class(config) or "xaitk-exp"
        stage = search.stage if search is not None else str(config.stage)  # a study: its objective's stage
        exp_id = tracker.experiment(schema.experiment_name(base_class, FINAL_EXPERIMENT.get(stage, "Sweeps")))
        sweep_dir = str(Path(str(config.hydra.sweep.dir)).resolve())
        user_overrides = [o for o in config.hydra.overrides.task if not o.startswith(f"{SWEEP_KEY}=")]
        n_jobs = len(jobs) if jobs else int(config.hydra.sweeper.n_trials) if search is not None else "unknown"
        tags = {
            schema.RUN_TYPE: "sweep",
            "Sweep_dir": sweep_dir,
            "Sweep_overrides": " ".join(redact_overrides(user_overrides))[:5000],
            "Sweep_launcher": str(config.hydra.launcher.get("_target_", "")).rsplit(".", 1)[-1],
            "Sweep_jobs": n_jobs,
        }
        self.parent_run_id = _reopen(tracker, search.previous_parent if search is not None else None, tags)
        if self.parent_run_id is None:
            self.parent_run_id = tracker.start_run(exp_id, f"sweep {Path(sweep_dir).name}", tags)
        if search is not None:
            search.attach(self.parent_run_id, tracker)
        self._config, self._tracker = config, tracker
        _OPEN.append(self)
        with read_write(config.hydra.overrides.task):
            config.hydra.overrides.task.append(f"{SWEEP_KEY}={self.parent_run_id}")
            if not any(o.lstrip("+~").startswith("progress=") for o in user_overrides):
                config.hydra.overrides.task.append(f"{QUIET_KEY}=false")  # no progress bars from parallel jobs
        parent_exp = tracker.get_run(self.parent_run_id).info.experiment_id
        exp_name = tracker.client.get_experiment(parent_exp).name
        link = run_url(uri, parent_exp, self.parent_run_id)
        print(f"[sweep] parent run {self.parent_run_id} in '{exp_name}'" + (f": {link}" if link else ""))
        tracker.log(self.parent_run_id, tags={schema.NOTE: sweep_note(n_jobs, user_overrides, search)})
        if config.get("sweep", {}).get("prepare_upstream", True):
            upstream_dir = Path(sweep_dir) / "upstream"
            with job_output(upstream_dir):  # the shared stages' own lines go to their folder's output.txt
                prepared = prepare_upstream(shared, self.parent_run_id, upstream_dir, probes=not jobs,
                                            quiet=f"{QUIET_KEY}=false" in config.hydra.overrides.task)
            if prepared:
                print(f"[sweep] {prepared}")
        with job_output(Path(sweep_dir) / "upstream"):  # shards=N: the record the jobs share, opened once
            self._shards = open_shards(jobs, self.parent_run_id, tracker, Path(sweep_dir) / "upstream")
        lookup = bool((config.get("sweep") or {}).get("lookup_reused", True))
        if lookup and jobs and tags["Sweep_launcher"] != "BasicLauncher" and all_reused(jobs, tracker):
            # a relaunch with nothing left to compute: one process looks every job's runs up, no worker starts
            print(f"[sweep] all {len(jobs)} job(s) have FINISHED runs with the same config: looking them up here")
            with read_write(config.hydra), open_dict(config.hydra):
                config.hydra.launcher = {"_target_": IN_PROCESS_LAUNCHER}

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.finish(aborted=False)

    def finish(self, aborted: bool) -> None:
        """Write the summary into the parent run and close it: FINISHED when every job completed, FAILED when a
        job failed (listed with its error), KILLED when the sweep stopped before its jobs ended."""
        if self not in _OPEN:
            return
        _OPEN.remove(self)
        from xaitk_exp.errors import ConfigError

        config, tracker, parent = self._config, self._tracker, self.parent_run_id
        if config is None or tracker is None or parent is None:  # set together before the sweep is open
            return
        search = _search_of(config)
        merge_errors = merge_shards(self._shards, tracker, parent, Path(str(config.hydra.sweep.dir))) \
            if self._shards else []
        try:
            if search is not None:  # the study's trials (every launch of it), best trial and pictures
                rows = search.record(tracker, parent, Path(str(config.hydra.sweep.dir)))
            else:
                records = read_job_records(Path(str(config.hydra.sweep.dir)), parent)
                rows = summary_rows(tracker, records, parent)
                sweep_cfg = config.get("sweep") or {}
                # a saliency sweep: by a map's quality; shards hold shares of one record, not rivals
                metric = None if self._shards else (sweep_cfg.get("metric") or default_metric(rows))
                try:
                    rows = rank_rows(rows, metric, str(sweep_cfg.get("mode") or "auto"))
                except ConfigError as exc:  # the table is still worth having, unranked
                    print(f"xaitk-exp: warning: summary not ranked: {exc}", file=sys.stderr)
                write_summary(tracker, parent, rows, Path(str(config.hydra.sweep.dir)), sharded=bool(self._shards))
            failed = [r for r in rows if r["status"] == "FAILED"]
        except Exception as exc:  # never leave the parent RUNNING because the summary broke
            tracker.log(parent, tags={"error": f"summary failed: {type(exc).__name__}: {exc}"[:500]})
            print(f"xaitk-exp: warning: sweep summary failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed, rows = [], []
        # a study goes on past failed trials: it failed only when none of its trials completed
        study_failed = search is not None and bool(rows) and len(failed) == len(rows)
        launch_failed = search is not None and search.trials_run > 0 and search.trials_failed == search.trials_run
        if (failed and (search is None or study_failed)) or merge_errors:
            status = "FAILED"
            error = "; ".join([*([f"{len(failed)} of {len(rows)} job(s) failed: " + "; ".join(
                f"#{r['job']} ({r.get('overrides', '')}): {r['error']}" for r in failed)] if failed else []),
                *merge_errors])
            tracker.log(parent, tags={"error": error[:450]})
            FAILED.append(f"sweep {parent}: {error}"[:1000])
        else:
            status = "KILLED" if aborted else "FINISHED"
        tracker.finish_run(parent, status)
        what = "trial(s)" if search is not None else "job(s)"
        link = run_url(tracker.uri, tracker.get_run(parent).info.experiment_id, parent)
        print(f"[sweep] parent run {parent} {status}: {len(rows)} {what}, {len(failed)} failed"
              + (f": {link}" if link else ""))
        hint = ui_command(tracker.uri)
        if hint:
            print(f"View the runs: {hint}")
        if search is not None:
            from xaitk_exp.sweep.search import forget

            forget(config)
            if launch_failed and not aborted:  # every trial of this launch failed: say so in the exit code
                sys.exit(1)

    # ----- job process -----------------------------------------------------------------------------------------
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not _in_multirun(config):
            return
        end_leaked_fluent_runs()
        _quiet_job(Path(str(config.hydra.runtime.output_dir)))
        record = {
            "job": int(config.hydra.job.num),
            SWEEP_KEY: config.get(SWEEP_KEY),
            "overrides": redact_overrides(o for o in config.hydra.overrides.task if not _added(o)),
            "status": "RUNNING",
            "started": time.time(),
        }
        write_record(Path(str(config.hydra.runtime.output_dir)), record)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus

        if not _in_multirun(config):
            return
        folder = Path(str(config.hydra.runtime.output_dir))
        record = read_json(folder / JOB_RECORD) or {
            "job": int(config.hydra.job.num), SWEEP_KEY: config.get(SWEEP_KEY), "started": time.time()
        }
        record["runtime_s"] = round(time.time() - float(record["started"]), 3)
        value = job_value(job_return)
        if job_return.status == JobStatus.COMPLETED:
            record["status"] = "COMPLETED"
            record["runs"] = value if isinstance(value, dict) else {}
        else:
            record["status"] = "FAILED"
            text = str(value).strip().splitlines()
            record["error"] = f"{type(value).__name__}: {text[0] if text else ''}"[:500]
            compact_failure(job_return, value, record, folder)
        write_record(folder, record)
        end_leaked_fluent_runs()
        if record["status"] == "FAILED" and _reported(value, config):
            # the job's one line is printed, its record written, and the parent run ends FAILED naming it; Hydra's
            # basic sweeper would raise the error again once every job ended (a traceback, the other jobs' summary
            # lost on screen). The entry point exits non-zero after the summary (:data:`FAILED`).
            job_return.status, job_return.return_value = JobStatus.COMPLETED, None
        _loud_again()
        if config.get("sweep", {}).get("trial") is None:  # an optuna trial gets the study's own line
            print(job_line(record, folder), flush=True)


class JobFailed(CompactHydraException):
    """A sweep job's error in one line: what Hydra reports at the end of the sweep instead of the job's traceback
    (kept in the job's folder)."""


def compact_failure(job_return: Any, error: Any, record: dict[str, Any], folder: Path) -> None:
    """The failed job's traceback into ``traceback.txt`` in its folder; Hydra gets a one-line error to report."""
    if not isinstance(error, BaseException):
        return
    import traceback

    (folder / "traceback.txt").write_text("".join(traceback.format_exception(type(error), error, error.__traceback__)))
    if hasattr(job_return, "_return_value"):
        job_return._return_value = JobFailed(f"sweep job #{record.get('job')}: {record['error']} "
                                             f"(traceback: {folder / 'traceback.txt'})")


def _added(override: str) -> bool:
    """An override the sweep added to every job (not the user's)."""
    return override.startswith((f"{SWEEP_KEY}=", f"{QUIET_KEY}="))


def _quiet_job(folder: Path) -> None:
    """A job's own console lines (links, reuse notes, the UI hint) go to ``output.txt`` in its folder; the sweep
    prints one line per job instead (:func:`job_line`). Warnings and errors stay on stderr."""
    _loud_again()
    folder.mkdir(parents=True, exist_ok=True)
    _JOB_STDOUT.append(sys.stdout)
    sys.stdout = open(folder / JOB_OUTPUT, "a", buffering=1)  # noqa: SIM115 (closed by _loud_again)


def _loud_again() -> None:
    while _JOB_STDOUT:
        quiet, sys.stdout = sys.stdout, _JOB_STDOUT.pop()
        quiet.close()


def _reported(error: Any, config: DictConfig) -> bool:
    """A job error already reported in one line (bad input, a dead server, a full disk) in a basic sweep."""
    from xaitk_exp.errors import XaitkExpError

    sweeper = str(config.hydra.get("sweeper", {}).get("_target_", ""))
    return isinstance(error, XaitkExpError) and sweeper.endswith("BasicSweeper")


def _in_multirun(config: DictConfig) -> bool:
    from hydra.types import RunMode

    return config.hydra.get("mode") == RunMode.MULTIRUN


def _open_search(config: DictConfig) -> Any:
    """The optuna sweeper's study, opened before the parent run; a bad space or objective exits with one line."""
    from xaitk_exp.sweep.search import is_optuna

    if not is_optuna(config):
        return None
    from hydra.core.plugins import Plugins

    from hydra_plugins.xaitk_exp_optuna.optuna_sweeper import OptunaSweeper
    from xaitk_exp.errors import XaitkExpError
    from xaitk_exp.sweep.search import open_search

    # an editable install's hydra_plugins portion is invisible to Hydra's pkgutil scan: register the class itself
    Plugins.instance().register(OptunaSweeper)

    try:
        return open_search(config)
    except XaitkExpError as exc:
        print(f"xaitk-exp: error: {exc}", file=sys.stderr)
        sys.exit(2)


def _search_of(config: DictConfig | None) -> Any:
    from xaitk_exp.sweep.search import active, is_optuna

    return active(config) if config is not None and is_optuna(config) else None


def _reopen(tracker: Tracker, run_id: str | None, tags: dict[str, Any]) -> str | None:
    """Reopen a continued study's parent run (RUNNING again, this launch's tags); None if it is gone."""
    if not run_id:
        return None
    try:
        run = tracker.get_run(run_id)
    except Exception:
        return None
    if run.info.lifecycle_stage != "active":
        return None
    tracker.client.update_run(run_id, status="RUNNING")
    tracker.log(run_id, tags=tags)
    return run_id


def finish_open_sweeps() -> None:
    """Summaries of sweeps that Hydra aborted (a failed job raises before ``on_multirun_end``, Ctrl-C)."""
    for callback in list(_OPEN):
        callback.finish(aborted=True)


"""Optuna studies for ``xaitk-exp -m hydra/sweeper=optuna``: open or continue the study, run its trials through
Hydra's launcher (ask and tell), turn each job's runs into its objective value, and record the study in the sweep's
parent run when it ends.

One :class:`Search` per multirun, in the launcher process: the sweep callback opens it before the parent run (so a
bad space is one line and a continued study reopens its parent), the sweeper runs it, the callback finishes it.
Optuna is imported here only, and only once the optuna sweeper is chosen.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.utils import JobStatus
from omegaconf import DictConfig, OmegaConf

from xaitk_exp.errors import ConfigError
from xaitk_exp.sweep.jobs import compose_probes
from xaitk_exp.sweep.records import JOB_RECORD, QUIET_KEY, SWEEP_KEY, job_value, read_json
from xaitk_exp.sweep.space import Param, check_objectives, directions, objectives, parse_space
from xaitk_exp.sweep.study import open_study, resolve_storage, sweep_dir_of
from xaitk_exp.sweep.summary import summary_rows, write_summary
from xaitk_exp.viz.study import study_pictures

if TYPE_CHECKING:
    from xaitk_exp.tracking.tracker import Tracker

TRIAL_KEY = "sweep.trial"
PARENT_ATTR = "parent_run_id"
#: parameter importances need a few finished trials to mean anything
_ACTIVE: dict[str, Search] = {}  # sweep dir -> the search of this process


def is_optuna(config: DictConfig) -> bool:
    return str(OmegaConf.select(config, "hydra.sweeper._target_", default="")).endswith(".OptunaSweeper")


@dataclass
class Search:
    """A study and what its trials need: the fixed overrides, the space, the objectives and their directions."""

    config: DictConfig
    fixed: list[str]
    space: list[Param]
    objectives: list[str]
    directions: list[str]
    storage: str
    study: Any
    probes: list[tuple[list[str], DictConfig]] = field(default_factory=list)
    stage: str = "all"  #: the last stage each trial runs: the last one its objectives need
    parent_run_id: str | None = None
    tracker: Tracker | None = None
    trials_run: int = 0
    trials_failed: int = 0  #: of this launch
    stopped: bool = False  #: the sampler ended the study (e.g. BruteForceSampler: every point tried)

    @property
    def previous_parent(self) -> str | None:
        return self.study.user_attrs.get(PARENT_ATTR)

    def attach(self, parent_run_id: str, tracker: Tracker) -> None:
        """Remember the parent run in the study (a continued study reopens it) and the tracker to read runs."""
        self.parent_run_id, self.tracker = parent_run_id, tracker
        self.study.set_user_attr(PARENT_ATTR, parent_run_id)

    # ----- running trials ----------------------------------------------------------------------------------------
    def run(self, launcher: Any, arguments: list[str], n_trials: int, n_jobs: int, job_idx: int = 0) -> int:
        """Ask ``n_trials`` trials, ``n_jobs`` at a time, launch each batch, tell each result. Returns job_idx."""
        from optuna.trial import TrialState

        fixed = [a for a in self.fixed if not a.startswith(f"{SWEEP_KEY}=")]
        # the callback's parent run id, and progress=false where the user did not set it
        fixed += [a for a in arguments if a.startswith((f"{SWEEP_KEY}=", f"{QUIET_KEY}="))]
        dists = {p.key: p.distribution() for p in self.space}
        done = 0
        while done < n_trials:
            batch = [self.study.ask(dists) for _ in range(min(n_jobs, n_trials - done))]
            told: set[int] = set()
            try:
                overrides = [[*fixed, *(p.override(t.params[p.key]) for p in self.space), f"{TRIAL_KEY}={t.number}"]
                             for t in batch]
                started = time.time()
                returns = launcher.launch(overrides, initial_job_idx=job_idx)
                job_idx += len(returns)
                for trial, ov, ret in zip(batch, overrides, returns, strict=True):
                    self._tell(trial, ov, ret, time.time() - started)
                    told.add(trial.number)
            finally:  # interrupted: no trial stays RUNNING in the study
                for trial in batch:
                    if trial.number not in told:
                        try:
                            trial.set_user_attr("error", "interrupted before the trial ended")
                            self._tell_study(trial, state=TrialState.FAIL)
                        except Exception as exc:  # the storage itself failed: say so, keep the first error
                            print(f"xaitk-exp: warning: trial {trial.number} left open: {exc}", file=sys.stderr)
            done += len(batch)
            self.trials_run += len(batch)
            if self.stopped and done < n_trials:
                print(f"[search] the sampler ended the study after {done} of {n_trials} trial(s)")
                break
        return job_idx

    def _tell_study(self, trial: Any, values: Any = None, state: Any = None) -> None:
        """``study.tell``; a sampler asking to stop the study (``Study.stop``, meant for ``optimize``) ends the
        loop after this batch instead (the trial is stored before the sampler is asked)."""
        try:
            self.study.tell(trial, values, state=state)
        except RuntimeError as exc:
            if "Study.stop" not in str(exc):
                raise
            self.stopped = True

    def _tell(self, trial: Any, overrides: list[str], ret: Any, elapsed: float) -> None:
        from optuna.trial import TrialState

        record = _job_record(ret, trial.number, overrides, elapsed)
        values, error = None, record.get("error", "")
        if ret.status == JobStatus.COMPLETED:
            values, error = self.values(record)
        trial.set_user_attr("record", json.loads(json.dumps(record, default=str)))
        if values is None:
            trial.set_user_attr("error", error[:500])
            self._tell_study(trial, state=TrialState.FAIL)
            self.trials_failed += 1
            print(f"[search] trial {trial.number} FAILED: {error}", file=sys.stderr)
        else:
            self._tell_study(trial, values if len(values) > 1 else values[0])
            shown = ", ".join(f"{n}={v:.4g}" for n, v in zip(self.objectives, values, strict=True))
            print(f"[search] trial {trial.number}: {shown}  ({' '.join(_searched(overrides, self.space))})")

    def values(self, record: dict[str, Any]) -> tuple[list[float] | None, str]:
        """The objective values of a completed job (via the sweep summary's columns), or None and why not."""
        try:
            row = summary_rows(self._reader(), [record], self.parent_run_id or "")[0]
        except Exception as exc:  # a run the job named cannot be read: the trial failed, the study goes on
            return None, f"its runs could not be read: {type(exc).__name__}: {exc}"
        values: list[Any] = [row.get(name) for name in self.objectives]
        missing = [n for n, v in zip(self.objectives, values, strict=True)
                   if not isinstance(v, (int, float)) or not math.isfinite(v)]
        if missing:
            return None, f"no finite {', '.join(missing)} in the job's runs"
        return [float(v) for v in values], ""

    def _reader(self) -> Tracker:
        """The tracker that reads the trials' runs (the callback's; one of our own without the sweep callback)."""
        if self.tracker is None:
            from xaitk_exp.settings.config import tracking_settings
            from xaitk_exp.tracking.factory import make_tracker
            from xaitk_exp.tracking.stores import resolve_tracking

            uri, artifact_root = resolve_tracking(self.config)
            journal = tracking_settings(self.config).sqlite_journal
            self.tracker = make_tracker("low", uri, artifact_root, journal)
        return self.tracker

    # ----- the end of the study -----------------------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        """The trials table: one row per trial of the study (every launch), with its objective values and rank."""
        from optuna.trial import TrialState

        rows = []
        for trial in self.study.get_trials(deepcopy=False):
            record = dict(trial.user_attrs.get("record") or {"job": trial.number, "status": "FAILED"})
            record["job"] = trial.number
            try:
                row = summary_rows(self._reader(), [record], self.parent_run_id or "")[0]
            except Exception as exc:
                row = {"job": trial.number, "status": "FAILED", "error": f"{type(exc).__name__}: {exc}"[:500]}
            row["trial"] = trial.number
            if trial.state == TrialState.FAIL:
                row["status"], row["error"] = "FAILED", row.get("error") or trial.user_attrs.get("error", "")
            elif trial.state == TrialState.RUNNING:
                row["status"] = "UNFINISHED"
            for key, value in trial.params.items():
                row[f"param.{key}"] = value
            rows.append(row)
        complete = [r for r, t in zip(rows, self.study.get_trials(deepcopy=False), strict=True)
                    if t.state == TrialState.COMPLETE]
        first, sign = self.objectives[0], (1.0 if self.directions[0] == "minimize" else -1.0)
        ranked = sorted(complete, key=lambda r: (sign * float(r[first]), r["trial"]))
        for position, r in enumerate(ranked, start=1):
            r["rank"], r["ranked_by"] = position, f"{first} ({self.directions[0][:3]})"
        if len(self.objectives) > 1:
            pareto = {t.number for t in self.study.best_trials}
            for r in rows:
                r["pareto"] = r["trial"] in pareto
        return ranked + [r for r in rows if r not in ranked]

    def best(self) -> tuple[dict[str, float], dict[str, str]]:
        """Metrics and tags naming the best trial (for several objectives: the Pareto trial best on the first)."""
        from optuna.trial import TrialState

        if not any(t.state == TrialState.COMPLETE for t in self.study.get_trials(deepcopy=False)):
            return {}, {}
        if len(self.objectives) == 1:
            best = self.study.best_trial
            metrics = {"Best_value": float(best.value)}
        else:
            sign = 1.0 if self.directions[0] == "minimize" else -1.0
            front = self.study.best_trials
            best = min(front, key=lambda t: (sign * t.values[0], t.number))
            metrics = {f"Best_value.{n}": float(v) for n, v in zip(self.objectives, best.values, strict=True)}
            metrics["Pareto_trials"] = float(len(front))
        tags = {"Best_trial": str(best.number), **{f"Best.{k}": str(v) for k, v in best.params.items()}}
        return metrics, tags

    def pictures(self, folder: Path) -> list[Path]:
        """Optimisation history (per objective), parameter importances (enough trials), Pareto front (several)."""
        return study_pictures(self.study, self.objectives, folder)

    def record(self, tracker: Tracker, parent: str, sweep_dir: Path) -> list[dict[str, Any]]:
        """The study's trials table, best trial and pictures in the parent run; returns the table's rows."""
        from optuna.trial import TrialState

        self.tracker = tracker
        rows = self.rows()
        write_summary(tracker, parent, rows, sweep_dir)
        metrics, tags = self.best()
        states = [t.state for t in self.study.get_trials(deepcopy=False)]
        metrics.update(trials=float(len(states)), trials_complete=float(states.count(TrialState.COMPLETE)),
                       trials_failed=float(states.count(TrialState.FAIL)))
        tags.update(Sweep_sweeper="optuna", Sweep_study=self.study.study_name,
                    Sweep_objective=",".join(self.objectives), Sweep_direction=",".join(self.directions))
        tracker.log(parent, metrics=metrics, tags=tags)
        with tempfile.TemporaryDirectory() as tmp:
            for path in self.pictures(Path(tmp, "study")):
                tracker.log_artifact(parent, str(path), "study")
                (sweep_dir / "study").mkdir(parents=True, exist_ok=True)
                (sweep_dir / "study" / path.name).write_bytes(path.read_bytes())
        if tags.get("Best_trial"):
            shown = ", ".join(f"{k}={v}" for k, v in metrics.items() if k.startswith("Best_value"))
            print(f"[search] best trial {tags['Best_trial']} of {len(states)}: {shown}; "
                  + " ".join(f"{k[5:]}={v}" for k, v in tags.items() if k.startswith("Best.")))
        return rows


# ----- opening ---------------------------------------------------------------------------------------------------------
def open_search(config: DictConfig) -> Search:
    """Check the space and the objective (one-line :class:`ConfigError`), then open or continue the study."""
    loader = GlobalHydra.instance().config_loader()
    sweeper = config.hydra.sweeper
    arguments = [a for a in config.hydra.overrides.task if not a.startswith(f"{SWEEP_KEY}=")]
    fixed, space = parse_space(arguments, sweeper.get("params"), loader)
    if not space:
        raise ConfigError("hydra.sweeper.params", None, "a search space: e.g. 'model.learning_rate_init=tag(log, "
                          "interval(0.001, 0.1))' on the command line or hydra.sweeper.params")
    for key in ("n_trials", "n_jobs"):
        value = sweeper.get(key)
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"hydra.sweeper.{key}", value, "a whole number >= 1")
    probes = compose_probes(config, loader, fixed, space)
    names = objectives(probes[0][1].get("sweep"))
    stage = objective_stage(names, str(probes[0][1].get("stage")))
    if stage != str(probes[0][1].get("stage")):  # e.g. an evaluation metric: train and evaluate, no saliency maps
        fixed = [*fixed, f"sweep.stop_after={stage}"]
        probes = compose_probes(config, loader, fixed, space)
    for _, job in probes:
        check_objectives(names, job)
    dirs = directions(names, sweeper.get("direction"))
    storage = resolve_storage(config, sweeper.get("storage"))
    study = open_study(config, storage, sweeper, names, dirs)
    search = Search(config, fixed, space, names, dirs, storage, study, probes, stage=stage)
    _ACTIVE[sweep_dir_of(config)] = search
    return search


#: the stages of ``stage=all``, in order; a trial runs up to the last one its objectives read
PIPELINE = ("train", "evaluation", "saliency")


def objective_stage(names: list[str], stage: str) -> str:
    """The last stage a trial runs: for ``stage=all``, the last stage whose metrics the objectives read (``train``
    or ``evaluation`` spare every trial its saliency maps: ``sweep.stop_after``); any other stage as given."""
    needed = [n.split(".", 1)[0] for n in names]
    if stage != "all" or not needed or any(s not in PIPELINE for s in needed):
        return stage
    last = max(PIPELINE.index(s) for s in needed)
    return "all" if PIPELINE[last] == "saliency" else PIPELINE[last]


def active(config: DictConfig) -> Search | None:
    """The search the callback opened for this multirun, if any."""
    return _ACTIVE.get(sweep_dir_of(config))


def forget(config: DictConfig) -> None:
    _ACTIVE.pop(sweep_dir_of(config), None)




def _job_record(ret: Any, number: int, overrides: list[str], elapsed: float) -> dict[str, Any]:
    """The job's ``sweep_job.json`` (written by the sweep callback in the job's folder), else one made from ``ret``."""
    folder = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir", default=None) if ret.hydra_cfg else None
    record = read_json(Path(str(folder)) / JOB_RECORD) if folder else None
    if record is None:
        record = {"overrides": [o for o in overrides if not o.startswith(f"{SWEEP_KEY}=")],
                  "runtime_s": round(elapsed, 3)}
        if ret.status == JobStatus.COMPLETED:
            value = job_value(ret)
            record.update(status="COMPLETED", runs=value if isinstance(value, dict) else {})
        else:
            value = job_value(ret)
            text = str(value).strip().splitlines()
            record.update(status="FAILED", error=f"{type(value).__name__}: {text[0] if text else ''}"[:500])
    record["job"] = number
    added = (f"{TRIAL_KEY}=", "sweep.stop_after=")  # the sweeper's, not the user's
    record["overrides"] = [o for o in record.get("overrides") or [] if not o.startswith(added)]
    return record




def _searched(overrides: list[str], space: list[Param]) -> list[str]:
    keys = {f"{p.prefix}{p.key}" for p in space}
    return [o for o in overrides if o.split("=", 1)[0] in keys]

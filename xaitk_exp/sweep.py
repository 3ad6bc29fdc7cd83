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

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from xaitk_exp.config import redact_overrides

SWEEP_KEY = "sweep_run_id"
JOB_RECORD = "sweep_job.json"
SUMMARY_TABLE = "sweep_summary.json"
SUMMARY_CSV = "sweep_summary.csv"
MONTAGE = "sweep_montage.png"
STAGE_EXPERIMENTS = ("Train", "Evaluation", "Saliency Map Generation")
#: the experiment holding a stage's last runs: the sweep's parent goes there so MLflow nests them under it
FINAL_EXPERIMENT = {"all": "Saliency Map Generation", "saliency": "Saliency Map Generation",
                    "evaluation": "Evaluation", "train": "Train"}
#: the stages a job's stage runs before its own, run once per distinct config before the jobs start (stage=saliency
#: only looks its upstream up, so nothing is prepared for it)
UPSTREAM = {"all": ("train", "evaluation"), "evaluation": ("train",)}
MONTAGE_MAX_IMAGES = 12

_OPEN: list[SweepCallback] = []  # sweeps of this process whose summary is not written yet


class SweepCallback(Callback):
    """Parent run, shared upstream, per-job records and the summary of one multirun."""

    def __init__(self) -> None:
        self.parent_run_id: str | None = None
        self._config: DictConfig | None = None
        self._tracker: Any = None

    def __getstate__(self) -> dict[str, Any]:  # shipped to job processes: only the id travels
        return {"parent_run_id": self.parent_run_id}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()
        self.parent_run_id = state.get("parent_run_id")

    # ----- launcher process ------------------------------------------------------------------------------------
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from xaitk_exp.cli import _http_settings
        from xaitk_exp.config import resolve_tracking

        _http_settings(config)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # parallel jobs' bars interleave
        uri, artifact_root = resolve_tracking(config)
        from xaitk_exp.tracking import make_tracker

        journal = str(config.tracking.get("sqlite_journal", "wal"))
        tracker = make_tracker("low", uri, artifact_root, journal)  # no fluent run stack in the launcher process
        jobs = _job_configs(config)
        classes = {_model_class(j) for _, j in jobs} | {_model_class(config)}
        for cls in sorted(c for c in classes if c):
            for stage in STAGE_EXPERIMENTS:
                tracker.experiment(f"{cls} - {stage}")
        base_class = _model_class(config) or "xaitk-exp"
        exp_id = tracker.experiment(f"{base_class} - {FINAL_EXPERIMENT.get(str(config.stage), 'Sweeps')}")
        sweep_dir = str(Path(str(config.hydra.sweep.dir)).resolve())
        user_overrides = [o for o in config.hydra.overrides.task if not o.startswith(f"{SWEEP_KEY}=")]
        tags = {
            "Run_type": "sweep",
            "Sweep_dir": sweep_dir,
            "Sweep_overrides": " ".join(redact_overrides(user_overrides))[:5000],
            "Sweep_launcher": str(config.hydra.launcher.get("_target_", "")).rsplit(".", 1)[-1],
            "Sweep_jobs": len(jobs) if jobs else "unknown",
        }
        self.parent_run_id = tracker.start_run(exp_id, f"sweep {Path(sweep_dir).name}", tags)
        self._config, self._tracker = config, tracker
        _OPEN.append(self)
        with read_write(config.hydra.overrides.task):
            config.hydra.overrides.task.append(f"{SWEEP_KEY}={self.parent_run_id}")
        print(f"[sweep] parent run {self.parent_run_id} in '{tracker.client.get_experiment(exp_id).name}'")
        if config.get("sweep", {}).get("prepare_upstream", True):
            _prepare_upstream(jobs, self.parent_run_id, Path(sweep_dir) / "upstream")

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
        try:
            records = read_job_records(Path(str(config.hydra.sweep.dir)), parent)
            rows = summary_rows(tracker, records, parent)
            sweep_cfg = config.get("sweep") or {}
            try:
                rows = rank_rows(rows, sweep_cfg.get("metric"), str(sweep_cfg.get("mode") or "auto"))
            except ConfigError as exc:  # the table is still worth having, unranked
                print(f"xaitk-exp: warning: summary not ranked: {exc}", file=sys.stderr)
            write_summary(tracker, parent, rows, Path(str(config.hydra.sweep.dir)))
            failed = [r for r in rows if r["status"] == "FAILED"]
        except Exception as exc:  # never leave the parent RUNNING because the summary broke
            tracker.log(parent, tags={"error": f"summary failed: {type(exc).__name__}: {exc}"[:500]})
            print(f"xaitk-exp: warning: sweep summary failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed, rows = [], []
        if failed:
            status = "FAILED"
            tracker.log(parent, tags={"error": f"{len(failed)} of {len(rows)} job(s) failed: "
                                               + "; ".join(f"#{r['job']}: {r['error']}" for r in failed)[:450]})
        else:
            status = "KILLED" if aborted else "FINISHED"
        tracker.finish_run(parent, status)
        print(f"[sweep] parent run {parent} {status}: {len(rows)} job(s), {len(failed)} failed")

    # ----- job process -----------------------------------------------------------------------------------------
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not _in_multirun(config):
            return
        _end_leaked_fluent_runs()
        record = {
            "job": int(config.hydra.job.num),
            SWEEP_KEY: config.get(SWEEP_KEY),
            "overrides": redact_overrides(o for o in config.hydra.overrides.task if not o.startswith(f"{SWEEP_KEY}=")),
            "status": "RUNNING",
            "started": time.time(),
        }
        _write_record(Path(str(config.hydra.runtime.output_dir)), record)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus

        if not _in_multirun(config):
            return
        folder = Path(str(config.hydra.runtime.output_dir))
        record = _read_json(folder / JOB_RECORD) or {
            "job": int(config.hydra.job.num), SWEEP_KEY: config.get(SWEEP_KEY), "started": time.time()
        }
        record["runtime_s"] = round(time.time() - float(record["started"]), 3)
        value = job_return._return_value
        if job_return.status == JobStatus.COMPLETED:
            record["status"] = "COMPLETED"
            record["runs"] = value if isinstance(value, dict) else {}
        else:
            record["status"] = "FAILED"
            text = str(value).strip().splitlines()
            record["error"] = f"{type(value).__name__}: {text[0] if text else ''}"[:500]
        _write_record(folder, record)
        _end_leaked_fluent_runs()


def _in_multirun(config: DictConfig) -> bool:
    from hydra.types import RunMode

    return config.hydra.get("mode") == RunMode.MULTIRUN


def finish_open_sweeps() -> None:
    """Summaries of sweeps that Hydra aborted (a failed job raises before ``on_multirun_end``, Ctrl-C)."""
    for callback in list(_OPEN):
        callback.finish(aborted=True)


def job_result(ctx: Any) -> dict[str, Any]:
    """What a job hands back to its sweep (kept small: it crosses process boundaries)."""
    return {
        "train_run_id": ctx.train_run_id,
        "evaluation_run_id": ctx.evaluation_run_id,
        "saliency_run_ids": list(ctx.results.get("saliency_run_ids") or []),
        "reproduce_run_id": ctx.results.get("reproduce_run_id"),
    }


# ----- before the jobs ---------------------------------------------------------------------------------------------
def _model_class(cfg: DictConfig) -> str | None:
    target = OmegaConf.select(cfg, "model._target_", default=None)
    return str(target).rsplit(".", 1)[-1] if target and not OmegaConf.select(cfg, "model.uri") else None


def _job_configs(config: DictConfig) -> list[tuple[list[str], DictConfig]]:
    """Every job's overrides and composed config, as Hydra's basic sweeper will build them ([] for other sweepers)."""
    if not str(config.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return []
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    loader = GlobalHydra.instance().config_loader()
    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(params + list(config.hydra.overrides.task))
    out = []
    for batch in BasicSweeper.split_arguments(parsed, None):
        for overrides in batch:
            job = loader.load_sweep_config(config, list(overrides))
            with read_write(job), open_dict(job):
                del job["hydra"]
            out.append((list(overrides), job))
    return out


def _prepare_upstream(jobs: list[tuple[list[str], DictConfig]], parent: str, output_dir: Path) -> None:
    """Run once each upstream (train, evaluation) that two or more jobs share; the jobs then reuse it."""
    from xaitk_exp.stages import Context

    groups: dict[tuple, list[tuple[list[str], DictConfig]]] = {}
    for overrides, job in jobs:
        upstream = UPSTREAM.get(str(job.stage))
        if upstream is None:
            continue
        key = (upstream, Context(cfg=job, tracker=None, output_dir=output_dir).hash_for(upstream[-1]),
               str(job.get("train_run_id")), str(job.get("evaluation_run_id")), str(job.tracking.get("uri")))
        groups.setdefault(key, []).append((overrides, job))
    for (upstream, *_), members in groups.items():
        if len(members) < 2:
            continue
        overrides, job = next(((o, j) for o, j in members if _valid(j)), members[0])
        print(f"[sweep] {len(members)} jobs share one {' + '.join(upstream)} upstream: running it once first")
        from xaitk_exp.cli import run
        from xaitk_exp.stages import STAGES

        with open_dict(job):
            job.stage, job[SWEEP_KEY] = upstream[0], parent
        try:
            ctx = run(job, [*overrides, f"stage={upstream[0]}"], output_dir)
            for stage in upstream[1:]:  # same context: the model stays in memory
                STAGES[stage](ctx)
        except Exception as exc:  # each job then meets (and records) the error itself
            print(f"xaitk-exp: warning: shared upstream failed ({type(exc).__name__}: {exc})", file=sys.stderr)


def _valid(job: DictConfig) -> bool:
    from xaitk_exp.config import validate
    from xaitk_exp.errors import XaitkExpError

    try:
        validate(job)
    except XaitkExpError:
        return False
    return True


# ----- job records -------------------------------------------------------------------------------------------------
def _write_record(folder: Path, record: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{JOB_RECORD}.tmp"
    tmp.write_text(json.dumps(record, indent=2, default=str))
    tmp.replace(folder / JOB_RECORD)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_job_records(sweep_dir: Path, sweep_run_id: str | None = None) -> list[dict[str, Any]]:
    """The ``sweep_job.json`` of every job under ``sweep_dir`` (of sweep ``sweep_run_id`` only: two sweeps started
    in the same second share a folder), by job number."""
    records = [r for p in sweep_dir.rglob(JOB_RECORD) if (r := _read_json(p)) is not None]
    records = [r for r in records if sweep_run_id is None or r.get(SWEEP_KEY) == sweep_run_id]
    return sorted(records, key=lambda r: int(r.get("job", 0)))


def _end_leaked_fluent_runs() -> None:
    """The joblib launcher reuses worker processes: close any fluent run a previous job left on this thread."""
    mlflow = sys.modules.get("mlflow")
    if mlflow is None:
        return
    while mlflow.active_run() is not None:
        mlflow.end_run(status="KILLED")


# ----- the summary -------------------------------------------------------------------------------------------------
def summary_rows(tracker: Any, records: list[dict[str, Any]], parent: str) -> list[dict[str, Any]]:
    """One row per job: number, overrides, status, runtime, error and the key metrics of its runs.

    Status: ``FINISHED`` (new runs), ``REUSED`` (every run it used FINISHED earlier with the same config),
    ``FAILED`` (with ``error``), ``UNFINISHED`` (started, never ended).
    """
    rows = []
    for rec in records:
        row: dict[str, Any] = {
            "job": int(rec.get("job", 0)),
            "overrides": " ".join(rec.get("overrides") or []),
            "status": {"COMPLETED": "FINISHED", "RUNNING": "UNFINISHED"}.get(rec.get("status"), rec.get("status")),
            "runtime_s": rec.get("runtime_s"),
            "error": rec.get("error", ""),
        }
        runs = rec.get("runs") or {}
        stage_runs = {
            "train": [runs.get("train_run_id")],
            "evaluation": [runs.get("evaluation_run_id")],
            "saliency": list(runs.get("saliency_run_ids") or []),
        }
        fetched = {k: [tracker.get_run(i) for i in ids if i] for k, ids in stage_runs.items()}
        for stage in ("train", "evaluation"):
            for run in fetched[stage]:
                for key, value in sorted(run.data.metrics.items()):
                    if not key.startswith(("Saliency/", "reproduced_")):
                        row[f"{stage}.{key}"] = value
        row.update(_saliency_metrics(fetched["saliency"]))
        final = fetched["saliency"] or fetched["evaluation"] or fetched["train"]
        if row["status"] == "FINISHED" and final and all(r.data.tags.get("Sweep_run_id") != parent for r in final):
            row["status"] = "REUSED"
        if fetched["saliency"]:
            row["algorithm"] = fetched["saliency"][0].data.tags.get("Saliency_algorithm", "")
        row["saliency_run_ids"] = ",".join(r.info.run_id for r in fetched["saliency"])
        rows.append(row)
    return rows


def _saliency_metrics(runs: list[Any]) -> dict[str, float]:
    """Mean of every metric over the job's saliency runs (per algorithm via ``xaitk_exp.metrics.summary`` when
    it is there: means and spreads of the quality metrics)."""
    import numpy as np

    out: dict[str, float] = {}
    if not runs:
        return out
    keys = sorted({k for r in runs for k in r.data.metrics if not k.startswith("reproduced_")})
    for key in keys:
        vals = [r.data.metrics[key] for r in runs if key in r.data.metrics]
        out[f"saliency.{key}"] = float(np.mean(vals))
    try:
        from xaitk_exp.metrics.summary import aggregate
    except ImportError:
        return out
    for row in aggregate(runs)[:1]:
        for key, value in row.items():
            if key.endswith(("_mean", "_std")) and isinstance(value, (int, float)):
                base = key[: -len("_mean")] if key.endswith("_mean") else key
                out[f"saliency.{base}"] = float(value)
    return out


def rank_rows(rows: list[dict[str, Any]], metric: str | None, mode: str = "auto") -> list[dict[str, Any]]:
    """Rows best first by ``metric`` (a column, or a column's last part such as ``Deletion_AUC``); rows without
    it (failed jobs among them) last. ``mode``: ``max``, ``min`` or ``auto`` (the metric's known direction)."""
    from xaitk_exp.errors import ConfigError

    if not metric:
        return rows
    if mode not in ("auto", "max", "min"):
        raise ConfigError("sweep.mode", mode, "one of auto, max, min")
    columns = sorted({k for r in rows for k in r})
    column = metric if metric in columns else next((c for c in columns if c.split(".", 1)[-1] == metric), None)
    if column is None:
        numeric = [c for c in columns if any(isinstance(r.get(c), float) for r in rows)]
        raise ConfigError("sweep.metric", metric, f"a summary column: {', '.join(numeric) or 'none recorded'}")
    if mode == "auto":
        try:
            from xaitk_exp.metrics.summary import DIRECTIONS
        except ImportError:
            DIRECTIONS = {}
        mode = "min" if DIRECTIONS.get(column.split(".", 1)[-1], 1) < 0 else "max"
    sign = -1.0 if mode == "max" else 1.0
    has = [r for r in rows if isinstance(r.get(column), (int, float))]
    ranked = sorted(has, key=lambda r: (sign * float(r[column]), r["job"]))
    for position, r in enumerate(ranked, start=1):
        r["rank"] = position
        r["ranked_by"] = f"{column} ({mode})"
    return ranked + [r for r in rows if r not in has]


def write_summary(tracker: Any, parent: str, rows: list[dict[str, Any]], sweep_dir: Path) -> None:
    """The table (MLflow table artifact + CSV, also in ``sweep_dir``), the montage and counts in the parent run."""
    import csv
    import tempfile

    first = ["rank", "job", "status", "overrides", "algorithm", "runtime_s", "error"]
    columns = [c for c in first if any(c in r for r in rows)]
    columns += sorted({k for r in rows for k in r} - set(columns) - {"saliency_run_ids", "ranked_by"})
    columns += ["saliency_run_ids"]
    table = {c: [r.get(c, "") if r.get(c) is not None else "" for r in rows] for c in columns}
    if rows:
        tracker.log_table(parent, table, SUMMARY_TABLE)
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp, SUMMARY_CSV)
        with csv_path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(columns)
            writer.writerows([[table[c][i] for c in columns] for i in range(len(rows))])
        tracker.log_artifact(parent, str(csv_path))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / SUMMARY_CSV).write_text(csv_path.read_text())
        montage = sweep_montage(tracker, rows, Path(tmp, MONTAGE))
        if montage is not None:
            tracker.log_artifact(parent, str(montage))
            (sweep_dir / MONTAGE).write_bytes(montage.read_bytes())
    counts = {s: sum(r["status"] == s for r in rows) for s in ("FINISHED", "REUSED", "FAILED", "UNFINISHED")}
    metrics = {f"jobs_{s.lower()}": float(n) for s, n in counts.items()}
    metrics["jobs"] = float(len(rows))
    tags = {"Sweep_summary": f"{sweep_dir / SUMMARY_CSV}"}
    if rows and "rank" in rows[0]:
        tags.update(Sweep_best_job=rows[0]["job"], Sweep_best_overrides=rows[0]["overrides"][:5000],
                    Sweep_ranked_by=rows[0]["ranked_by"])
    tracker.log(parent, metrics=metrics, tags=tags)
    _print_table(rows, columns)


def _print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    shown = [c for c in columns if c not in ("saliency_run_ids", "error")][:8]
    print("[sweep] summary:")
    print("  " + " | ".join(shown))
    for r in rows:
        cells = [f"{r.get(c):.4g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in shown]
        line = "  " + " | ".join(cells)
        print(line + (f"  <- {r['error']}" if r.get("error") else ""))


def sweep_montage(tracker: Any, rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Per image (a row), the image then every job's map of the predicted class (a column per job), in rank
    order; None when no job made saliency maps."""
    import tempfile

    import numpy as np

    from xaitk_exp.render import diverging, grid, to_rgb
    from xaitk_exp.saliency import class_maps

    jobs = [r for r in rows if r.get("saliency_run_ids")]
    if not jobs:
        return None
    names = [r.get("algorithm") or f"job {r['job']}" for r in jobs]
    if len(set(names)) < len(names):
        names = [f"#{r['job']} {n}" for r, n in zip(jobs, names, strict=True)]
    cells: dict[tuple[int, int], np.ndarray] = {}
    images: dict[int, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for col, row in enumerate(jobs):
            for run_id in row["saliency_run_ids"].split(","):
                run = tracker.get_run(run_id)
                k = int(run.data.tags.get("Image_id", -1))
                folder = Path(tracker.download(run_id, "saliency_map_np_arrays", f"{tmp}/{run_id}"))
                maps = class_maps(np.load(folder / "saliency_maps.npy"))
                images.setdefault(k, np.load(folder / "image.npy"))
                index = run.data.tags.get("Predicted_class_index")
                idx = int(index) if index is not None else int(np.argmax(np.clip(maps, 0, None).sum(axis=(1, 2))))
                cells[(k, col)] = maps[idx]
    ids = sorted(images)[:MONTAGE_MAX_IMAGES]
    blank = np.full((8, 8, 3), 255, dtype=np.uint8)
    panels = []
    for k in ids:
        panels.append((to_rgb(images[k]), f"image {k}"))
        panels += [(diverging(cells[(k, c)]) if (k, c) in cells else blank, names[c]) for c in range(len(jobs))]
    return grid(panels, path, columns=1 + len(jobs), title="sweep: predicted-class saliency per image (rows)")

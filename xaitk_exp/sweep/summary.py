"""The sweep's summary: one row per job, ranked, written into the parent run as a table, a CSV and a montage."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xaitk_exp import schema
from xaitk_exp.sweep.montage import MONTAGE, sweep_montage

if TYPE_CHECKING:
    from xaitk_exp.tracking.tracker import Tracker

SUMMARY_TABLE = "sweep_summary.json"
SUMMARY_CSV = "sweep_summary.csv"


# ----- the summary -------------------------------------------------------------------------------------------------
def summary_rows(tracker: Tracker, records: list[dict[str, Any]], parent: str) -> list[dict[str, Any]]:
    """One row per job: number, overrides, status, runtime, error and the key metrics of its runs.

    Status: ``FINISHED`` (new runs), ``REUSED`` (every run it used FINISHED earlier with the same config),
    ``FAILED`` (with ``error``), ``UNFINISHED`` (started, never ended).
    """
    rows = []
    for rec in records:
        row: dict[str, Any] = {
            "job": int(rec.get("job", 0)),
            "overrides": " ".join(rec.get("overrides") or []),
            "status": {"COMPLETED": "FINISHED", "RUNNING": "UNFINISHED"}.get(str(rec.get("status")), rec.get("status")),
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
        if row["status"] == "FINISHED" and final and all(r.data.tags.get(schema.SWEEP_RUN_ID) != parent for r in final):
            row["status"] = "REUSED"
        if fetched["saliency"]:
            row["algorithm"] = fetched["saliency"][0].data.tags.get(schema.SALIENCY_ALGORITHM, "")
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


#: what a sweep without ``sweep.metric`` ranks by when its jobs made saliency maps: the first of these it has
DEFAULT_METRICS = ("saliency.Deletion_AUC", "saliency.Insertion_AUC", "saliency.MuFidelity")


def default_metric(rows: list[dict[str, Any]]) -> str | None:
    """The ranking of a sweep that names no ``sweep.metric``: a saliency sweep by its maps' faithfulness (every
    job's evaluation is often the same one), other sweeps unranked."""
    return next((m for m in DEFAULT_METRICS if any(isinstance(r.get(m), (int, float)) for r in rows)), None)


def job_line(record: dict[str, Any], folder: Path) -> str:
    """The one console line of a finished sweep job: number, overrides, status, runtime, runs (where its own
    output went, when it failed)."""
    status = {"COMPLETED": "FINISHED"}.get(str(record.get("status")), str(record.get("status")))
    line = f"[sweep] #{record.get('job')} {' '.join(record.get('overrides') or []) or '(no overrides)'}: {status}"
    if record.get("runtime_s") is not None:
        line += f" in {float(record['runtime_s']):.1f} s"
    runs = record.get("runs") or {}
    maps = len(runs.get("saliency_run_ids") or [])
    if maps:
        line += f", {maps} saliency run{'s' if maps > 1 else ''}"
    elif runs.get("evaluation_run_id"):
        line += f", evaluation {runs['evaluation_run_id']}"
    elif runs.get("train_run_id"):
        line += f", train run {runs['train_run_id']}"
    if record.get("error"):
        line += f": {record['error']} (output and traceback in {folder})"
    return line


def sweep_note(n_jobs: Any, overrides: list[str], search: Any) -> str:
    """The parent run's description."""
    what = "Optuna study" if search is not None else "Sweep"
    return (
        f"{what} of {n_jobs} {'trials' if search is not None else 'jobs'}: `{' '.join(overrides)[:1000]}`.  \n"
        f"Every run of a job is tagged `Sweep_run_id` with this run's id; the table of jobs, ranked, is the "
        f"artifact `{SUMMARY_CSV}` (also `{SUMMARY_TABLE}`, and `{MONTAGE}` for saliency maps)."
    )


def rank_rows(rows: list[dict[str, Any]], metric: str | None, mode: str = "auto") -> list[dict[str, Any]]:
    """Rows best first by ``metric`` (a column, or a column's last part such as ``Deletion_AUC``); rows without
    it (failed jobs among them) last. ``mode``: ``max``, ``min`` or ``auto`` (the metric's known direction)."""
    from xaitk_exp.errors import ConfigError
    from xaitk_exp.settings.config import SWEEP_MODES

    if not metric:
        return rows
    if mode not in SWEEP_MODES:
        raise ConfigError("sweep.mode", mode, f"one of {', '.join(SWEEP_MODES)}")
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


def write_summary(tracker: Tracker, parent: str, rows: list[dict[str, Any]], sweep_dir: Path, sharded: bool = False
                  ) -> None:
    """The table (MLflow table artifact + CSV, also in ``sweep_dir``), the montage and counts in the parent run.
    ``sharded``: the jobs are shards of one record (left unranked, and the console says why)."""
    ranked_by = next((str(r["ranked_by"]).rsplit(" (", 1)[0] for r in rows if r.get("ranked_by")), None)
    first = ["rank", *([ranked_by] if ranked_by else []), "job", "status", "overrides", "algorithm", "runtime_s", "error"]
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
    _print_table(rows, columns, sharded)


#: jobs named on the console's ranking line; the rest are in the table
SHOWN_RANKS = 5


def _print_table(rows: list[dict[str, Any]], columns: list[str], sharded: bool = False) -> None:
    """One line: the ranking (best first, the first few jobs with their value), or the table's place. Each job had
    its own line when it ended; the whole table is the parent run's artifact."""
    ranked_by = next((r["ranked_by"] for r in rows if r.get("ranked_by")), None)
    if ranked_by is None:
        why = ("the jobs are shards of one record; its merged summary run holds the results" if sharded
               else "sweep.metric")
        print(f"[sweep] summary of {len(rows)} job(s): {SUMMARY_CSV} in the parent run (not ranked: {why})")
        return
    column = ranked_by.rsplit(" (", 1)[0]
    ranked = [r for r in rows if r.get("rank")]
    shown = [f"#{r['job']}{' ' + r['algorithm'] if r.get('algorithm') else ''} {float(r[column]):.4g}"
             for r in ranked[:SHOWN_RANKS]]
    more = f", ... ({len(ranked) - SHOWN_RANKS} more)" if len(ranked) > SHOWN_RANKS else ""
    print(f"[sweep] ranked by {ranked_by}: {', '.join(shown)}{more}")


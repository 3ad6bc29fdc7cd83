"""Aggregate per-image saliency metrics per algorithm, rank the algorithms, draw the comparison.

Reusable by any summary (the evaluation summary here, a sweep summary elsewhere)::

    runs = tracker.search([saliency_exp_id], "tags.Evaluation_summary_run_id = '...'")
    rows = aggregate(runs)                       # one dict per algorithm, best first
    tracker.log(summary_run_id, metrics=flat_metrics(rows))
    comparison_picture(rows, "comparison.png")  # a PNG, one bar per algorithm and metric
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: +1: higher is better, -1: lower is better, 0: descriptive (not ranked).
DIRECTIONS: dict[str, int] = {
    "Deletion_AUC": -1,
    "Insertion_AUC": 1,
    "MuFidelity": 1,
    "Deletion_AUC_random": 0,
    "Insertion_AUC_random": 0,
    "Entropy_positive": 0,
    "Sparseness_gini": 0,
    "Complexity": 0,
    "Sanity_other_class_xcorr": -1,
    "Sanity_permuted_labels_xcorr": -1,
}
METRICS: tuple[str, ...] = tuple(DIRECTIONS)
#: the faithfulness metrics whose mean ranks define the overall rank
RANKED: tuple[str, ...] = ("Deletion_AUC", "Insertion_AUC", "MuFidelity")
SUMMARY_DIR = "saliency_metrics"


def _latest_per_image(runs: Iterable[Any], group_tag: str) -> dict[str, list[Any]]:
    """Runs grouped by ``group_tag``; for each (group, ``Image_id``) only the run that started last."""
    best: dict[tuple[str, str], Any] = {}
    for run in runs:
        tags = run.data.tags
        if group_tag not in tags:
            continue
        key = (tags[group_tag], tags.get("Image_id", run.info.run_id))
        if key not in best or (run.info.start_time or 0) > (best[key].info.start_time or 0):
            best[key] = run
    groups: dict[str, list[Any]] = {}
    for (group, _), run in sorted(best.items()):
        groups.setdefault(group, []).append(run)
    return groups


def _ranks(values: np.ndarray) -> np.ndarray:
    """1 = largest; ties share their average rank; NaN ranks last."""
    from scipy.stats import rankdata

    return rankdata(np.where(np.isfinite(values), -values, np.inf), method="average")


def aggregate(
    runs: Iterable[Any], group_tag: str = "Saliency_algorithm", metrics: Sequence[str] = METRICS
) -> list[dict[str, Any]]:
    """Mean and spread of each metric per algorithm, ranked, best first.

    ``runs``: ``mlflow.entities.Run`` objects (e.g. from ``Tracker.search``), each with the tag ``group_tag``
    (runs without it are skipped) and the per-image metrics. When several runs share a group and an ``Image_id``
    tag, only the latest counts. Returns one dict per group::

        {"algorithm": "rise", "images": 10,
         "Deletion_AUC_mean": 0.21, "Deletion_AUC_std": 0.05, ...,   # every metric in ``metrics`` some run has
         "Deletion_AUC_rank": 1.0, ...,                               # for RANKED metrics; 1 = best
         "rank": 1}                                                   # by the mean of the RANKED ranks

    ``std`` is the sample standard deviation (ddof=1; 0 for one image); NaN values are left out of both.
    """
    groups = _latest_per_image(runs, group_tag)
    rows: list[dict[str, Any]] = []
    for name, members in groups.items():
        row: dict[str, Any] = {"algorithm": name, "images": len(members)}
        for m in metrics:
            vals = np.array([r.data.metrics[m] for r in members if m in r.data.metrics], dtype=float)
            vals = vals[np.isfinite(vals)]
            if len(vals) == 0:
                continue
            row[f"{m}_mean"] = float(vals.mean())
            row[f"{m}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        rows.append(row)
    if not rows:
        return rows
    ranked = [m for m in RANKED if m in metrics and any(f"{m}_mean" in r for r in rows)]
    per_metric = []
    for m in ranked:
        means = np.array([r.get(f"{m}_mean", np.nan) for r in rows], dtype=float)
        ranks = _ranks(DIRECTIONS[m] * means)
        per_metric.append(ranks)
        for r, rank in zip(rows, ranks, strict=True):
            r[f"{m}_rank"] = float(rank)
    score = np.mean(per_metric, axis=0) if per_metric else np.zeros(len(rows))
    order = sorted(range(len(rows)), key=lambda i: (score[i], rows[i]["algorithm"]))
    for position, i in enumerate(order, start=1):
        rows[i]["rank"] = position
    return [rows[i] for i in order]


def _safe(name: str) -> str:
    """An MLflow-legal metric name part (alphanumerics, ``_ - . /`` and spaces)."""
    return re.sub(r"[^\w\-. ]", "_", str(name))


def flat_metrics(rows: Sequence[Mapping[str, Any]], prefix: str = "Saliency") -> dict[str, float]:
    """``rows`` as MLflow metrics: ``<prefix>/<algorithm>/<key>`` for every number (means, stds, ranks, images)."""
    out: dict[str, float] = {}
    for r in rows:
        for key, value in r.items():
            if key != "algorithm" and isinstance(value, (int, float)):
                out[f"{prefix}/{_safe(r['algorithm'])}/{key}"] = float(value)
    return out


def comparison_picture(
    rows: Sequence[Mapping[str, Any]], path: str | Path, title: str = "", metrics: Sequence[str] = METRICS
) -> Path:
    """Draw ``rows`` (from :func:`aggregate`) as a PNG at ``path``: one block per metric, mean +- std bars."""
    from xaitk_exp.metrics.pictures import comparison_figure

    return comparison_figure(rows, metrics, path, title)


def log_evaluation_summary(ctx: Any, saliency_exp_id: str) -> list[dict[str, Any]]:
    """Aggregate every FINISHED saliency run of this evaluation (all algorithms so far) into the evaluation summary
    run ``ctx.evaluation_run_id``: flat metrics, ``saliency_metrics/summary.json`` and ``comparison.png``.

    Returns the rows (empty, logging nothing, when metrics are off or no run has metrics).
    """
    import tempfile

    from xaitk_exp.metrics.settings import settings_from_config

    if not settings_from_config(ctx.cfg.get("metrics")).enabled or not ctx.evaluation_run_id:
        return []
    flt = f"tags.Evaluation_summary_run_id = '{ctx.evaluation_run_id}' and attributes.status = 'FINISHED'"
    runs = ctx.tracker.search([saliency_exp_id], flt, None, 50000)
    rows = [r for r in aggregate(runs) if any(k.endswith("_mean") for k in r)]
    if not rows:
        return []
    tracker = ctx.tracker
    tracker.log(ctx.evaluation_run_id, metrics=flat_metrics(rows))
    tracker.log_dict(ctx.evaluation_run_id, {"rows": rows, "ranked_by": list(RANKED)}, f"{SUMMARY_DIR}/summary.json")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "comparison.png")
        title = "mean +- std over images; ranked by " + ", ".join(RANKED)
        comparison_picture(rows, path, title)
        tracker.log_artifact(ctx.evaluation_run_id, str(path), SUMMARY_DIR)
    best = rows[0]["algorithm"]
    print(f"[metrics] evaluation summary {ctx.evaluation_run_id}: {len(rows)} algorithm(s) ranked, best: {best}")
    return rows

"""Aggregate per-image saliency metrics per algorithm and rank the algorithms.

Reusable by any summary (the evaluation summary here, a sweep summary elsewhere)::

    runs = tracker.search([saliency_exp_id], "tags.Evaluation_summary_run_id = '...'")
    rows = aggregate(runs)                       # one dict per algorithm, best first
    tracker.log(summary_run_id, metrics=flat_metrics(rows))
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from xaitk_exp import schema
from xaitk_exp.metrics.names import DIRECTIONS, METRICS, RANKED


def _latest_per_image(runs: Iterable[Any], group_tag: str) -> dict[str, list[Any]]:
    """Runs grouped by ``group_tag``; for each (group, ``Image_id``, ``Detection``: a detector's runs, one per
    explained detection) only the run that started last."""
    best: dict[tuple[str, str, str], Any] = {}
    for run in runs:
        tags = run.data.tags
        if group_tag not in tags:
            continue
        key = (tags[group_tag], tags.get(schema.IMAGE_ID, run.info.run_id), tags.get(schema.DETECTION, ""))
        if key not in best or (run.info.start_time or 0) > (best[key].info.start_time or 0):
            best[key] = run
    groups: dict[str, list[Any]] = {}
    for (group, *_), run in sorted(best.items()):
        groups.setdefault(group, []).append(run)
    return groups


def _ranks(values: np.ndarray) -> np.ndarray:
    """1 = largest; ties share their average rank; NaN ranks last."""
    from scipy.stats import rankdata

    return rankdata(np.where(np.isfinite(values), -values, np.inf), method="average")


def aggregate(
    runs: Iterable[Any],
    group_tag: str = schema.SALIENCY_ALGORITHM,
    metrics: Sequence[str] = METRICS,
    common_images: bool = False,
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
    ``common_images``: compare like with like, over only the images every group explained (none: no rows).
    """
    groups = _latest_per_image(runs, group_tag)
    if common_images and groups:
        shared = set.intersection(*({r.data.tags.get(schema.IMAGE_ID) for r in members} for members in groups.values()))
        groups = {
            g: [r for r in members if r.data.tags.get(schema.IMAGE_ID) in shared] for g, members in groups.items()
        }
        groups = {g: members for g, members in groups.items() if members}
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



"""The evaluation summary of the saliency quality: every algorithm run on this evaluation so far, ranked, with
flat metrics, a JSON table and the comparison picture in the evaluation summary run."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from xaitk_exp import schema
from xaitk_exp.metrics.names import METRICS, RANKED
from xaitk_exp.metrics.summary import aggregate, flat_metrics
from xaitk_exp.viz.curves import comparison_figure

SUMMARY_DIR = "saliency_metrics"


def comparison_picture(
    rows: Sequence[Mapping[str, Any]], path: str | Path, title: str = "", metrics: Sequence[str] = METRICS
) -> Path:
    """Draw ``rows`` (from :func:`aggregate`) as a PNG at ``path``: one block per metric, mean +- std bars."""
    return comparison_figure(rows, metrics, path, title)


def log_evaluation_summary(ctx: Any, saliency_exp_id: str) -> list[dict[str, Any]]:
    """Aggregate every FINISHED saliency run of this evaluation (all algorithms so far) into the evaluation summary
    run ``ctx.evaluation_run_id``: flat metrics, ``saliency_metrics/summary.json`` and ``comparison.png``.

    Returns the rows (empty, logging nothing, when metrics are off or no run has metrics).
    """
    if not ctx.settings.metrics.enabled or not ctx.evaluation_run_id:
        return []
    flt = f"tags.{schema.EVALUATION_SUMMARY_RUN_ID} = '{ctx.evaluation_run_id}' and attributes.status = 'FINISHED'"
    runs = ctx.tracker.search([saliency_exp_id], flt, None, 50000)
    rows = [r for r in aggregate(runs, common_images=True) if any(k.endswith("_mean") for k in r)]
    if not rows:
        print(f"[metrics] evaluation summary {ctx.evaluation_run_id}: not ranked (no image explained by every "
              "algorithm so far: explain the same images, e.g. with the same query, with each algorithm)")
        return []
    tracker = ctx.tracker
    tracker.log(ctx.evaluation_run_id, metrics=flat_metrics(rows))
    tracker.log_dict(ctx.evaluation_run_id, {"rows": rows, "ranked_by": list(RANKED)}, f"{SUMMARY_DIR}/summary.json")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "comparison.png")
        title = "mean +- std over images; ranked by " + ", ".join(RANKED)
        comparison_picture(rows, path, title)
        tracker.log_artifact(ctx.evaluation_run_id, str(path), SUMMARY_DIR)
    own = str(ctx.cfg.saliency.get("name", "")) if ctx.cfg.get("saliency") is not None else ""
    for line in summary_lines(rows, own):
        print(f"[metrics] evaluation summary {ctx.evaluation_run_id}: {line}")
    return rows


def summary_lines(rows: Sequence[Mapping[str, Any]], own: str = "") -> list[str]:
    """What the console says about ``rows`` (from :func:`aggregate`, best first) for a job that ran algorithm
    ``own``: its quality, a "best" only when two or more algorithms explained the same images, and one line for
    each algorithm whose maps do not beat the random pixel order on deletion and insertion."""
    lines = []
    if len(rows) == 1:
        lines.append(f"quality of {rows[0]['algorithm']} over {rows[0]['images']} image(s)")
    else:
        names = [r["algorithm"] for r in rows]
        place = f"{own} ranks {names.index(own) + 1} of {len(rows)}; " if own in names else ""
        lines.append(f"{len(rows)} algorithms compared on the {rows[0]['images']} image(s) each of them explained: "
                     f"{place}best: {rows[0]['algorithm']}")
    for r in rows:
        worse = []
        for metric, better in (("Deletion_AUC", "lower"), ("Insertion_AUC", "higher")):
            value, random = r.get(f"{metric}_mean"), r.get(f"{metric}_random_mean")
            if value is None or random is None:
                continue
            if not (value < random if better == "lower" else value > random):
                worse.append(f"{metric.split('_')[0].lower()} {value:.3f} vs random {random:.3f}, {better} is better")
        if worse:
            lines.append(f"{r['algorithm']} does not beat the random pixel order ({'; '.join(worse)}): its maps "
                         "say little about this model here; try another algorithm or its settings")
    return lines

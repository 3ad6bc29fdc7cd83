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
    if len(rows) == 1:
        print(f"[metrics] evaluation summary {ctx.evaluation_run_id}: quality of {rows[0]['algorithm']} over "
              f"{rows[0]['images']} image(s)")
    else:
        print(f"[metrics] evaluation summary {ctx.evaluation_run_id}: {len(rows)} algorithms ranked on the "
              f"{rows[0]['images']} image(s) each of them explained, best: {rows[0]['algorithm']}")
    return rows

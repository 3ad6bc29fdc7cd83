"""The detection saliency runs already in the store: those a relaunch reuses, and the one ``update_run_id`` edits."""

from __future__ import annotations

from typing import Any

from xaitk_exp import schema
from xaitk_exp.errors import ConfigError
from xaitk_exp.stages.context import Context
from xaitk_exp.tracking.tracker import Tracker


def finished_runs(ctx: Context, exp_id: str) -> dict[tuple[str, str], str]:
    """``(Image_id, Detection)`` -> the latest FINISHED detection run of this evaluation by the same algorithm
    configuration (``work_hash``), to be reused."""
    flt = (f"tags.{schema.WORK_HASH} = '{ctx.hash_for('saliency_work')}' and attributes.status = 'FINISHED' "
           f"and tags.{schema.EVALUATION_SUMMARY_RUN_ID} = '{ctx.evaluation_run_id}'")
    found: dict[tuple[str, str], str] = {}
    for run in ctx.tracker.search([exp_id], flt, ["attributes.start_time DESC"], 10000):
        key = (run.data.tags.get(schema.IMAGE_ID, ""), run.data.tags.get(schema.DETECTION, ""))
        if key[1]:
            found.setdefault(key, run.info.run_id)
    return found


def check_update(ctx: Context, run_id: str, exp_id: str, algo: Any) -> dict[str, str]:
    """``update_run_id`` names a detection saliency run of this model recorded with the same params (one-line
    :class:`ConfigError` otherwise); what it shows now, as the tags it keeps after the edit."""
    from xaitk_exp.tracking.limits import stringify

    run = ctx.get_run_in(run_id, "update_run_id", ctx.experiment_name(schema.SALIENCY), finished=False)
    tags, params = run.data.tags, run.data.params
    if run.info.experiment_id != exp_id or not tags.get(schema.DETECTION):
        raise ConfigError("update_run_id", run_id, f"a detection's saliency run (one tagged {schema.DETECTION})")
    differs = sorted(k for k, v in algo.config().items() if k in params and params[k] != stringify(v))
    if differs:  # MLflow params are immutable
        raise ConfigError("update_run_id", run_id, f"a run recorded with the same saliency params (these differ: "
                          f"{', '.join(differs)}); drop update_run_id to record a new run")
    return {schema.PREVIOUS_IMAGE_ID: tags.get(schema.IMAGE_ID, "?"), schema.PREVIOUS_DETECTION: tags[schema.DETECTION],
            schema.PREVIOUS_EVALUATION_RUN_ID: tags.get(schema.EVALUATION_RUN_ID, "")}


def detection_of(tracker: Tracker, run_id: str) -> str:
    """The ``Detection`` tag of run ``run_id``."""
    return str(tracker.get_run(run_id).data.tags.get(schema.DETECTION, "?"))

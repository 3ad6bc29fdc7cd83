"""One stage over many machines: with ``shards=N shard=k`` each job of a multirun takes a deterministic 1/N share of
the stage's images (docs/cluster.md).

- Evaluation: image ids in whole chunks of ``chunk_size``, chunk j to shard ``j % N``, so that every image is
  predicted in the same chunk as a single process predicts it (same float bits). The sweep opens the one summary
  run before the jobs start (:func:`open_evaluation_summary`), each shard writes its image runs into it, and the sweep
  writes the summary (accuracy, confusion matrix) once they have all ended (:func:`merge_evaluation`).
- Saliency: the query selects what a single process selects, then shard k takes ``selected[k::N]``; the quality
  summary in the evaluation run is written once, after the shards (the sweep calls ``log_evaluation_summary``).

Every run of a shard is tagged ``Shard=k/N`` and ``Sweep_run_id``; two shards never write the same image's run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

from xaitk_exp import schema
from xaitk_exp.errors import TrackingError
from xaitk_exp.tracking.processes import process_tags

if TYPE_CHECKING:
    from xaitk_exp.stages.context import Context
    from xaitk_exp.stages.evaluation_plan import EvaluationPlan

T = TypeVar("T")
#: most image runs one search returns (MLflow's own bound for one page)
MAX_RUNS = 50000


def share(items: Sequence[T], shard: int, shards: int) -> list[T]:
    """Shard ``shard``'s items of ``items`` (every ``shards``-th, from position ``shard``)."""
    return list(items[shard::shards])


def evaluation_share(n: int, chunk_size: int, shard: int, shards: int) -> list[int]:
    """Image ids ``0 <= k < n`` of shard ``shard``: whole chunks of ``chunk_size``, chunk j to shard ``j % shards``."""
    chunks = range(shard, (n + chunk_size - 1) // chunk_size, shards)
    return [k for j in chunks for k in range(j * chunk_size, min((j + 1) * chunk_size, n))]


def shard_of(image_id: int, chunk_size: int, shards: int) -> int:
    """The evaluation shard that writes image ``image_id``."""
    return (image_id // chunk_size) % shards


def shard_tags(ctx: Context) -> dict[str, str]:
    """``Shard=k/N`` and the sweep's ``Sweep_run_id`` for a sharded job's runs ({} for one process)."""
    s = ctx.settings
    if s.shards == 1:
        return {}
    tags = {schema.SHARD: schema.shard_tag(s.shard, s.shards)}
    if s.sweep_run_id:
        tags[schema.SWEEP_RUN_ID] = s.sweep_run_id
    return tags


# ----- evaluation: one shard ---------------------------------------------------------------------------------------
def _open_summary_filter(ctx: Context) -> str:
    return (f"tags.{schema.RUN_TYPE} = 'summary' and tags.{schema.CONFIG_HASH} = '{ctx.hash_for('evaluation')}' "
            f"and tags.{schema.TRAIN_RUN_ID} = '{ctx.train_run_id or ''}' "
            f"and tags.{schema.SHARDS} = '{ctx.settings.shards}'")


def finished_images(ctx: Context, exp_id: str, summary: str) -> dict[str, str]:
    """``Image_id`` -> run id of the FINISHED image runs of ``summary``."""
    flt = (f"tags.{schema.EVALUATION_SUMMARY_RUN_ID} = '{summary}' and tags.{schema.RUN_TYPE} = 'image' "
           "and attributes.status = 'FINISHED'")
    return {r.data.tags.get(schema.IMAGE_ID, ""): r.info.run_id for r in ctx.tracker.search([exp_id], flt, None,
                                                                                            MAX_RUNS)}


def _drop_unfinished(ctx: Context, exp_id: str, summary: str, ids: set[str]) -> int:
    """Delete the image runs of ``ids`` that an earlier attempt of this shard left unfinished (RUNNING after a
    kill, FAILED, KILLED), so that each image keeps one run."""
    flt = (f"tags.{schema.EVALUATION_SUMMARY_RUN_ID} = '{summary}' and tags.{schema.RUN_TYPE} = 'image' "
           "and attributes.status != 'FINISHED'")
    dropped = 0
    for run in ctx.tracker.search([exp_id], flt, None, MAX_RUNS):
        if run.data.tags.get(schema.IMAGE_ID) in ids:
            ctx.tracker.client.delete_run(run.info.run_id)
            dropped += 1
    return dropped


def write_evaluation_share(ctx: Context, plan: EvaluationPlan) -> str:
    """This shard's image runs (those not FINISHED yet) into the summary run the sweep opened. Returns its id."""
    from xaitk_exp.stages.evaluation_plan import image_artifacts, image_runs

    s = ctx.settings
    flt = f"{_open_summary_filter(ctx)} and tags.{schema.SWEEP_RUN_ID} = '{s.sweep_run_id or ''}' " \
          "and attributes.status = 'RUNNING'"
    found = ctx.tracker.search([plan.exp_id], flt, ["attributes.start_time DESC"], 1)
    if not found:
        raise TrackingError(
            f"shards={s.shards}: no evaluation summary opened for this sweep ({s.sweep_run_id or 'no sweep'}); run "
            f"the shards as one multirun, xaitk-exp -m stage=evaluation 'shard=range(0,{s.shards})' "
            f"shards={s.shards}: the sweep opens the summary before its jobs start"
        )
    parent = str(found[0].info.run_id)
    ids = evaluation_share(plan.n, s.chunk_size, s.shard, s.shards)
    done = finished_images(ctx, plan.exp_id, parent)
    todo = [k for k in ids if str(k) not in done]
    dropped = _drop_unfinished(ctx, plan.exp_id, parent, {str(k) for k in todo}) if todo else 0
    if todo:  # the model on the chunks holding this shard's unwritten images (none: a relaunch found them all)
        records = plan.records(ctx, todo)
        run_ids = ctx.tracker.log_runs(plan.exp_id, image_runs(ctx, plan, parent, records, todo, shard_tags(ctx)),
                                       processes=ctx.processes, summary_run_id=parent)
        image_artifacts(ctx, records, todo, run_ids)
    ctx.evaluation_run_id = parent
    reused = f", {len(ids) - len(todo)} reused" if len(todo) < len(ids) else ""
    replaced = f", {dropped} unfinished replaced" if dropped else ""
    print(f"[evaluation] shard {schema.shard_tag(s.shard, s.shards)}: {len(todo)} of {plan.n} image runs "
          f"written{reused}{replaced} into summary {parent} (the sweep writes the summary when every shard ended)")
    return parent


# ----- evaluation: the sweep, before and after the shards ----------------------------------------------------------
def open_evaluation_summary(ctx: Context) -> str | None:
    """Before the shards start (the sweep's launcher): the evaluation summary run they write into, RUNNING. An
    earlier unfinished sharded summary of the same config is reopened (its FINISHED image runs are kept); None when
    a FINISHED evaluation of this config exists (the shards reuse it)."""
    from xaitk_exp.stages.evaluation_plan import open_summary, plan_evaluation
    from xaitk_exp.stages.upstream import ensure_model

    model = ensure_model(ctx)
    if not ctx.settings.force:
        flt = f"tags.{schema.RUN_TYPE} = 'summary' and tags.{schema.TRAIN_RUN_ID} = '{ctx.train_run_id or ''}'"
        if ctx.find_latest(schema.EVALUATION, "evaluation", flt) is not None:
            return None
    plan = plan_evaluation(ctx, model)
    tracker, sweep = ctx.tracker, ctx.settings.sweep_run_id
    link = {schema.SHARDS: str(ctx.settings.shards)}
    if sweep:
        link[schema.SWEEP_RUN_ID] = sweep
        if tracker.get_run(sweep).info.experiment_id == plan.exp_id:
            link[schema.PARENT_RUN_ID] = sweep  # listed under the sweep's parent in the UI
    earlier = [] if ctx.settings.force else tracker.search(
        [plan.exp_id], f"{_open_summary_filter(ctx)} and attributes.status != 'FINISHED'",
        ["attributes.start_time DESC"], 1)
    if earlier:
        parent = str(earlier[0].info.run_id)
        tracker.client.update_run(parent, status="RUNNING")
        # this process holds it open now: the shards' stale-run check must not take it for the dead launcher's
        tracker.log(parent, tags={**process_tags(), **link, schema.ERROR: ""})
        kept = len(finished_images(ctx, plan.exp_id, parent))
        print(f"[sweep] reopening the unfinished evaluation summary {parent}: {kept} of {plan.n} image runs kept")
        return parent
    parent = tracker.start_run(plan.exp_id, schema.evaluation_summary_run(plan.split_name),
                               {**plan.summary_tags, **link})
    open_summary(ctx, plan, parent)
    return parent


def merge_evaluation(ctx: Context, parent: str) -> str | None:
    """After the shards (the sweep's launcher): when every image has its FINISHED run, the summary (accuracy,
    confusion matrix, counts) as one process writes it, and the run FINISHED; else the run FAILED. Returns None,
    or one line naming the shards whose images are missing."""
    from xaitk_exp.stages.evaluation_plan import plan_evaluation, write_summary
    from xaitk_exp.stages.upstream import ensure_model

    tracker, s = ctx.tracker, ctx.settings
    try:
        plan = plan_evaluation(ctx, ensure_model(ctx))
        done = finished_images(ctx, plan.exp_id, parent)
        missing = [k for k in range(plan.n) if str(k) not in done]
        if missing:
            shards = sorted({shard_of(k, s.chunk_size, s.shards) for k in missing})
            error = (f"evaluation {parent}: {len(missing)} of {plan.n} images have no FINISHED run, from shard(s) "
                     f"{', '.join(schema.shard_tag(k, s.shards) for k in shards)}; a relaunch over every shard "
                     f"('shard=range(0,{s.shards})') writes only those")
            tracker.log(parent, tags={schema.ERROR: error[:500]})
            tracker.finish_run(parent, "FAILED")
            return error
        write_summary(ctx, plan, parent, plan.records(ctx))
        tracker.finish_run(parent, "FINISHED")
    except BaseException as exc:
        error = f"evaluation {parent}: merge failed: {type(exc).__name__}: {exc}"
        try:
            tracker.log(parent, tags={schema.ERROR: error[:500]})
        finally:
            tracker.finish_run(parent, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        if not isinstance(exc, Exception):
            raise
        return error
    return None

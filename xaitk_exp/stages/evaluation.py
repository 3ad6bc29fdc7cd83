"""Evaluation: one run per image in ``<Model> - Evaluation``, and a summary run for the split that the image runs
name in their tag ``Evaluation_summary_run_id``. What the runs hold (tags, metrics, artifacts) is the task's
(``ctx.task.evaluation``); this stage opens, links and reuses them, with the pieces of ``evaluation_plan.py`` that each shard of a sharded
multirun and the sweep's merge use too (``stages/shards.py``)."""

from __future__ import annotations

from xaitk_exp import schema
from xaitk_exp.stages.context import Context
from xaitk_exp.stages.describe import print_where
from xaitk_exp.stages.evaluation_plan import image_artifacts, image_runs, open_summary, plan_evaluation, write_summary
from xaitk_exp.stages.shards import write_evaluation_share
from xaitk_exp.stages.upstream import ensure_model
from xaitk_exp.tasks.classification import label_name

__all__ = ["label_name", "run_evaluation"]  # label_name: the saliency stage's, from the classification task


def run_evaluation(ctx: Context) -> str:
    settings, tracker, task = ctx.settings, ctx.tracker, ctx.task
    model = ensure_model(ctx)
    ctx.check_image_shape(model)
    task.check_model(model)
    if not settings.force:
        flt = f"tags.{schema.RUN_TYPE} = 'summary' and tags.{schema.TRAIN_RUN_ID} = '{ctx.train_run_id or ''}'"
        previous = ctx.find_latest(schema.EVALUATION, "evaluation", flt)
        if previous is not None:
            ctx.evaluation_run_id = previous.info.run_id
            print(f"[evaluation] reusing run {previous.info.run_id} (same config; force=true reruns)")
            print_where(ctx, "evaluation", previous.info.experiment_id, [previous.info.run_id],
                        order_by=task.order_by)
            return str(previous.info.run_id)
    plan = plan_evaluation(ctx, model)
    if settings.shards > 1:  # a share of the image runs, into the summary the sweep opened (docs/cluster.md)
        return write_evaluation_share(ctx, plan)
    records = plan.records(ctx)  # the model on the whole split, for the summary; chunked
    split_name, n, exp_id = plan.split_name, plan.n, plan.exp_id
    same_work = f"tags.{schema.RUN_TYPE} = 'summary' and tags.{schema.CONFIG_HASH} = '{ctx.hash_for('evaluation')}' " \
                f"and tags.{schema.TRAIN_RUN_ID} = '{ctx.train_run_id or ''}'"
    if not tracker.created_here(exp_id) and (dropped := tracker.replace_killed(exp_id, same_work)):
        print(f"[evaluation] replacing a KILLED evaluation of the same config ({dropped} run(s) with its images)")
    with tracker.run(exp_id, schema.evaluation_summary_run(split_name), tags=plan.summary_tags) as parent:
        open_summary(ctx, plan, parent)
        # one top-level run per image, linked to the summary by tag (a nested run is folded away in the UI's table),
        # few store calls each; with n_jobs > 1 the low level spreads them over processes
        ids = tracker.log_runs(exp_id, image_runs(ctx, plan, parent, records, range(n)), processes=ctx.processes,
                               summary_run_id=parent)
        image_artifacts(ctx, records, range(n), ids)
        outcome = write_summary(ctx, plan, parent, records)
    ctx.evaluation_run_id = parent
    print(f"[evaluation] {n} image runs + summary {parent} in '{ctx.experiment_name(schema.EVALUATION)}' ({outcome})")
    print_where(ctx, "evaluation", exp_id, [parent], order_by=task.order_by)
    return parent

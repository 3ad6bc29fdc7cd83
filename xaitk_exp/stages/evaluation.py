"""Evaluation: one run per image in ``<Model> - Evaluation``, and a summary run for the split that the image runs
name in their tag ``Evaluation_summary_run_id``. What the runs hold (tags, metrics, artifacts) is the task's
(``ctx.task.evaluation``); this stage opens, links and reuses them. The same pieces (:func:`plan_evaluation`,
:func:`open_summary`, :func:`image_runs`, :func:`write_summary`) serve a single process, each shard of a sharded
multirun and the sweep's merge (``stages/shards.py``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from xaitk_exp import schema
from xaitk_exp.stages.context import Context
from xaitk_exp.stages.describe import evaluation_image_note, evaluation_summary_note, print_where
from xaitk_exp.stages.lineage import evaluated_model, split_dataset
from xaitk_exp.stages.upstream import ensure_model
from xaitk_exp.tasks.base import EvaluationRecords
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
        from xaitk_exp.stages.shards import write_evaluation_share

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
        tracker.log_runs(exp_id, image_runs(ctx, plan, parent, records, range(n)), processes=ctx.processes,
                         summary_run_id=parent)
        outcome = write_summary(ctx, plan, parent, records)
    ctx.evaluation_run_id = parent
    print(f"[evaluation] {n} image runs + summary {parent} in '{ctx.experiment_name(schema.EVALUATION)}' ({outcome})")
    print_where(ctx, "evaluation", exp_id, [parent], order_by=task.order_by)
    return parent


@dataclass
class EvaluationPlan:
    """What an evaluation writes, worked out once: by a single process, by each shard and by the sweep's merge."""

    split_name: str
    n: int  # image runs: the first n images of the split
    n_split: int  # images in the split
    model: Any
    blackbox: Any
    exp_id: str
    base_tags: dict[str, Any]
    summary_tags: dict[str, Any]
    model_id: str | None

    def records(self, ctx: Context, rows: Sequence[int] | None = None) -> EvaluationRecords:
        """The task's records of this evaluation; the model runs on the whole split, or on the chunks holding
        ``rows`` (a shard's images)."""
        return ctx.task.evaluation(ctx.split, self.model, self.split_name, self.blackbox, rows)


def plan_evaluation(ctx: Context, model: Any) -> EvaluationPlan:
    settings = ctx.settings
    split_name = settings.evaluation.split
    n_split = len(ctx.split.images(split_name))
    n = n_split if settings.evaluation.num_images is None else min(settings.evaluation.num_images, n_split)
    exp_id = ctx.tracker.experiment(ctx.experiment_name(schema.EVALUATION), framework=ctx.framework)
    model_id, version_tags = evaluated_model(ctx)  # the logged model, and the registered version it came from
    base_tags = {
        schema.DATASET: ctx.dataset_name,
        schema.DATASPLIT: split_name,
        schema.TRAIN_EXP_ID: ctx.train_exp_id or "",
        schema.TRAIN_RUN_ID: ctx.train_run_id or "",
        schema.MODEL: ctx.model_class,
        **version_tags,
    }
    summary_tags = {**base_tags, schema.RUN_TYPE: "summary", **ctx.provenance_tags("evaluation")}
    return EvaluationPlan(split_name, n, n_split, model, ctx.task.blackbox(model, settings.chunk_size), exp_id,
                          base_tags, summary_tags, model_id)


def open_summary(ctx: Context, plan: EvaluationPlan, parent: str) -> None:
    """The summary run's description, dataset and config (before its image runs)."""
    note = evaluation_summary_note(ctx, plan.split_name, plan.n, plan.n_split, plan.exp_id, parent)
    ctx.tracker.log(parent, tags={schema.NOTE: note})
    ctx.tracker.log_dataset(parent, split_dataset(ctx, plan.split_name), plan.split_name)
    ctx.record_config(parent)


def image_runs(ctx: Context, plan: EvaluationPlan, parent: str, records: EvaluationRecords, ids: Iterable[int],
               extra_tags: dict[str, str] | None = None) -> Iterator[tuple[str, dict[str, Any], dict[str, float]]]:
    """(run name, tags, metrics) of image ``k`` for each ``k`` of ``ids``, made as the tracker asks for them."""
    from tqdm import tqdm

    split = ctx.split
    for k in tqdm(list(ids), desc="evaluation runs", unit="img", disable=not ctx.settings.progress):
        own_tags, metrics = records.image(k)
        tags = {**plan.base_tags, schema.RUN_TYPE: "image", schema.IMAGE_ID: k, **own_tags, **(extra_tags or {})}
        answer, score, truth = records.headline(k)
        tags[schema.NOTE] = evaluation_image_note(ctx, plan.split_name, k, answer, score, truth,
                                                  summary=(plan.exp_id, parent))
        if split.test_paths is not None and plan.split_name == "test":
            tags[schema.IMAGE_PATH] = split.test_paths[k]
        yield schema.evaluation_image_run(k), tags, metrics


def write_summary(ctx: Context, plan: EvaluationPlan, parent: str, records: EvaluationRecords) -> str:
    """The summary run's metrics (also on the logged model's page) and artifacts, from ``records`` of the whole
    split. Returns the console's closing words (accuracy, or why there is none)."""
    summary = records.summary(plan.n)
    if plan.model_id:  # also on the logged model's page, measured on this dataset
        ctx.tracker.log_model_metrics(parent, plan.model_id, summary, split_dataset(ctx, plan.split_name))
    else:
        ctx.tracker.log(parent, metrics=summary)
    records.log_artifacts(ctx.tracker, parent, f"{plan.split_name} split, {plan.n_split} images")
    return records.outcome(plan.split_name)

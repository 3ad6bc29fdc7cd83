"""The pieces of an evaluation that a single process, each shard of a sharded multirun and the sweep's merge share:
what it writes (:func:`plan_evaluation`), the summary run's opening (:func:`open_summary`), the image runs
(:func:`image_runs`) and the summary's metrics and artifacts (:func:`write_summary`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from xaitk_exp import schema
from xaitk_exp.stages.context import Context
from xaitk_exp.stages.describe import evaluation_image_note, evaluation_summary_note
from xaitk_exp.stages.lineage import evaluated_model, split_dataset
from xaitk_exp.tasks.base import EvaluationRecords


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


def image_artifacts(ctx: Context, records: EvaluationRecords, ids: Iterable[int], run_ids: Sequence[str]) -> None:
    """Each image run's artifacts (the task's ``log_image``), once the runs exist; ``run_ids`` in ``ids``' order."""
    for k, run_id in zip(ids, run_ids, strict=True):
        records.log_image(ctx.tracker, run_id, k)


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

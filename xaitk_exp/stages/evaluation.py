"""Evaluation: one run per image in ``<Model> - Evaluation``, and a summary run for the split that the image runs
name in their tag ``Evaluation_summary_run_id``. What the runs hold (tags, metrics, artifacts) is the task's
(``ctx.task.evaluation``); this stage opens, links and reuses them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from xaitk_exp import schema
from xaitk_exp.stages.context import Context
from xaitk_exp.stages.describe import evaluation_image_note, evaluation_summary_note, print_where
from xaitk_exp.stages.lineage import evaluated_model, split_dataset
from xaitk_exp.stages.upstream import ensure_model
from xaitk_exp.tasks.classification import label_name

__all__ = ["label_name", "run_evaluation"]  # label_name: the saliency stage's, from the classification task


def run_evaluation(ctx: Context) -> str:
    from tqdm import tqdm

    settings, tracker, split, task = ctx.settings, ctx.tracker, ctx.split, ctx.task
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
    split_name = settings.evaluation.split
    n_split = len(split.images(split_name))
    n = n_split if settings.evaluation.num_images is None else min(settings.evaluation.num_images, n_split)
    records = task.evaluation(split, model, split_name, task.blackbox(model, settings.chunk_size))
    exp_id = tracker.experiment(ctx.experiment_name(schema.EVALUATION), framework=ctx.framework)
    model_id, version_tags = evaluated_model(ctx)  # the logged model, and the registered version it came from
    base_tags = {
        schema.DATASET: ctx.dataset_name,
        schema.DATASPLIT: split_name,
        schema.TRAIN_EXP_ID: ctx.train_exp_id or "",
        schema.TRAIN_RUN_ID: ctx.train_run_id or "",
        schema.MODEL: ctx.model_class,
        **version_tags,
    }
    summary_tags = {
        **base_tags,
        schema.RUN_TYPE: "summary",
        **ctx.provenance_tags("evaluation"),
    }
    same_work = f"tags.{schema.RUN_TYPE} = 'summary' and tags.{schema.CONFIG_HASH} = '{ctx.hash_for('evaluation')}' " \
                f"and tags.{schema.TRAIN_RUN_ID} = '{ctx.train_run_id or ''}'"
    if not tracker.created_here(exp_id) and (dropped := tracker.replace_killed(exp_id, same_work)):
        print(f"[evaluation] replacing a KILLED evaluation of the same config ({dropped} run(s) with its images)")
    with tracker.run(exp_id, schema.evaluation_summary_run(split_name), tags=summary_tags) as parent:
        tracker.log(parent, tags={schema.NOTE: evaluation_summary_note(ctx, split_name, n, n_split, exp_id, parent)})
        dataset = split_dataset(ctx, split_name)
        tracker.log_dataset(parent, dataset, split_name)
        ctx.record_config(parent)

        def image_runs() -> Iterator[tuple[str, dict[str, Any], dict[str, float]]]:
            """(run name, tags, metrics) per image, made as the tracker asks for them."""
            for k in tqdm(range(n), desc="evaluation runs", unit="img", disable=not settings.progress):
                own_tags, metrics = records.image(k)
                tags = {**base_tags, schema.RUN_TYPE: "image", schema.IMAGE_ID: k, **own_tags}
                answer, score, truth = records.headline(k)
                tags[schema.NOTE] = evaluation_image_note(ctx, split_name, k, answer, score, truth,
                                                          summary=(exp_id, parent))
                if split.test_paths is not None and split_name == "test":
                    tags[schema.IMAGE_PATH] = split.test_paths[k]
                yield schema.evaluation_image_run(k), tags, metrics

        # one top-level run per image, linked to the summary by tag (a nested run is folded away in the UI's table),
        # few store calls each; with n_jobs > 1 the low level spreads them over processes
        tracker.log_runs(exp_id, image_runs(), processes=ctx.processes, summary_run_id=parent)
        summary = records.summary(n)
        if model_id:  # also on the logged model's page, measured on this dataset
            tracker.log_model_metrics(parent, model_id, summary, dataset)
        else:
            tracker.log(parent, metrics=summary)
        records.log_artifacts(tracker, parent, f"{split_name} split, {n_split} images")
    ctx.evaluation_run_id = parent
    print(f"[evaluation] {n} image runs + summary {parent} in '{ctx.experiment_name(schema.EVALUATION)}' "
          f"({records.outcome(split_name)})")
    print_where(ctx, "evaluation", exp_id, [parent], order_by=task.order_by)
    return parent

"""Evaluation: one run per image in ``<Model> - Evaluation``, and a summary run for the split that the image runs
name in their tag ``Evaluation_summary_run_id``."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xaitk_exp import schema
from xaitk_exp.models.blackbox import blackbox_for
from xaitk_exp.models.pipeline import class_view
from xaitk_exp.stages.context import Context
from xaitk_exp.stages.describe import evaluation_image_note, evaluation_summary_note, print_where
from xaitk_exp.stages.lineage import evaluated_model, split_dataset
from xaitk_exp.stages.upstream import ensure_model
from xaitk_exp.viz.figures import confusion_figure


def run_evaluation(ctx: Context) -> str:
    settings, tracker = ctx.settings, ctx.tracker
    model = ensure_model(ctx)
    ctx.check_image_shape(model)
    if not settings.force:
        flt = f"tags.{schema.RUN_TYPE} = 'summary' and tags.{schema.TRAIN_RUN_ID} = '{ctx.train_run_id or ''}'"
        previous = ctx.find_latest(schema.EVALUATION, "evaluation", flt)
        if previous is not None:
            ctx.evaluation_run_id = previous.info.run_id
            print(f"[evaluation] reusing run {previous.info.run_id} (same config; force=true reruns)")
            print_where(ctx, "evaluation", previous.info.experiment_id, [previous.info.run_id],
                        order_by=f"metrics.{schema.PREDICTED_CLASS_CONF} DESC")
            return previous.info.run_id
    plan = plan_evaluation(ctx, model)
    if settings.shards > 1:  # a share of the image runs, into the summary the sweep opened (docs/cluster.md)
        from xaitk_exp.stages.shards import write_evaluation_share

        return write_evaluation_share(ctx, plan)
    probs = plan.blackbox.predict(plan.images)  # the whole split, for the summary; chunked
    split_name, n, exp_id = plan.split_name, plan.n, plan.exp_id
    same_work = f"tags.{schema.RUN_TYPE} = 'summary' and tags.{schema.CONFIG_HASH} = '{ctx.hash_for('evaluation')}' " \
                f"and tags.{schema.TRAIN_RUN_ID} = '{ctx.train_run_id or ''}'"
    if not tracker.created_here(exp_id) and (dropped := tracker.replace_killed(exp_id, same_work)):
        print(f"[evaluation] replacing a KILLED evaluation of the same config ({dropped} run(s) with its images)")
    with tracker.run(exp_id, schema.evaluation_summary_run(split_name), tags=plan.summary_tags) as parent:
        open_summary(ctx, plan, parent)
        # one top-level run per image, linked to the summary by tag (a nested run is folded away in the UI's table),
        # few store calls each; with n_jobs > 1 the low level spreads them over processes
        tracker.log_runs(exp_id, image_runs(ctx, plan, parent, probs, range(n)), processes=ctx.processes,
                         summary_run_id=parent)
        accuracy = write_summary(ctx, plan, parent, probs)
    ctx.evaluation_run_id = parent
    print(f"[evaluation] {n} image runs + summary {parent} in '{ctx.experiment_name(schema.EVALUATION)}' ({accuracy})")
    print_where(ctx, "evaluation", exp_id, [parent], order_by=f"metrics.{schema.PREDICTED_CLASS_CONF} DESC")
    return parent


@dataclass
class EvaluationPlan:
    """What an evaluation writes, worked out once: by a single process, by each shard and by the sweep's merge."""

    split_name: str
    images: np.ndarray  # [N, H, W(, C)] the split's images in [0, 1]
    labels: np.ndarray  # [N] their ground truth
    n: int  # image runs: the first n images of the split
    blackbox: Any
    model: Any
    view: Any  # class_view: tags and metrics per class
    class_labels: list[str]
    exp_id: str
    base_tags: dict[str, Any]
    summary_tags: dict[str, Any]
    model_id: str | None


def plan_evaluation(ctx: Context, model: Any) -> EvaluationPlan:
    settings, split = ctx.settings, ctx.split
    split_name = settings.evaluation.split
    images, labels = split.images(split_name), split.labels(split_name)
    n = len(images) if settings.evaluation.num_images is None else min(settings.evaluation.num_images, len(images))
    blackbox = blackbox_for(model, settings.chunk_size)
    names = [str(c) for c in split.class_names]
    class_labels = [label_name(c, names) for c in blackbox.get_labels()]
    # tags and metrics per class: image models tag indices (names in *_label), top 5 above 20 classes, no ground truth
    view = class_view(split, model, split_name, class_labels)
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
    return EvaluationPlan(split_name, images, labels, n, blackbox, model, view, view.labels, exp_id, base_tags,
                          summary_tags, model_id)


def open_summary(ctx: Context, plan: EvaluationPlan, parent: str) -> None:
    """The summary run's description, dataset and config (before its image runs)."""
    note = evaluation_summary_note(ctx, plan.split_name, plan.n, len(plan.images), plan.exp_id, parent)
    ctx.tracker.log(parent, tags={schema.NOTE: note})
    ctx.tracker.log_dataset(parent, split_dataset(ctx, plan.split_name), plan.split_name)
    ctx.record_config(parent)


def image_runs(ctx: Context, plan: EvaluationPlan, parent: str, probs: np.ndarray, ids: Iterable[int],
               extra_tags: dict[str, str] | None = None) -> Iterator[tuple[str, dict[str, Any], dict[str, float]]]:
    """(run name, tags, metrics) of image ``k`` for each ``k`` of ``ids``, made as the tracker asks for them;
    ``probs[k]``: image k's probabilities."""
    from tqdm import tqdm

    split, view, exp_id = ctx.split, plan.view, plan.exp_id
    ids = list(ids)
    for k in tqdm(ids, desc="evaluation runs", unit="img", disable=not ctx.settings.progress):
        tags = {**plan.base_tags, schema.RUN_TYPE: "image", schema.IMAGE_ID: k,
                **view.tags(k, probs[k], plan.labels[k]), **(extra_tags or {})}
        top = int(np.argmax(probs[k]))
        tags[schema.NOTE] = evaluation_image_note(
            ctx, plan.split_name, k, str(tags.get(schema.PREDICTED_LABEL) or tags[schema.PREDICTED_CLASS]),
            float(probs[k, top]), str(tags.get(schema.GT_LABEL) or tags.get(schema.GT_CLASS) or "unknown"),
            summary=(exp_id, parent),
        )
        if split.test_paths is not None and plan.split_name == "test":
            tags[schema.IMAGE_PATH] = split.test_paths[k]
        yield schema.evaluation_image_run(k), tags, view.metrics(probs[k])


def write_summary(ctx: Context, plan: EvaluationPlan, parent: str, probs: np.ndarray) -> str:
    """Accuracy, the confusion matrix and the counts into the summary run, from ``probs`` [N, classes] of the whole
    split. Returns the console's accuracy phrase."""
    tracker, view, n, images = ctx.tracker, plan.view, plan.n, plan.images
    predicted = np.asarray(plan.blackbox.get_labels())[probs.argmax(axis=1)]
    truth = view.truth
    top_conf = probs.max(axis=1)
    summary = {
        "Mean_predicted_class_conf": float(top_conf.mean()),
        "Evaluated_images": n,
        "Split_images": len(images),
    }
    if truth is not None:  # a folder without class sub-folders has no ground truth: no accuracy
        summary[schema.ACCURACY] = float(np.mean(predicted == truth))
        summary["Accuracy_evaluated"] = float(np.mean(predicted[:n] == truth[:n]))
    if plan.model_id:  # also on the logged model's page, measured on this dataset
        tracker.log_model_metrics(parent, plan.model_id, summary, split_dataset(ctx, plan.split_name))
    else:
        tracker.log(parent, metrics=summary)
    if view.show_confusion:  # with ground truth, and at most 20 classes for an image model
        matrix = _confusion(truth, predicted, list(plan.model.classes_))
        with tempfile.TemporaryDirectory() as tmp:
            figure = Path(tmp, schema.CONFUSION_FIGURE)
            confusion_figure(matrix, plan.class_labels, figure, f"{plan.split_name} split, {len(images)} images")
            tracker.log_artifact(parent, str(figure))
        tracker.log_dict(parent, {"labels": plan.class_labels, "matrix": matrix.tolist()}, "confusion_matrix.json")
    if truth is None:
        return "no ground truth"
    return f"accuracy on {plan.split_name}: {np.mean(predicted == truth):.3f}"


def label_name(c: object, names: list[str]) -> str:
    """A class as users see it: the dataset's class name for an integer label, else the label itself."""
    if isinstance(c, (int, np.integer)) and 0 <= int(c) < len(names):
        return names[int(c)]
    return str(c)


def _confusion(truth: np.ndarray, predicted: np.ndarray, classes: list) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    m = np.zeros((len(classes), len(classes)), dtype=int)
    for t, p in zip(truth, predicted, strict=True):
        if t in index:
            m[index[t], index[p]] += 1
    return m

"""Saliency map generation: query the evaluation runs, explain each selected image, one run per image."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np

from xaitk_exp import schema
from xaitk_exp.errors import ConfigError, QueryError, TrackingError
from xaitk_exp.settings.config import QuerySettings
from xaitk_exp.settings.nodes import to_dict
from xaitk_exp.stages.context import Context
from xaitk_exp.stages.describe import print_where, saliency_note
from xaitk_exp.stages.saliency.algorithm import Algorithm
from xaitk_exp.stages.saliency.image import (
    WORKER_ENV,
    ExplainSpec,
    ImageTask,
    RecordSpec,
    close_orphans,
    explain_and_record,
    explain_and_record_overlapped,
    explain_and_record_parallel,
)
from xaitk_exp.stages.saliency.summary import log_evaluation_summary
from xaitk_exp.stages.shards import shard_tags, share
from xaitk_exp.stages.upstream import ensure_evaluation, ensure_model, image_runs_filters
from xaitk_exp.tracking.limits import stringify
from xaitk_exp.tracking.ui import runs_table_url


def build_filter(
    query: QuerySettings, parent_run_id: str, link: str | None = None, class_names: list[str] | None = None
) -> str:
    """The MLflow filter string: ``query.filter`` AND the shortcuts AND this evaluation's image runs (``link``: one
    of :func:`image_runs_filters`, by default the current layout's)."""
    parts = [link or image_runs_filters(parent_run_id)[0], f"tags.{schema.RUN_TYPE} = 'image'"]
    own = user_filter(query, class_names)
    return " and ".join([*parts, own] if own else parts)


def user_filter(query: QuerySettings, class_names: list[str] | None = None) -> str:
    """The part of the filter the user asked for: ``query.filter`` AND the shortcuts ('' when nothing was asked).

    ``class_names``: an image model's label per class index. Its runs tag the index (``Predicted_class``) and the
    label (``Predicted_label``); ``query.predicted_class`` / ``query.gt_class`` take the label a user reads, and the
    index where the value names no class."""
    names = set(class_names or ())
    parts = []
    if query.filter:
        parts.append(str(query.filter))
    if query.min_conf is not None:
        parts.append(f"metrics.{schema.PREDICTED_CLASS_CONF} >= {float(query.min_conf)}")
    for value, by_index, by_label in ((query.predicted_class, schema.PREDICTED_CLASS, schema.PREDICTED_LABEL),
                                      (query.gt_class, schema.GT_CLASS, schema.GT_LABEL)):
        if value is not None:
            tag = by_label if str(value) in names else by_index
            parts.append(f"tags.{tag} = '{value}'")
    return " and ".join(parts)


def select_images(ctx: Context, evaluation: Any, class_names: list[str] | None = None,
                  order_by: str | None = None) -> list[Any]:
    """The evaluation's image runs the query selects, in ``order_by`` (default ``query.order_by``)."""
    q = ctx.settings.query
    order_by = order_by or q.order_by
    order = [str(order_by)] if order_by else None
    try:
        for link in image_runs_filters(evaluation.info.run_id):  # a store written before nests the image runs
            flt = build_filter(q, evaluation.info.run_id, link, class_names)
            runs = ctx.tracker.search([evaluation.info.experiment_id], flt, order, int(q.max_results))
            if runs:
                break
        flt = build_filter(q, evaluation.info.run_id, None, class_names)
    except TrackingError as exc:
        key, value = ("query.order_by", q.order_by) if "order" in str(exc).lower() else ("query.filter", q.filter)
        raise ConfigError(key, value, f"a valid MLflow filter/order string ({exc})") from exc
    if not runs:
        raise QueryError(
            f"query matched no evaluation run of {evaluation.info.run_id}: filter {flt!r}; "
            "loosen query.filter / query.min_conf / query.predicted_class / query.gt_class"
        )
    return runs


def run_saliency(ctx: Context) -> list[str]:
    tracker, split = ctx.tracker, ctx.split
    evaluation = ensure_evaluation(ctx)
    if ctx.model is None and not ctx.train_run_id:
        ctx.train_run_id = evaluation.data.tags.get(schema.TRAIN_RUN_ID) or None
        if ctx.train_run_id and not ctx.pretrained_uri:  # the model the evaluation used, not the latest one
            ctx.pin_train_run(ctx.train_run_id)
    settings = ctx.settings  # read after the pin
    model = ensure_model(ctx)
    ctx.check_image_shape(model)
    algo = Algorithm(ctx.cfg.saliency, split.image_shape, ctx.extra_allowed)
    task = ctx.task  # what the model's outputs are, and so what gets a map and how it is named
    if task.explains == "detections":  # one run per explained detection
        from xaitk_exp.stages.saliency.detection import image_order, run_detection_saliency

        return run_detection_saliency(ctx, model, algo, select_images(ctx, evaluation, None, image_order(ctx)))
    selected = select_images(ctx, evaluation, task.output_names(model))
    update = settings.update_run_id
    if update:
        selected = selected[:1]
    selected = share(selected, settings.shard, settings.shards)  # a shard's images of what one process selects
    split_name = evaluation.data.tags.get(schema.DATASPLIT, "test")
    images = split.images(split_name)
    for run in selected:
        k = int(run.data.tags[schema.IMAGE_ID])
        if k >= len(images):
            raise TrackingError(
                f"evaluation run {run.info.run_id} names Image_id={k}, outside the {split_name} split "
                f"({len(images)} images): the dataset config differs from the evaluation's"
            )
    exp_id = tracker.experiment(ctx.experiment_name(schema.SALIENCY), framework=ctx.framework)
    if update:
        _check_update(ctx, update, exp_id, algo)
    labels = task.output_labels(model, split.class_names)
    from tqdm import tqdm

    done = {} if settings.force or update or tracker.created_here(exp_id) else _finished_runs(ctx, exp_id)
    todo = [r for r in selected if r.data.tags[schema.IMAGE_ID] not in done]
    if len(todo) < len(selected):
        reused = len(selected) - len(todo)
        print(
            f"[saliency] {algo.name}: reusing {reused} FINISHED run(s) of the same image(s), algorithm settings and "
            "evaluation (force=true reruns)"
        )
    if todo and not update and not tracker.created_here(exp_id):  # a killed earlier attempt: replaced, not doubled
        same_work = f"tags.{schema.WORK_HASH} = '{ctx.hash_for('saliency_work')}' and " \
                    f"tags.{schema.EVALUATION_SUMMARY_RUN_ID} = '{ctx.evaluation_run_id}'"
        images_todo = [r.data.tags[schema.IMAGE_ID] for r in todo]
        if dropped := tracker.replace_killed(exp_id, same_work, schema.IMAGE_ID, images_todo):
            print(f"[saliency] {algo.name}: replacing {dropped} KILLED run(s) of the same image(s) and settings")
    results = _explain_and_record(ctx, exp_id, algo, model, labels, todo, images, update)
    try:
        for result in tqdm(
            results, total=len(todo), desc=f"saliency {algo.name}", unit="img", disable=not settings.progress
        ):
            done[str(result.image_id)] = result.run_id
    finally:
        results.close()  # Ctrl-C or an error: let the workers finish their images, close open runs, remove files
    run_ids = [done[r.data.tags[schema.IMAGE_ID]] for r in selected]
    print(
        f"[saliency] {algo.name}: {len(run_ids)} run(s) in '{ctx.experiment_name(schema.SALIENCY)}': "
        + ", ".join(run_ids)
    )
    ctx.results["saliency_run_ids"] = run_ids
    print_where(ctx, "saliency", exp_id, run_ids, f"tags.{schema.SALIENCY_ALGORITHM} = '{algo.name}'")
    query = user_filter(settings.query, task.output_names(model))
    if query:
        print(f"[saliency] the query in the evaluation runs table: "
              f"{runs_table_url(tracker.uri, evaluation.info.experiment_id, query, settings.query.order_by) or query}")
    if settings.shards == 1:  # sharded: written once, by the sweep, when every shard has ended
        log_evaluation_summary(ctx, exp_id)
    return run_ids


def _finished_runs(ctx: Context, exp_id: str) -> dict[str, str]:
    """``Image_id`` -> the latest FINISHED saliency run of this evaluation by the same algorithm configuration
    (``work_hash``: the query that selected the image does not count), to be reused."""
    flt = (
        f"tags.{schema.WORK_HASH} = '{ctx.hash_for('saliency_work')}' and attributes.status = 'FINISHED' "
        f"and tags.{schema.EVALUATION_SUMMARY_RUN_ID} = '{ctx.evaluation_run_id}'"
    )
    found: dict[str, str] = {}
    for run in ctx.tracker.search([exp_id], flt, ["attributes.start_time DESC"], 10000):
        found.setdefault(run.data.tags.get(schema.IMAGE_ID, ""), run.info.run_id)
    return found


def _explain_and_record(
    ctx: Context,
    exp_id: str,
    algo: Any,
    model: Any,
    labels: list[str],
    todo: list[Any],
    images: np.ndarray,
    update_run_id: str | None,
) -> Generator[Any, None, None]:
    """Each selected image explained and recorded (:mod:`.image`), yielded in order, with its files in a
    folder per image under one temporary folder that is removed when the generator closes.

    With ``n_jobs`` > 1, ``n_jobs - 1`` worker processes (joblib's reusable executor) take images beside this
    process; each makes the maps, the metrics and the pictures and records the runs through its own tracker on the
    same store, so recording runs in parallel too. Runs a stopped worker left open are closed KILLED. Alone, this
    process writes each run in a background thread while it explains the next image.
    """
    settings = ctx.settings.metrics
    permuted = None
    if settings.enabled and settings.sanity:
        from xaitk_exp.stages.saliency.quality import permuted_model_for

        permuted = permuted_model_for(ctx)
    spec = ExplainSpec(
        algorithm=to_dict(ctx.cfg.saliency),
        image_shape=tuple(ctx.split.image_shape),
        extra_allowed=tuple(ctx.extra_allowed),
        model=model,
        chunk_size=ctx.settings.chunk_size,
        labels=labels,
        metrics=settings if settings.enabled else None,
        permuted_model=permuted,
        top_k=ctx.settings.maps.top_k,
        names=ctx.task.output_names(model),
        task=ctx.task.name,
    )
    rspec = RecordSpec(
        tracker=ctx.tracker.reopen_args(),
        experiment_id=exp_id,
        tags={
            schema.DATASET: ctx.dataset_name,
            schema.EVALUATION_SUMMARY_RUN_ID: ctx.evaluation_run_id or "",
            schema.SALIENCY_ALGORITHM: algo.name,
            schema.WORK_HASH: ctx.hash_for("saliency_work"),
            schema.TRAIN_RUN_ID: ctx.train_run_id or "",
            **ctx.provenance_tags("saliency"),
            **shard_tags(ctx),
        },
        params=None if update_run_id else algo.config(),
        config_files={} if update_run_id else ctx.config_texts(),
        update_run_id=update_run_id,
        env={k: os.environ[k] for k in WORKER_ENV if k in os.environ},
    )
    root = Path(tempfile.mkdtemp(prefix="xaitk-exp-saliency-"))
    tasks = []
    for i, run in enumerate(todo):
        k = int(run.data.tags[schema.IMAGE_ID])
        evaluation = {
            "run_id": run.info.run_id,
            "experiment_id": run.info.experiment_id,
            "tags": dict(run.data.tags),
            "conf": run.data.metrics.get(schema.PREDICTED_CLASS_CONF),
        }
        tags = run.data.tags  # the note names classes by the label a user reads (image models: not the index)
        seen = {**evaluation, "tags": {**tags, schema.GT_CLASS: tags.get(schema.GT_LABEL, tags.get(schema.GT_CLASS))}}
        predicted = tags.get(schema.PREDICTED_LABEL, tags.get(schema.PREDICTED_CLASS))
        own = {schema.NOTE: saliency_note(ctx, algo.name, k, seen, str(predicted))}
        if update_run_id:
            own.update(_previous(ctx, update_run_id, k))
        tasks.append(ImageTask(k, images[k], evaluation, str(root / f"{i:06d}"), own))
    finished = False
    try:
        if ctx.processes > 1 and len(tasks) > 1:
            yield from explain_and_record_parallel(ctx.tracker, spec, rspec, tasks, ctx.processes)
        elif ctx.tracker.thread_bound():
            for task in tasks:  # one at a time: the progress bar moves per image
                yield from explain_and_record(spec, rspec, [task], ctx.tracker)
        else:  # each image's run written while the next image is explained
            yield from explain_and_record_overlapped(spec, rspec, tasks, ctx.tracker)
        finished = True
    finally:
        if not finished:
            closed = close_orphans(ctx.tracker, root, "KILLED")
            if closed:
                print(f"[saliency] {len(closed)} run(s) a stopped worker left open closed KILLED: {', '.join(closed)}")
        shutil.rmtree(root, ignore_errors=True)


def _check_update(ctx: Context, run_id: str, exp_id: str, algo: Any) -> None:
    """An edited run keeps its params: refuse an update that would change them."""
    run = ctx.get_run_in(run_id, "update_run_id", ctx.experiment_name(schema.SALIENCY), finished=False)
    if run.info.experiment_id != exp_id:
        raise ConfigError("update_run_id", run_id, "a run in the saliency experiment")
    wanted = {k: stringify(v) for k, v in algo.config().items()}
    differs = sorted(k for k, v in wanted.items() if k in run.data.params and run.data.params[k] != v)
    if differs:
        raise ConfigError(
            "update_run_id",
            run_id,
            f"a run recorded with the same saliency params (these differ: {', '.join(differs)}); "
            "MLflow params are immutable: drop update_run_id to record a new run",
        )


def _previous(ctx: Context, run_id: str, new_image: int) -> dict[str, str]:
    """What an edited run showed before (kept as tags), and a console line saying what changes."""
    run = ctx.tracker.get_run(run_id)
    old_image = run.data.tags.get(schema.IMAGE_ID, "?")
    old_eval = run.data.tags.get(schema.EVALUATION_RUN_ID, "")
    print(f"[saliency] editing run {run_id}: image {old_image} -> {new_image}, renamed "
          f"{run.info.run_name!r} -> {schema.saliency_run(new_image)!r} (tagged {schema.MODIFIED_RUN}=True)")
    return {schema.PREVIOUS_IMAGE_ID: old_image, schema.PREVIOUS_EVALUATION_RUN_ID: old_eval}

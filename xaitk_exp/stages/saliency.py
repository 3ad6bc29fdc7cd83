"""Saliency map generation: query the evaluation runs, explain each selected image, one run per image."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from xaitk_exp.errors import ConfigError, QueryError, TrackingError
from xaitk_exp.stages.context import Context
from xaitk_exp.stages.evaluation import label_name
from xaitk_exp.stages.upstream import ensure_evaluation, ensure_model


def build_filter(query: Any, parent_run_id: str) -> str:
    """The MLflow filter string: ``query.filter`` AND the shortcuts AND this evaluation's image runs."""
    parts = [f"tags.`mlflow.parentRunId` = '{parent_run_id}'", "tags.Run_type = 'image'"]
    if query.get("filter"):
        parts.append(str(query.filter))
    if query.get("min_conf") is not None:
        parts.append(f"metrics.Predicted_class_conf >= {float(query.min_conf)}")
    if query.get("predicted_class") is not None:
        parts.append(f"tags.Predicted_class = '{query.predicted_class}'")
    if query.get("gt_class") is not None:
        parts.append(f"tags.GT_class = '{query.gt_class}'")
    return " and ".join(parts)


def select_images(ctx: Context, evaluation: Any) -> list[Any]:
    q = ctx.cfg.query
    flt = build_filter(q, evaluation.info.run_id)
    order = [str(q.order_by)] if q.get("order_by") else None
    try:
        runs = ctx.tracker.search([evaluation.info.experiment_id], flt, order, int(q.max_results))
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
    from xaitk_exp.saliency import Algorithm

    cfg, tracker, split = ctx.cfg, ctx.tracker, ctx.split
    evaluation = ensure_evaluation(ctx)
    if ctx.model is None and not ctx.train_run_id:
        ctx.train_run_id = evaluation.data.tags.get("Train_run_id") or None
        if ctx.train_run_id and not ctx.pretrained_uri:
            ctx.cfg.train_run_id = ctx.train_run_id
    model = ensure_model(ctx)
    ctx.check_image_shape(model)
    algo = Algorithm(cfg.saliency, split.image_shape, ctx.extra_allowed)
    selected = select_images(ctx, evaluation)
    update = cfg.get("update_run_id")
    if update:
        selected = selected[:1]
    split_name = evaluation.data.tags.get("Datasplit", "test")
    images = split.images(split_name)
    for run in selected:
        k = int(run.data.tags["Image_id"])
        if k >= len(images):
            raise TrackingError(
                f"evaluation run {run.info.run_id} names Image_id={k}, outside the {split_name} split "
                f"({len(images)} images): the dataset config differs from the evaluation's"
            )
    exp_id = tracker.experiment(ctx.experiment_name("Saliency Map Generation"))
    if update:
        _check_update(ctx, str(update), exp_id, algo)
    names = [str(c) for c in split.class_names]
    labels = [label_name(c, names) for c in model.classes_]
    from tqdm import tqdm

    done = {} if cfg.force or update else _finished_runs(ctx, exp_id)
    todo = [r for r in selected if r.data.tags["Image_id"] not in done]
    if len(todo) < len(selected):
        reused = len(selected) - len(todo)
        print(f"[saliency] {algo.name}: reusing {reused} FINISHED run(s) (same config; force=true reruns)")
    explained = _explain(ctx, algo, model, labels, todo, images)
    try:
        for run, result in tqdm(
            zip(todo, explained), total=len(todo), desc=f"saliency {algo.name}", unit="img",
            disable=not cfg.progress,
        ):
            updated = str(update) if update else None
            done[run.data.tags["Image_id"]] = _log_one(ctx, exp_id, algo, run, result, updated)
    finally:
        explained.close()  # Ctrl-C or an error: stop the workers, remove the images' folders
    run_ids = [done[r.data.tags["Image_id"]] for r in selected]
    print(
        f"[saliency] {algo.name}: {len(run_ids)} run(s) in '{ctx.experiment_name('Saliency Map Generation')}': "
        + ", ".join(run_ids)
    )
    ctx.results["saliency_run_ids"] = run_ids
    from xaitk_exp.metrics.summary import log_evaluation_summary

    log_evaluation_summary(ctx, exp_id)
    return run_ids


def _finished_runs(ctx: Context, exp_id: str) -> dict[str, str]:
    """``Image_id`` -> the latest FINISHED saliency run of this evaluation with this config's hash (reused)."""
    flt = (
        f"tags.config_hash = '{ctx.hash_for('saliency')}' and attributes.status = 'FINISHED' "
        f"and tags.Evaluation_summary_run_id = '{ctx.evaluation_run_id}'"
    )
    found: dict[str, str] = {}
    for run in ctx.tracker.search([exp_id], flt, ["attributes.start_time DESC"], 10000):
        found.setdefault(run.data.tags.get("Image_id", ""), run.info.run_id)
    return found


def _explain(
    ctx: Context, algo: Any, model: Any, labels: list[str], todo: list[Any], images: np.ndarray
) -> Iterator[Any]:
    """Each selected image's files and metrics (:mod:`xaitk_exp.explain`), in order, in a folder per image under
    one temporary folder that is removed when the generator closes. With ``n_jobs`` > 1 the images are spread over
    joblib worker processes, so the maps, the metrics and the pictures are made in parallel while this process
    records the finished ones."""
    import shutil

    from xaitk_exp.config import to_dict
    from xaitk_exp.explain import ExplainSpec, ImageTask, explain_images, iter_explained
    from xaitk_exp.metrics.settings import settings_from_config

    settings = settings_from_config(ctx.cfg.get("metrics"))
    permuted = None
    if settings.enabled and settings.sanity:
        from xaitk_exp.metrics.record import permuted_model_for

        permuted = permuted_model_for(ctx)
    spec = ExplainSpec(
        algorithm=to_dict(ctx.cfg.saliency),
        image_shape=tuple(ctx.split.image_shape),
        extra_allowed=tuple(ctx.extra_allowed),
        model=model,
        chunk_size=int(ctx.cfg.chunk_size),
        labels=labels,
        metrics=to_dict(ctx.cfg.metrics) if settings.enabled else None,
        permuted_model=permuted,
    )
    root = Path(tempfile.mkdtemp(prefix="xaitk-exp-saliency-"))
    tasks = []
    for i, run in enumerate(todo):
        k = int(run.data.tags["Image_id"])
        conf = run.data.metrics.get("Predicted_class_conf")
        tasks.append(ImageTask(k, images[k], run.data.tags["Predicted_class"], conf, str(root / f"{i:06d}")))
    n_jobs = int(ctx.cfg.n_jobs)
    try:
        if n_jobs == 1 or len(tasks) < 2:
            yield from iter_explained(spec, tasks)
            return
        from joblib import Parallel, cpu_count, delayed

        workers = n_jobs if n_jobs > 0 else cpu_count()
        per = max(1, -(-len(tasks) // (workers * 4)))
        batches = [tasks[i : i + per] for i in range(0, len(tasks), per)]
        for result in Parallel(n_jobs=n_jobs, return_as="generator")(
            delayed(explain_images)(spec, b) for b in batches
        ):
            yield from result
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _check_update(ctx: Context, run_id: str, exp_id: str, algo: Any) -> None:
    """An edited run keeps its params: refuse an update that would change them."""
    run = ctx.get_run_in(run_id, "update_run_id", ctx.experiment_name("Saliency Map Generation"), finished=False)
    if run.info.experiment_id != exp_id:
        raise ConfigError("update_run_id", run_id, "a run in the saliency experiment")
    from xaitk_exp.tracking.base import _stringify

    wanted = {k: _stringify(v) for k, v in algo.config().items()}
    differs = sorted(k for k, v in wanted.items() if k in run.data.params and run.data.params[k] != v)
    if differs:
        raise ConfigError(
            "update_run_id",
            run_id,
            f"a run recorded with the same saliency params (these differ: {', '.join(differs)}); "
            "MLflow params are immutable: drop update_run_id to record a new run",
        )


def _log_one(ctx: Context, exp_id: str, algo: Any, eval_run: Any, result: Any, update_run_id: str | None) -> str:
    """One image's saliency run: tags, params, metrics, then every file :mod:`xaitk_exp.explain` wrote for it."""
    tracker = ctx.tracker
    k = int(eval_run.data.tags["Image_id"])
    tags = {
        "Dataset": ctx.dataset_name,
        "Datasplit": eval_run.data.tags.get("Datasplit", "test"),
        "Evaluation_exp_id": eval_run.info.experiment_id,
        "Evaluation_run_id": eval_run.info.run_id,
        "Evaluation_summary_run_id": ctx.evaluation_run_id or "",
        "Image_id": k,
        "Predicted_class": eval_run.data.tags["Predicted_class"],
        "Predicted_class_index": result.predicted_index,
        "GT_class": eval_run.data.tags.get("GT_class", ""),
        "Saliency_algorithm": algo.name,
        "Train_run_id": ctx.train_run_id or "",
        **ctx.provenance_tags("saliency"),
    }
    if "Image_path" in eval_run.data.tags:
        tags["Image_path"] = eval_run.data.tags["Image_path"]
    if update_run_id:
        tags["Modified_run"] = "True"
    conf = eval_run.data.metrics.get("Predicted_class_conf")
    with tracker.run(exp_id, f"ImageID-{k}_saliency_maps", tags=tags, run_id=update_run_id) as run_id:
        metrics = {"Predicted_class_conf": conf} if conf is not None else {}
        metrics.update(result.metrics)
        # one batched write and one artifact upload per run: per-run calls dominate the stage's overhead
        tracker.log(run_id, params=None if update_run_id else algo.config(), metrics=metrics)
        if not update_run_id:
            ctx.write_config(Path(result.folder))
        tracker.log_artifacts(run_id, result.folder)
    return run_id

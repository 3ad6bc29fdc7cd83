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

NPY_DIR = "saliency_map_np_arrays"
FIGURE = "Image_saliency_maps.png"


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
    maps_iter = _compute(ctx, algo, model, [images[int(r.data.tags["Image_id"])] for r in todo])
    for run, maps in tqdm(
        zip(todo, maps_iter), total=len(todo), desc=f"saliency {algo.name}", unit="img",
        disable=not cfg.progress,
    ):
        updated = str(update) if update else None
        done[run.data.tags["Image_id"]] = _log_one(ctx, exp_id, algo, run, images, maps, labels, updated)
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


def _compute(ctx: Context, algo: Any, model: Any, imgs: list[np.ndarray]) -> Iterator[np.ndarray]:
    """Maps per image in order; with ``n_jobs`` > 1 images are spread over joblib worker processes."""
    from xaitk_exp.blackbox import SklearnBlackbox

    from xaitk_exp.saliency import compute_single_threaded

    n_jobs = int(ctx.cfg.n_jobs)
    if n_jobs == 1 or len(imgs) < 2:
        bb = SklearnBlackbox(model, int(ctx.cfg.chunk_size))
        for img in imgs:
            yield compute_single_threaded(algo, img, bb)
        return
    from joblib import Parallel, cpu_count, delayed

    from xaitk_exp.config import to_dict
    from xaitk_exp.saliency import compute_many

    workers = n_jobs if n_jobs > 0 else cpu_count()
    per = max(1, -(-len(imgs) // (workers * 4)))
    batches = [imgs[i : i + per] for i in range(0, len(imgs), per)]
    node = to_dict(ctx.cfg.saliency)
    par = Parallel(n_jobs=n_jobs, return_as="generator")
    for result in par(
        delayed(compute_many)(node, ctx.split.image_shape, model, b, int(ctx.cfg.chunk_size), ctx.extra_allowed)
        for b in batches
    ):
        yield from result


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


def _log_one(
    ctx: Context,
    exp_id: str,
    algo: Any,
    eval_run: Any,
    images: np.ndarray,
    maps: np.ndarray,
    labels: list[str],
    update_run_id: str | None,
) -> str:
    from xaitk_exp.render import saliency_figure
    from xaitk_exp.saliency import class_maps

    tracker = ctx.tracker
    k = int(eval_run.data.tags["Image_id"])
    predicted = eval_run.data.tags["Predicted_class"]
    pred_idx = labels.index(predicted) if predicted in labels else int(np.argmax(maps.sum(axis=(-1, -2))))
    tags = {
        "Dataset": ctx.dataset_name,
        "Datasplit": eval_run.data.tags.get("Datasplit", "test"),
        "Evaluation_exp_id": eval_run.info.experiment_id,
        "Evaluation_run_id": eval_run.info.run_id,
        "Evaluation_summary_run_id": ctx.evaluation_run_id or "",
        "Image_id": k,
        "Predicted_class": predicted,
        "Predicted_class_index": pred_idx,
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
        from xaitk_exp.metrics.pictures import curves_figure
        from xaitk_exp.metrics.record import CURVES_FIGURE, image_metrics

        quality = image_metrics(ctx, algo, images[k], class_maps(maps), pred_idx, k)  # None: metrics.enabled=false
        metrics = {"Predicted_class_conf": conf} if conf is not None else {}
        metrics.update(quality.values if quality is not None else {})
        # one batched write and one artifact upload per run: per-run calls dominate the stage's overhead
        tracker.log(run_id, params=None if update_run_id else algo.config(), metrics=metrics)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            if not update_run_id:
                ctx.write_config(root)
            npy = root / NPY_DIR
            npy.mkdir()
            np.save(npy / "saliency_maps.npy", maps)
            np.save(npy / "image.npy", images[k])
            title = f"{algo.name} | image {k} | predicted {predicted} ({conf:.3f})" if conf is not None else algo.name
            saliency_figure(images[k], class_maps(maps), labels, pred_idx, root / FIGURE, title)
            if quality is not None:
                title = f"{algo.name} | image {k} | class {predicted}"
                curves_figure(quality.curves, quality.values, root / CURVES_FIGURE, title)
            tracker.log_artifacts(run_id, tmp)
    return run_id

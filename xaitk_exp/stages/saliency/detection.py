"""The saliency stage for a task that explains detections (``Task.explains == "detections"``): D-RISE or RandomGrid
maps (xaitk-saliency's ``DRISEStack`` / ``RandomGridStack``, computed a chunk of masks at a time by
:mod:`xaitk_exp.detection.drise`), one saliency run per explained detection.

Images are chosen as for classifiers (the query's filter strings over the evaluation's image runs); within an
image, the detector runs again on it and ``query.min_score`` / ``query.label`` choose its detections. All chosen
detections of an image are explained with one set of masks (each detection's map is what a call for it alone gives:
the masks are seeded, the similarity and the scaling are per detection). Each run holds ``saliency_maps.npy``
``[1, H, W]``, the image and a picture of the overlay with the box; with ``metrics.enabled``, deletion / insertion
scored with D-RISE's similarity, their random baselines and, where the dataset has boxes, the pointing game.

One process: ``n_jobs`` > 1 is refused in one line, as is ``update_run_id`` (a detection's run is not edited).
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xaitk_exp import schema
from xaitk_exp.errors import ConfigError, TrackingError
from xaitk_exp.metrics.names import POINTING_GAME
from xaitk_exp.settings.saliency import MEAN_FILL
from xaitk_exp.stages.context import Context
from xaitk_exp.stages.describe import print_where
from xaitk_exp.stages.shards import shard_tags, share

#: the classification default of ``query.order_by``; a detection evaluation lists its images by the task's order
CLASSIFICATION_ORDER = f"metrics.{schema.PREDICTED_CLASS_CONF} DESC"
LEGEND = "red = evidence for the detection (raises its D-RISE similarity), blue = against"


@dataclass
class Explained:
    """One image's chosen detections and their maps: ``maps`` ``[len(chosen), H, W]`` in ``[-1, 1]``, in the order
    of ``chosen`` (indices into ``detections``)."""

    detections: Any  #: the image's :class:`~xaitk_exp.detection.blackbox.Detections`, every one
    chosen: list[int]
    maps: np.ndarray


def label_indices(value: Any, index2label: Mapping[int, Any]) -> list[int] | None:
    """``query.label`` as class indices: None (every class), a class name, or a class index; one-line
    :class:`ConfigError` naming the key otherwise."""
    if value is None:
        return None
    by_name = [i for i, name in index2label.items() if str(name) == str(value)]
    if by_name:
        return by_name
    if str(value).lstrip("-").isdigit() and int(value) in index2label:
        return [int(value)]
    names = ", ".join(str(n) for n in index2label.values())
    raise ConfigError("query.label", value, f"one of the detector's classes ({names}) or a class index "
                                            f"0..{len(index2label) - 1}")


def choose(blackbox: Any, image: np.ndarray, min_score: float | None = None,
           labels: list[int] | None = None) -> tuple[Any, list[int]]:
    """Detect on ``image`` (``[H, W(, C)]``): its detections and the indices of those scoring at least
    ``min_score`` whose class is one of ``labels`` (None: any)."""
    found = next(iter(blackbox.detect([image])))
    return found, [int(j) for j in found.chosen(min_score, labels)]


def detection_maps(algo: Any, blackbox: Any, image: np.ndarray, found: Any, indices: list[int],
                   chunk_size: int = 256) -> np.ndarray:
    """``[len(indices), H, W]`` maps in ``[-1, 1]`` of detections ``indices`` of ``found``, made by ``algo``'s
    generator (:class:`~xaitk_exp.stages.saliency.algorithm.Algorithm`) ``chunk_size`` masks at a time."""
    from xaitk_exp.detection.drise import drise_maps

    if not indices:
        return np.zeros((0, *image.shape[:2]))
    if algo.fill == MEAN_FILL:  # fill: auto on a colour image: its mean colour
        channels = image.shape[2] if image.ndim == 3 else 1
        algo.generator.fill = np.asarray(image, dtype=float).reshape(-1, channels).mean(axis=0)
    bboxes, scores, objectness = found.select(indices).xaitk_inputs(blackbox.n_classes)
    maps = drise_maps(algo.generator, image, bboxes, scores, blackbox, objectness, chunk_size)
    return -maps if algo.sign == -1 else maps


def explain_image(algo: Any, blackbox: Any, image: np.ndarray, min_score: float | None = None,
                  labels: list[int] | None = None, chunk_size: int = 256) -> Explained:
    """:func:`choose` then :func:`detection_maps` of every chosen detection."""
    image = algo.prepare(image)
    found, chosen = choose(blackbox, image, min_score, labels)
    return Explained(found, chosen, detection_maps(algo, blackbox, image, found, chosen, chunk_size))


def box_text(box: Any) -> str:
    """The ``Box`` tag: ``x0,y0,x1,y1`` in the image's pixels."""
    return ",".join(f"{float(v):.6g}" for v in box)


def quality(ctx: Context, blackbox: Any, image: np.ndarray, sal: np.ndarray, found: Any, j: int,
            truth: tuple[np.ndarray, np.ndarray] | None, seed: tuple[int, ...]) -> dict[str, float]:
    """Detection ``j``'s map quality (``metrics:``): deletion / insertion AUCs with D-RISE's similarity, the
    random-order baselines and, with ground truth, the pointing game (left out where no true box matches)."""
    from xaitk_exp.detection.quality import detection_quality

    m = ctx.settings.metrics
    h, w = image.shape[:2]
    steps = 100 if m.step is None else max(1, math.ceil(h * w / int(m.step)))  # auto: ceil(H*W / 100) pixels a step
    bboxes, scores, objectness = found.select([j]).xaitk_inputs(blackbox.n_classes)
    obj = None if objectness is None else float(objectness[0])
    gt_boxes, gt_labels = truth if truth is not None else (None, None)
    q = detection_quality(image, sal, bboxes[0], int(found.labels[j]), scores[0], blackbox, obj, gt_boxes, gt_labels,
                          steps, m.substrate, m.substrate, int(np.random.SeedSequence(seed).generate_state(1)[0]))
    out = {"Deletion_AUC": q.deletion_auc, "Insertion_AUC": q.insertion_auc,
           "Deletion_AUC_random": q.deletion_auc_random, "Insertion_AUC_random": q.insertion_auc_random}
    if not math.isnan(q.pointing):
        out[POINTING_GAME] = q.pointing
    return out


def ground_truth(split: Any, split_name: str, k: int, index2label: Mapping[int, Any]
                 ) -> tuple[np.ndarray, np.ndarray] | None:
    """Image ``k``'s true boxes ``[N, 4]`` (x0, y0, x1, y1) and the detector's class indices ``[N]``, where the split
    has COCO annotations (``dataset=coco dataset.annotations=...``: its test split), else None."""
    annotations = getattr(split, "annotations", None) if split_name == "test" else None
    if annotations is None:
        return None
    image_ids = list(getattr(split, "image_ids", None) or range(k + 1))
    boxes, labels = annotations.ground_truth(image_ids[k], annotations.category_index(index2label))
    return np.asarray(boxes, float).reshape(-1, 4), np.asarray(labels, np.int64).reshape(-1)


def image_order(ctx: Context) -> str:
    """How the chosen images are ordered: ``query.order_by``, or the task's order (``metrics.Max_score DESC``) in
    place of the classification default."""
    q = ctx.settings.query
    return ctx.task.order_by if q.order_by in (None, CLASSIFICATION_ORDER) else str(q.order_by)


def run_detection_saliency(ctx: Context, model: Any, algo: Any, images_runs: list[Any]) -> list[str]:
    """The saliency stage for detections (called by :func:`~xaitk_exp.stages.saliency.stage.run_saliency` with the
    evaluation's image runs the query selected, in order)."""
    settings, tracker, task = ctx.settings, ctx.tracker, ctx.task
    if ctx.processes > 1:
        raise ConfigError("n_jobs", settings.n_jobs, f"1 for task={task.name} (its saliency stage runs in one process; "
                          "chunk_size sets the images per detector call and the masks per step)")
    if settings.update_run_id:
        raise ConfigError("update_run_id", settings.update_run_id, f"unset for task={task.name} (a detection's "
                          "saliency run is not edited: run the stage again, or force=true)")
    q = settings.query
    selected = share(images_runs, settings.shard, settings.shards)
    split_name = images_runs[0].data.tags.get(schema.DATASPLIT, "test")
    images = ctx.split.images(split_name)
    for run in selected:
        k = int(run.data.tags[schema.IMAGE_ID])
        if k >= len(images):
            raise TrackingError(f"evaluation run {run.info.run_id} names Image_id={k}, outside the {split_name} "
                                f"split ({len(images)} images): the dataset config differs from the evaluation's")
    blackbox = task.blackbox(model, settings.chunk_size)
    labels = label_indices(q.label, blackbox.index2label)
    exp_id = tracker.experiment(ctx.experiment_name(schema.SALIENCY), framework=ctx.framework)
    done = {} if settings.force or tracker.created_here(exp_id) else finished_runs(ctx, exp_id)
    base = {
        schema.DATASET: ctx.dataset_name,
        schema.DATASPLIT: split_name,
        schema.EVALUATION_SUMMARY_RUN_ID: ctx.evaluation_run_id or "",
        schema.SALIENCY_ALGORITHM: algo.name,
        schema.WORK_HASH: ctx.hash_for("saliency_work"),
        schema.TRAIN_RUN_ID: ctx.train_run_id or "",
        **ctx.provenance_tags("saliency"),
        **shard_tags(ctx),
    }
    params = algo.config()
    run_ids: list[str] = []
    reused = 0
    root = Path(tempfile.mkdtemp(prefix="xaitk-exp-detsal-"))
    try:
        for run in selected:
            k = int(run.data.tags[schema.IMAGE_ID])
            image = algo.prepare(np.asarray(images[k]))
            found, chosen = choose(blackbox, image, q.min_score, labels)
            if not chosen:
                print(f"[saliency] {algo.name}: image {k}: no detection with query.min_score={q.min_score}, "
                      f"query.label={q.label}")
            todo = [j for j in chosen if (str(k), str(j)) not in done]  # maps of the others: reused
            result = Explained(found, todo, detection_maps(algo, blackbox, image, found, todo, settings.chunk_size))
            truth = (ground_truth(ctx.split, split_name, k, blackbox.index2label)
                     if settings.metrics.enabled and todo else None)
            for j in chosen:
                if j not in todo:
                    run_ids.append(done[(str(k), str(j))])
                    reused += 1
                    continue
                i = todo.index(j)
                values = quality(ctx, blackbox, image, result.maps[i], found, j, truth,
                                 (settings.metrics.seed, k, j)) if settings.metrics.enabled else {}
                run_ids.append(record_detection(ctx, exp_id, base, params, run, image, result, i, root / f"{k}-{j}",
                                                values, blackbox.index2label, algo.name))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if reused:
        print(f"[saliency] {algo.name}: reused {reused} FINISHED run(s) of the same detection(s), algorithm settings "
              "and evaluation (force=true reruns)")
    print(f"[saliency] {algo.name}: {len(run_ids)} detection run(s) in "
          f"'{ctx.experiment_name(schema.SALIENCY)}': " + ", ".join(run_ids))
    ctx.results["saliency_run_ids"] = run_ids
    print_where(ctx, "saliency", exp_id, run_ids, f"tags.{schema.SALIENCY_ALGORITHM} = '{algo.name}'")
    return run_ids


def record_detection(ctx: Context, exp_id: str, base: Mapping[str, Any], params: Mapping[str, Any], evaluation: Any,
                     image: np.ndarray, result: Explained, i: int, folder: Path, values: Mapping[str, float],
                     index2label: Mapping[int, Any], algorithm: str) -> str:
    """The saliency run of ``result.chosen[i]``: tags, params and metrics in one batch, then its files."""
    from xaitk_exp.viz.figures import detection_figure

    k, j = int(evaluation.data.tags[schema.IMAGE_ID]), result.chosen[i]
    found = result.detections
    label, score, box = int(found.labels[j]), float(found.scores[j]), found.boxes[j]
    name = str(index2label.get(label, label))
    tags = {
        **base,
        schema.EVALUATION_EXP_ID: evaluation.info.experiment_id,
        schema.EVALUATION_RUN_ID: evaluation.info.run_id,
        schema.IMAGE_ID: k,
        schema.DETECTION: j,
        schema.PREDICTED_CLASS: label,
        schema.PREDICTED_LABEL: name,
        schema.BOX: box_text(box),
    }
    if schema.IMAGE_PATH in evaluation.data.tags:
        tags[schema.IMAGE_PATH] = evaluation.data.tags[schema.IMAGE_PATH]
    npy = folder / schema.NPY_DIR
    npy.mkdir(parents=True)
    np.save(npy / schema.MAPS_NPY, result.maps[i : i + 1])
    np.save(npy / schema.IMAGE_NPY, image)
    title = f"{algorithm} | image {k} | detection {j}: {name} {score:.3f} at [{box_text(box)}]"
    figure = folder / schema.DETECTION_FIGURE
    detection_figure(image, result.maps[i], box, f"{name} {score:.2f}", figure, title, legend=LEGEND)
    config = folder / schema.CONFIG_DIR
    config.mkdir()
    for file, text in ctx.config_texts().items():
        (config / file).write_text(text)
    tracker = ctx.tracker
    with tracker.run(exp_id, schema.detection_saliency_run(k, j), tags=tags) as run_id:
        tracker.log(run_id, params=params, metrics={schema.SCORE: score, **values})
        tracker.log_artifacts(run_id, str(folder))
        tracker.log_image(run_id, figure, schema.saliency_image_key(algorithm))
    return run_id


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

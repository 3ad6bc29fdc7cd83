"""The saliency stage for a task that explains detections (``Task.explains == "detections"``): D-RISE or RandomGrid
maps (xaitk-saliency's ``DRISEStack`` / ``RandomGridStack``, computed a chunk of masks at a time by
:mod:`xaitk_exp.detection.drise`), one saliency run per explained detection.

Images are chosen as for classifiers (the query's filter strings over the evaluation's image runs); within an
image, the detector runs again on it and ``query.min_score`` / ``query.label`` choose its detections. All chosen
detections of an image are explained with one set of masks (each detection's map is what a call for it alone gives:
the masks are seeded, the similarity and the scaling are per detection). Each run holds ``saliency_maps.npy``
``[1, H, W]``, the image and a picture of the overlay with the box; with ``metrics.enabled``, deletion / insertion
scored with D-RISE's similarity, their random baselines and, where the dataset has boxes, the pointing game.

With ``n_jobs`` > 1, worker processes take whole images (the same code, so the same bits). ``update_run_id`` rewrites
that detection saliency run for the first detection the query selects (tagged ``Modified_run=True`` and with what it
showed before), as for classifiers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xaitk_exp import schema
from xaitk_exp.errors import ConfigError, QueryError, TrackingError
from xaitk_exp.settings.metrics import MetricSettings
from xaitk_exp.settings.saliency import MEAN_FILL
from xaitk_exp.stages.context import Context
from xaitk_exp.stages.describe import print_where
from xaitk_exp.stages.saliency.detection_runs import check_update, detection_of, finished_runs
from xaitk_exp.stages.saliency.quality import detection_metrics, ground_truth
from xaitk_exp.stages.shards import shard_tags, share
from xaitk_exp.tracking.tracker import Tracker

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


def image_order(ctx: Context) -> str:
    """How the chosen images are ordered: ``query.order_by``, or the task's order (``metrics.Max_score DESC``) in
    place of the classification default."""
    q = ctx.settings.query
    return ctx.task.order_by if q.order_by in (None, CLASSIFICATION_ORDER) else str(q.order_by)


@dataclass
class DetectionSpec:
    """What every image of one stage shares, in this process and in worker processes (pickled once per job)."""

    algorithm: dict[str, Any]  #: the ``saliency`` config node, as a plain dict
    image_shape: tuple[int, ...]
    extra_allowed: tuple[str, ...]
    model: Any
    task: str  #: the task's name: a worker looks it up and makes its black box
    chunk_size: int
    min_score: float | None
    labels: list[int] | None  #: ``query.label`` as class indices (None: any)
    metrics: MetricSettings | None  #: None: no quality metrics
    tracker: tuple[str, str, str | None, str]  #: :meth:`Tracker.reopen_args`
    experiment_id: str
    tags: dict[str, Any]  #: tags every detection's run gets
    params: dict[str, Any]
    config_files: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    update_run_id: str | None = None  #: rewrite this run for the first chosen detection instead of opening new ones


@dataclass
class ImageJob:
    image_id: int
    image: np.ndarray
    evaluation: dict[str, Any]  #: the evaluation's image run: ``run_id``, ``experiment_id``, ``tags``
    done: dict[int, str]  #: detection index -> its FINISHED run, reused
    truth: tuple[np.ndarray, np.ndarray] | None  #: ground-truth boxes and class indices, where known
    folder: str  #: where this image's files go (created here)


@dataclass
class ImageDone:
    image_id: int
    run_ids: list[str]  #: the chosen detections' runs, in detection order
    reused: int


#: per process: the last algorithm and black box built (a worker keeps them between images)
_BUILT: dict[str, tuple[Any, Any]] = {}


def _built(spec: DetectionSpec) -> tuple[Any, Any]:
    import json

    from xaitk_exp.stages.saliency.algorithm import Algorithm
    from xaitk_exp.tasks import task_named

    key = json.dumps([spec.algorithm, list(spec.image_shape), list(spec.extra_allowed), spec.task, spec.chunk_size,
                      id(spec.model)], sort_keys=True, default=str)
    if key not in _BUILT:
        _BUILT.clear()
        _BUILT[key] = (Algorithm(spec.algorithm, spec.image_shape, spec.extra_allowed),
                       task_named(spec.task).blackbox(spec.model, spec.chunk_size))
    return _BUILT[key]


def explain_and_record_image(spec: DetectionSpec, job: ImageJob, tracker: Tracker | None = None) -> ImageDone:
    """One image: its chosen detections explained and each recorded in a run of its own, through ``tracker`` (in a
    worker process: its own on the same store). The same code on every path, under one BLAS thread, so ``n_jobs``
    changes no bit."""
    import os

    from threadpoolctl import threadpool_limits

    from xaitk_exp.tracking.factory import worker_tracker

    if tracker is None:
        os.environ.update(spec.env)
        tracker = worker_tracker(spec.tracker)
    algo, blackbox = _built(spec)
    k = job.image_id
    with threadpool_limits(limits=1, user_api="blas"):
        image = algo.prepare(np.asarray(job.image))
        found, chosen = choose(blackbox, image, spec.min_score, spec.labels)
        if spec.update_run_id:
            chosen = chosen[:1]  # one run to rewrite: the first chosen detection
        todo = [j for j in chosen if j not in job.done]  # maps of the others: reused
        result = Explained(found, todo, detection_maps(algo, blackbox, image, found, todo, spec.chunk_size))
        run_ids = []
        for j in chosen:
            if j in job.done:
                run_ids.append(job.done[j])
                continue
            i = todo.index(j)
            values = {} if spec.metrics is None else detection_metrics(spec.metrics, blackbox, image, result.maps[i], found, j,
                                                              job.truth, (spec.metrics.seed, k, j))
            run_ids.append(record_detection(tracker, spec, job, image, result, i, values, blackbox.index2label,
                                            algo.name))
    return ImageDone(k, run_ids, len(chosen) - len(todo))


def run_detection_saliency(ctx: Context, model: Any, algo: Any, images_runs: list[Any]) -> list[str]:
    """The saliency stage for detections (called by :func:`~xaitk_exp.stages.saliency.stage.run_saliency` with the
    evaluation's image runs the query selected, in order). With ``n_jobs`` > 1, images are shared with worker
    processes (:func:`xaitk_exp.parallel.share_work`), each recording its images' runs."""
    from xaitk_exp.settings.nodes import to_dict
    from xaitk_exp.stages.saliency.image import WORKER_ENV

    settings, tracker, task = ctx.settings, ctx.tracker, ctx.task
    update = settings.update_run_id
    q = settings.query
    selected = share(images_runs, settings.shard, settings.shards)
    if update and settings.shard:  # as for classifiers: the first selected goes to shard 0
        selected = []
    split_name = images_runs[0].data.tags.get(schema.DATASPLIT, "test")
    images = ctx.split.images(split_name)
    for run in selected:
        k = int(run.data.tags[schema.IMAGE_ID])
        if k >= len(images):
            raise TrackingError(f"evaluation run {run.info.run_id} names Image_id={k}, outside the {split_name} "
                                f"split ({len(images)} images): the dataset config differs from the evaluation's")
    index2label = task.blackbox(model, settings.chunk_size).index2label
    labels = label_indices(q.label, index2label)
    exp_id = tracker.experiment(ctx.experiment_name(schema.SALIENCY), framework=ctx.framework)
    previous = check_update(ctx, update, exp_id, algo) if update else {}
    done = {} if settings.force or update or tracker.created_here(exp_id) else finished_runs(ctx, exp_id)
    spec = DetectionSpec(
        algorithm=to_dict(ctx.cfg.saliency), image_shape=tuple(ctx.split.image_shape),
        extra_allowed=tuple(ctx.extra_allowed), model=model, task=task.name, chunk_size=settings.chunk_size,
        min_score=q.min_score, labels=labels, metrics=settings.metrics if settings.metrics.enabled else None,
        tracker=tracker.reopen_args(), experiment_id=exp_id,
        tags={
            schema.DATASET: ctx.dataset_name,
            schema.DATASPLIT: split_name,
            schema.EVALUATION_SUMMARY_RUN_ID: ctx.evaluation_run_id or "",
            schema.SALIENCY_ALGORITHM: algo.name,
            schema.WORK_HASH: ctx.hash_for("saliency_work"),
            schema.TRAIN_RUN_ID: ctx.train_run_id or "",
            **ctx.provenance_tags("saliency"),
            **shard_tags(ctx),
            **previous,
        },
        params={} if update else algo.config(), config_files={} if update else ctx.config_texts(),
        env={k: os.environ[k] for k in WORKER_ENV if k in os.environ}, update_run_id=update,
    )
    root = Path(tempfile.mkdtemp(prefix="xaitk-exp-detsal-"))
    jobs = []
    for run in selected:
        k = int(run.data.tags[schema.IMAGE_ID])
        truth = ground_truth(ctx.split, split_name, k, index2label) if settings.metrics.enabled else None
        evaluation = {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id, "tags": dict(run.data.tags)}
        own = {int(j): r for (i, j), r in done.items() if i == str(k)}
        jobs.append(ImageJob(k, np.asarray(images[k]), evaluation, own, truth, str(root / str(k))))
    results: dict[int, ImageDone] = {}
    try:
        if update:  # image after image until one has a detection the query chooses
            for index, job in enumerate(jobs):
                results[index] = explain_and_record_image(spec, job, tracker)
                if results[index].run_ids:
                    jobs = jobs[: index + 1]
                    break
            if not any(r.run_ids for r in results.values()):
                raise QueryError(f"update_run_id={update}: no selected image has a detection with query.min_score="
                                 f"{q.min_score}, query.label={q.label}; the run is left as it was")
        elif ctx.processes > 1 and len(jobs) > 1:
            from xaitk_exp.parallel import share_work

            def here(job: ImageJob) -> ImageDone:
                return explain_and_record_image(spec, job, tracker)

            for index, result in share_work(iter(jobs), here, explain_and_record_image, (spec,), ctx.processes):
                results[index] = result
        else:
            for index, job in enumerate(jobs):
                results[index] = explain_and_record_image(spec, job, tracker)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    run_ids = [r for index in range(len(jobs)) for r in results[index].run_ids]
    for index, job in enumerate(jobs):
        if not results[index].run_ids:
            print(f"[saliency] {algo.name}: image {job.image_id}: no detection with query.min_score={q.min_score}, "
                  f"query.label={q.label}")
    if update and run_ids:
        k, j = jobs[-1].image_id, detection_of(tracker, run_ids[0])
        print(f"[saliency] edited run {update}: image {previous[schema.PREVIOUS_IMAGE_ID]} detection "
              f"{previous[schema.PREVIOUS_DETECTION]} -> image {k} detection {j}, renamed "
              f"{schema.detection_saliency_run(k, j)!r} (tagged {schema.MODIFIED_RUN}=True)")
    reused = sum(r.reused for r in results.values())
    if reused:
        print(f"[saliency] {algo.name}: reused {reused} FINISHED run(s) of the same detection(s), algorithm settings "
              "and evaluation (force=true reruns)")
    print(f"[saliency] {algo.name}: {len(run_ids)} detection run(s) in "
          f"'{ctx.experiment_name(schema.SALIENCY)}': " + ", ".join(run_ids))
    ctx.results["saliency_run_ids"] = run_ids
    print_where(ctx, "saliency", exp_id, run_ids, f"tags.{schema.SALIENCY_ALGORITHM} = '{algo.name}'")
    return run_ids


def record_detection(tracker: Tracker, spec: DetectionSpec, job: ImageJob, image: np.ndarray, result: Explained,
                     i: int, values: Mapping[str, float], index2label: Mapping[int, Any], algorithm: str) -> str:
    """The saliency run of ``result.chosen[i]``: tags, params and metrics in one batch, then its files."""
    from xaitk_exp.viz.figures import detection_figure

    k, j = job.image_id, result.chosen[i]
    found = result.detections
    label, score, box = int(found.labels[j]), float(found.scores[j]), found.boxes[j]
    name = str(index2label.get(label, label))
    ev_tags = job.evaluation["tags"]
    tags = {
        **spec.tags,
        schema.EVALUATION_EXP_ID: job.evaluation["experiment_id"],
        schema.EVALUATION_RUN_ID: job.evaluation["run_id"],
        schema.IMAGE_ID: k,
        schema.DETECTION: j,
        schema.PREDICTED_CLASS: label,
        schema.PREDICTED_LABEL: name,
        schema.BOX: box_text(box),
    }
    if schema.IMAGE_PATH in ev_tags:
        tags[schema.IMAGE_PATH] = ev_tags[schema.IMAGE_PATH]
    if spec.update_run_id:  # renamed for the detection it now shows
        tags.update({schema.MODIFIED_RUN: "True", "mlflow.runName": schema.detection_saliency_run(k, j)})
    folder = Path(job.folder, str(j))
    npy = folder / schema.NPY_DIR
    npy.mkdir(parents=True)
    np.save(npy / schema.MAPS_NPY, result.maps[i : i + 1])
    np.save(npy / schema.IMAGE_NPY, image)
    title = f"{algorithm} | image {k} | detection {j}: {name} {score:.3f} at [{box_text(box)}]"
    figure = folder / schema.DETECTION_FIGURE
    detection_figure(image, result.maps[i], box, f"{name} {score:.2f}", figure, title, legend=LEGEND)
    if spec.config_files:
        config = folder / schema.CONFIG_DIR
        config.mkdir()
        for file, text in spec.config_files.items():
            (config / file).write_text(text)
    with tracker.run(spec.experiment_id, schema.detection_saliency_run(k, j), tags=tags,
                     run_id=spec.update_run_id) as run_id:
        tracker.log(run_id, params=spec.params, metrics={schema.SCORE: score, **values})
        tracker.log_artifacts(run_id, str(folder))
        tracker.log_image(run_id, figure, schema.saliency_image_key(algorithm))
    return run_id


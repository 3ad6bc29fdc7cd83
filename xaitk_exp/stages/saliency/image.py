"""The saliency stage's per-image work: maps, quality metrics, pictures and arrays, then the image's run.

:func:`explain` makes one image's files in a folder and :func:`record` turns them into its saliency run, through
a :class:`~xaitk_exp.tracking.tracker.Tracker`. :func:`explain_and_record` does both, in the stage's own process or in
worker processes (:func:`explain_and_record_parallel`), each of which opens its own tracker on the same store:
with the recording spread over the workers too, nothing serial is left in the stage's process. Alone, the stage's
process writes each run in a background thread while it explains the next image
(:func:`explain_and_record_overlapped`). The same functions run on every path, under the same BLAS thread limit,
so ``n_jobs`` changes no bit of the maps or the metrics.

A worker writes the id of each run it opens beside the image's folder (``<folder>.run_id``) before anything else,
so that the stage can close, as KILLED, a run whose worker died: no run is left RUNNING.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xaitk_exp import schema
from xaitk_exp.parallel import share_work
from xaitk_exp.settings.metrics import MetricSettings
from xaitk_exp.stages.saliency.algorithm import Algorithm, class_maps
from xaitk_exp.tasks.base import Task
from xaitk_exp.tracking.factory import worker_tracker
from xaitk_exp.tracking.signals import sigterm_raises
from xaitk_exp.tracking.tracker import Tracker
from xaitk_exp.viz.figures import saliency_figure

NPY_DIR = schema.NPY_DIR
FIGURE = schema.SALIENCY_FIGURE
RUN_ID_SUFFIX = ".run_id"
#: environment a worker takes from the stage's process (a reused worker may have started before it was set)
WORKER_ENV = (
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR",
)


@dataclass
class ExplainSpec:
    """What every image of one stage shares to be explained; pickled once per batch sent to a worker."""

    algorithm: dict[str, Any]  #: the ``saliency`` config node, as a plain dict
    image_shape: tuple[int, ...]
    extra_allowed: tuple[str, ...]
    model: Any
    chunk_size: int
    labels: list[str]  #: display names, in the order of ``model.classes_``
    metrics: MetricSettings | None = None  #: the parsed ``metrics:`` block; None: no quality metrics
    permuted_model: Any = None  #: the permuted-label model of ``metrics.sanity``
    top_k: int | None = None  #: ``maps.top_k``: None (auto: every class up to 20, else 5), 0 (every class), k
    names: list[str] | None = None  #: the label a user reads per class (``labels``' order); None: ``labels``
    #: the task's name (``ctx.task.name``): a worker looks the task up (:func:`xaitk_exp.tasks.task_named`), which
    #: makes its black box and says which outputs get maps
    task: str = "classification"


@dataclass
class RecordSpec:
    """What every image's run shares: where it goes and what it carries besides the image's own values."""

    tracker: tuple[str, str, str | None, str]  #: :meth:`Tracker.reopen_args`: level, URI, artifact root, journal
    experiment_id: str
    tags: dict[str, Any]  #: tags every image's run gets
    params: dict[str, Any] | None  #: the algorithm's config; None when editing a run (params are immutable)
    config_files: dict[str, str] = field(default_factory=dict)  #: ``config/<name>`` -> text, for new runs
    update_run_id: str | None = None  #: edit this run instead of opening a new one
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class ImageTask:
    image_id: int
    image: np.ndarray
    evaluation: dict[str, Any]  #: the evaluation run: ``run_id``, ``experiment_id``, ``tags``, ``conf``
    folder: str  #: where this image's files go (created here)
    tags: dict[str, Any] = field(default_factory=dict)  #: this image's own extra tags (its description, an edit's past)

    @property
    def predicted(self) -> str:
        return str(self.evaluation["tags"][schema.PREDICTED_CLASS])

    @property
    def conf(self) -> float | None:
        return self.evaluation.get("conf")


@dataclass
class Explained:
    image_id: int
    folder: str
    predicted_index: int
    metrics: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None
    map_classes: list[str] = field(default_factory=list)  #: the class of each map in the ``.npy``, in order


#: per process: the last algorithm built (a seeded RISE keeps its shifts and mask lookup between images and batches)
_ALGORITHMS: dict[str, Any] = {}


def algorithm_for(spec: ExplainSpec) -> Any:
    """The spec's algorithm, built once per process."""
    key = json.dumps([spec.algorithm, list(spec.image_shape), list(spec.extra_allowed)], sort_keys=True, default=str)
    algo = _ALGORITHMS.get(key)
    if algo is None:
        _ALGORITHMS.clear()
        algo = _ALGORITHMS[key] = Algorithm(spec.algorithm, spec.image_shape, spec.extra_allowed)
    return algo


def tracker_for(rspec: RecordSpec) -> Tracker:
    """A tracker on the spec's store at the spec's level, opened once per worker process."""
    os.environ.update(rspec.env)
    return worker_tracker(rspec.tracker)


def explain_and_record(
    spec: ExplainSpec, rspec: RecordSpec, tasks: Sequence[ImageTask], tracker: Tracker | None = None
) -> list[Explained]:
    """Every task explained, then recorded through ``tracker`` (in a worker: this process's own, see
    :func:`tracker_for`)."""
    tracker = tracker if tracker is not None else tracker_for(rspec)
    out = []
    for result, task in zip(iter_explained(spec, tasks), tasks, strict=True):
        result.run_id = record(tracker, rspec, task, result)
        out.append(result)
    return out


def explain_and_record_overlapped(
    spec: ExplainSpec, rspec: RecordSpec, tasks: Sequence[ImageTask], tracker: Tracker
) -> Iterator[Explained]:
    """As :func:`explain_and_record`, yielding each image once recorded, with the run of image i written by a
    background thread while image i + 1 is explained (writing a run is mostly waiting on the store's commits).

    One image is recorded at a time, in order, so the runs and their start times are those of the serial loop. On
    an error, Ctrl-C or SIGTERM (raised here as :class:`~xaitk_exp.errors.RunKilled`) the run being written is
    finished before the exception leaves; a failed write closes its run FAILED (:meth:`Tracker.run`) and is raised
    here. The caller checks that the tracker may write from another thread (:meth:`Tracker.thread_bound`).
    """
    def recorded(job: tuple[Future[str], Explained]) -> Explained:
        job[1].run_id = job[0].result()
        return job[1]

    pool = ThreadPoolExecutor(1, thread_name_prefix="xaitk-exp-record")
    pending: tuple[Future[str], Explained] | None = None
    try:
        with sigterm_raises():
            for result, task in zip(iter_explained(spec, tasks), tasks, strict=True):
                done = recorded(pending) if pending is not None else None
                pending = (pool.submit(record, tracker, rspec, task, result), result)
                if done is not None:
                    yield done
            if pending is not None:
                job, pending = pending, None
                yield recorded(job)
    finally:
        pool.shutdown(wait=True)  # the run in flight ends FINISHED (or FAILED) before anything leaves


def explain_and_record_parallel(
    tracker: Tracker, spec: ExplainSpec, rspec: RecordSpec, tasks: Sequence[ImageTask], processes: int
) -> Iterator[Explained]:
    """The tasks shared by this process and ``processes - 1`` worker processes (:func:`xaitk_exp.parallel.share_work`),
    yielded as they are recorded. On an early exit the workers finish the images they hold; closing the runs of a
    worker that died is the caller's (:func:`close_orphans`)."""
    def here(batch: list[ImageTask]) -> list[Explained]:
        return explain_and_record(spec, rspec, batch, tracker)

    jobs = ([task] for task in tasks)
    work = share_work(jobs, here, explain_and_record, (spec, rspec), processes, warm_up)
    with sigterm_raises(), closing(work):  # SIGTERM reaches this process alone: end the work in order
        for _, results in work:
            yield from results


def warm_up(spec: ExplainSpec, rspec: RecordSpec) -> None:
    """A worker's start: its imports, the algorithm (a seeded RISE's shifts and mask lookup) and its tracker."""
    algorithm_for(spec)
    tracker_for(rspec)


def iter_explained(spec: ExplainSpec, tasks: Sequence[ImageTask]) -> Iterator[Explained]:
    """Each task's files and metrics, in order, one image at a time."""
    from threadpoolctl import threadpool_limits

    from xaitk_exp.tasks import task_named

    algo = algorithm_for(spec)
    kind = task_named(spec.task)
    blackbox = kind.blackbox(spec.model, spec.chunk_size)
    for task in tasks:
        # BLAS on one thread: the black box's small products run about 1.4x faster so, with the same bits; cores
        # are better spent on images in parallel
        with threadpool_limits(limits=1, user_api="blas"):
            yield explain(spec, algo, blackbox, task, kind)


def explain(spec: ExplainSpec, algo: Any, blackbox: Any, task: ImageTask, kind: Task | None = None) -> Explained:
    """One image: ``saliency_map_np_arrays/`` (maps and image), the maps' picture and, with metrics, the curves'
    picture, all in ``task.folder``; the metrics' values come back. ``kind``: the spec's task (looked up when
    None)."""
    if kind is None:
        from xaitk_exp.tasks import task_named

        kind = task_named(spec.task)
    # the task's outputs that get maps (classification: maps.top_k, predicted class first); the black box reports
    # only those, so only their maps are made
    blackbox, kept = kind.explained_outputs(blackbox, task.image, spec.top_k)
    maps = algo.compute(task.image, blackbox)
    shown = class_maps(maps)
    labels = spec.labels if kept is None else [spec.labels[i] for i in kept]
    names = spec.names or spec.labels
    names = names if kept is None else [names[i] for i in kept]
    # an evaluation recorded with other class names: the class the maps favour most
    pred_idx = labels.index(task.predicted) if task.predicted in labels else int(np.argmax(shown.sum(axis=(-1, -2))))
    root = Path(task.folder)
    npy = root / NPY_DIR
    npy.mkdir(parents=True, exist_ok=True)
    np.save(npy / schema.MAPS_NPY, maps)
    np.save(npy / schema.IMAGE_NPY, task.image)
    conf = f" ({task.conf:.3f})" if task.conf is not None else ""
    gt = task.evaluation["tags"].get(schema.GT_CLASS)
    truth = labels.index(str(gt)) if gt is not None and str(gt) in labels else None
    path = task.evaluation["tags"].get(schema.IMAGE_PATH)
    gt_name = task.evaluation["tags"].get(schema.GT_LABEL, gt)  # a class without a map: its label from the tags
    true_text = f", true {names[truth]}" if truth is not None else (f", true {gt_name}" if gt is not None else "")
    title = (f"{algo.name} | image {task.image_id}{' | ' + str(path) if path else ''}\n"
             f"predicted {names[pred_idx]}{conf}{true_text}")
    saliency_figure(task.image, shown, names, pred_idx, root / FIGURE, title, truth)
    values: dict[str, float] = {}
    if spec.metrics is not None:
        from xaitk_exp.stages.saliency.quality import CURVES_FIGURE, map_metrics
        from xaitk_exp.viz.curves import curves_figure

        quality = map_metrics(
            spec.metrics, blackbox, algo, task.image, shown, pred_idx, task.image_id, spec.permuted_model,
            spec.chunk_size, task=kind,
        )
        if quality is not None:
            values = dict(quality.values)
            curves_figure(
                quality.curves, quality.values, root / CURVES_FIGURE,
                f"{algo.name} | image {task.image_id} | class {names[pred_idx]}",
            )
    return Explained(task.image_id, task.folder, pred_idx, values, map_classes=[str(c) for c in labels])


def record(tracker: Tracker, rspec: RecordSpec, task: ImageTask, result: Explained) -> str:
    """The image's saliency run: tags, params and metrics in one batch, then every file in its folder."""
    ev = task.evaluation
    ev_tags = ev["tags"]
    tags = {
        **rspec.tags,
        schema.DATASPLIT: ev_tags.get(schema.DATASPLIT, "test"),
        schema.EVALUATION_EXP_ID: ev["experiment_id"],
        schema.EVALUATION_RUN_ID: ev["run_id"],
        schema.IMAGE_ID: task.image_id,
        schema.PREDICTED_CLASS: task.predicted,
        schema.PREDICTED_CLASS_INDEX: result.predicted_index,
        schema.MAP_CLASSES: ",".join(result.map_classes),
    }
    # no GT_* without ground truth; class names beside indices for image models
    for key in (schema.GT_CLASS, schema.PREDICTED_LABEL, schema.GT_LABEL):
        if key in ev_tags:
            tags[key] = ev_tags[key]
    if schema.IMAGE_PATH in ev_tags:
        tags[schema.IMAGE_PATH] = ev_tags[schema.IMAGE_PATH]
    if rspec.update_run_id:
        tags[schema.MODIFIED_RUN] = "True"
        tags["mlflow.runName"] = schema.saliency_run(task.image_id)  # renamed for the image it now shows
    tags.update(task.tags)
    name = schema.saliency_run(task.image_id)
    with tracker.run(rspec.experiment_id, name, tags=tags, run_id=rspec.update_run_id) as run_id:
        Path(task.folder + RUN_ID_SUFFIX).write_text(run_id)
        metrics = {schema.PREDICTED_CLASS_CONF: task.conf} if task.conf is not None else {}
        metrics.update(result.metrics)
        # one batched write and one artifact upload per run: per-run calls dominate the recording's cost
        tracker.log(run_id, params=rspec.params, metrics=metrics)
        if not rspec.update_run_id:
            config = Path(task.folder, "config")
            config.mkdir(parents=True, exist_ok=True)
            for file, text in rspec.config_files.items():
                (config / file).write_text(text)
        tracker.log_artifacts(run_id, task.folder)
        # the same picture as an MLflow image, one key per algorithm: the UI's image views compare runs by key
        algorithm = str(rspec.tags.get(schema.SALIENCY_ALGORITHM) or "saliency")
        tracker.log_image(run_id, Path(task.folder, FIGURE), schema.saliency_image_key(algorithm))
    return run_id


def close_orphans(tracker: Tracker, root: Path, status: str = "KILLED") -> list[str]:
    """Runs opened under ``root`` (see :data:`RUN_ID_SUFFIX`) that are still RUNNING: closed with ``status``."""
    closed = []
    for marker in sorted(root.glob("*" + RUN_ID_SUFFIX)):
        run_id = marker.read_text().strip()
        try:
            if tracker.get_run(run_id).info.status == "RUNNING":
                tracker.finish_run(run_id, status)
                closed.append(run_id)
        except Exception:  # best effort: the store may be what failed
            pass
    return closed

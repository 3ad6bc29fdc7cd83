"""The saliency stage's per-image work that needs no tracking store: maps, quality metrics, pictures and arrays.

The stage hands each image to :func:`explain_images`, in its own process (``n_jobs=1``) or in joblib worker
processes, and only records what comes back: every file of a run is written here, into a folder per image, so the
process that talks to MLflow spends its time on MLflow alone. The same function runs on both paths, under the same
BLAS thread limit, so ``n_jobs`` changes no bit of the maps or the metrics.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

NPY_DIR = "saliency_map_np_arrays"
FIGURE = "Image_saliency_maps.png"


@dataclass
class ExplainSpec:
    """What every image of one stage shares; pickled once per batch of images sent to a worker."""

    algorithm: dict[str, Any]  #: the ``saliency`` config node, as a plain dict
    image_shape: tuple[int, ...]
    extra_allowed: tuple[str, ...]
    model: Any
    chunk_size: int
    labels: list[str]  #: display names, in the order of ``model.classes_``
    metrics: dict[str, Any] | None = None  #: the ``metrics`` config node; None: no quality metrics
    permuted_model: Any = None  #: the permuted-label model of ``metrics.sanity``


@dataclass
class ImageTask:
    image_id: int
    image: np.ndarray
    predicted: str  #: the evaluation's ``Predicted_class`` tag
    conf: float | None  #: the evaluation's ``Predicted_class_conf``
    folder: str  #: where this image's files go (created here)


@dataclass
class Explained:
    image_id: int
    folder: str
    predicted_index: int
    metrics: dict[str, float] = field(default_factory=dict)


#: per worker process: the last algorithm built (a seeded RISE keeps its masks between images and batches)
_ALGORITHMS: dict[str, Any] = {}


def algorithm_for(spec: ExplainSpec) -> Any:
    """The spec's algorithm, built once per process."""
    import json

    from xaitk_exp.saliency import Algorithm

    key = json.dumps([spec.algorithm, list(spec.image_shape), list(spec.extra_allowed)], sort_keys=True, default=str)
    algo = _ALGORITHMS.get(key)
    if algo is None:
        _ALGORITHMS.clear()
        algo = _ALGORITHMS[key] = Algorithm(spec.algorithm, spec.image_shape, spec.extra_allowed)
    return algo


def explain_images(spec: ExplainSpec, tasks: Sequence[ImageTask]) -> list[Explained]:
    """Every task's files and metrics, in order (the body of a joblib job)."""
    return list(iter_explained(spec, tasks))


def iter_explained(spec: ExplainSpec, tasks: Sequence[ImageTask]) -> Iterator[Explained]:
    """Like :func:`explain_images`, one image at a time."""
    from threadpoolctl import threadpool_limits

    from xaitk_exp.blackbox import SklearnBlackbox

    algo = algorithm_for(spec)
    blackbox = SklearnBlackbox(spec.model, spec.chunk_size)
    for task in tasks:
        # BLAS on one thread: the black box's small products run about 1.4x faster so, with the same bits; cores
        # are better spent on images in parallel
        with threadpool_limits(limits=1, user_api="blas"):
            yield _explain_one(spec, algo, blackbox, task)


def _explain_one(spec: ExplainSpec, algo: Any, blackbox: Any, task: ImageTask) -> Explained:
    from xaitk_exp.render import saliency_figure
    from xaitk_exp.saliency import class_maps

    maps = algo.compute(task.image, blackbox)
    shown = class_maps(maps)
    labels = spec.labels
    if task.predicted in labels:
        pred_idx = labels.index(task.predicted)
    else:  # an evaluation recorded with other class names: the class the maps favour most
        pred_idx = int(np.argmax(maps.sum(axis=(-1, -2)) if maps.ndim == 3 else shown.sum(axis=(-1, -2))))
    root = Path(task.folder)
    npy = root / NPY_DIR
    npy.mkdir(parents=True, exist_ok=True)
    np.save(npy / "saliency_maps.npy", maps)
    np.save(npy / "image.npy", task.image)
    conf = f" ({task.conf:.3f})" if task.conf is not None else ""
    title = f"{algo.name} | image {task.image_id} | predicted {task.predicted}{conf}"
    saliency_figure(task.image, shown, labels, pred_idx, root / FIGURE, title)
    values: dict[str, float] = {}
    if spec.metrics is not None:
        from xaitk_exp.metrics.pictures import curves_figure
        from xaitk_exp.metrics.record import CURVES_FIGURE, map_metrics

        quality = map_metrics(
            spec.metrics, blackbox, algo, task.image, shown, pred_idx, task.image_id, spec.permuted_model,
            spec.chunk_size,
        )
        if quality is not None:
            values = dict(quality.values)
            curves_figure(
                quality.curves, quality.values, root / CURVES_FIGURE,
                f"{algo.name} | image {task.image_id} | class {task.predicted}",
            )
    return Explained(task.image_id, task.folder, pred_idx, values)

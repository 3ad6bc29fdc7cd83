"""The saliency stage's hook: one image's metrics (merged into the run's metric batch) and its curves picture."""

from __future__ import annotations

from typing import Any

import numpy as np

from xaitk_exp.metrics.image import ImageMetrics, evaluate_map
from xaitk_exp.metrics.maps import xcorr
from xaitk_exp.metrics.sanity import other_class_similarity, permuted_label_model
from xaitk_exp.settings.metrics import MetricSettings
from xaitk_exp.stages.saliency.algorithm import class_maps
from xaitk_exp.tasks.base import Task

CURVES_FIGURE = "Deletion_insertion_curves.png"
PERMUTED_KEY = "metrics_permuted_label_model"  # ctx.results cache: trained once per job


def permuted_model_for(ctx: Any) -> Any:
    """The permuted-label model of ``metrics.sanity``, trained once per job (cached in ``ctx.results``)."""
    permuted = ctx.results.get(PERMUTED_KEY)
    if permuted is None:
        split = ctx.split
        seed = ctx.settings.metrics.seed
        split_name = "train" if len(split.train_images) else "test"  # a pretrained model: every image is a test one
        permuted = permuted_label_model(ctx.model, split.images(split_name), split.labels(split_name), seed)
        ctx.results[PERMUTED_KEY] = permuted
    return permuted


def map_metrics(
    settings: MetricSettings,
    blackbox: Any,
    algo: Any,
    image: np.ndarray,
    maps: np.ndarray,
    class_index: int,
    image_id: int,
    permuted_model: Any = None,
    chunk_size: int = 256,
    *,
    task: Task,
) -> ImageMetrics | None:
    """Metrics of ``maps[class_index]`` for the saliency run of image ``image_id``; None when
    ``metrics.enabled=false``.

    ``image``: ``[H, W(, C)]`` in [0, 1]; ``maps``: ``[n_classes, H, W]`` (``class_maps`` output) with the class
    axis in the order of the model's ``classes_``; ``blackbox``: the batched black box the maps were computed
    through. With ``metrics.sanity=true`` the values include the two ``Sanity_*_xcorr`` checks, which need
    ``permuted_model`` (:func:`permuted_model_for`), explained through the black box of ``task`` (the saliency stage's).
    """
    if not settings.enabled:
        return None
    seed = (settings.seed, int(image_id))
    result = evaluate_map(blackbox.predict, image, maps[class_index], class_index, settings, seed)
    if settings.sanity:
        if permuted_model is None:
            raise ValueError("metrics.sanity=true needs the permuted-label model")
        permuted_box = task.blackbox(permuted_model, chunk_size)
        result.values.update(_sanity(blackbox.model, permuted_box, algo, image, maps, class_index, seed))
    return result


def _sanity(
    model: Any,
    permuted_box: Any,
    algo: Any,
    image: np.ndarray,
    maps: np.ndarray,
    class_index: int,
    seed: tuple[int, int],
) -> dict[str, float]:
    out = {"Sanity_other_class_xcorr": other_class_similarity(maps, class_index, seed)}
    label = model.classes_[class_index]
    same = [i for i, c in enumerate(permuted_box.model.classes_) if c == label]
    if same:
        perm_maps = class_maps(algo.compute(image, permuted_box))
        out["Sanity_permuted_labels_xcorr"] = xcorr(maps[class_index], perm_maps[same[0]])
    return out

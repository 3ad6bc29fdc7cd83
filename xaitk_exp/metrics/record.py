"""The saliency stage's hook: one image's metrics (merged into the run's metric batch) and its curves picture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from xaitk_exp.metrics.image import ImageMetrics

CURVES_FIGURE = "Deletion_insertion_curves.png"
PERMUTED_KEY = "metrics_permuted_label_model"  # ctx.results cache: trained once per job


def image_metrics(
    ctx: Any, algo: Any, image: np.ndarray, maps: np.ndarray, class_index: int, image_id: int
) -> ImageMetrics | None:
    """Metrics of ``maps[class_index]`` for the saliency run of image ``image_id``; None when
    ``metrics.enabled=false``.

    ``image``: ``[H, W(, C)]`` in [0, 1]; ``maps``: ``[n_classes, H, W]`` (``class_maps`` output) with the class
    axis in the order of ``ctx.model.classes_``. The model is reached through the same batched black box as the
    maps. With ``metrics.sanity=true`` the values include the two ``Sanity_*_xcorr`` checks.
    """
    from xaitk_exp.blackbox import SklearnBlackbox
    from xaitk_exp.metrics.image import evaluate_map
    from xaitk_exp.metrics.settings import settings_from_config

    settings = settings_from_config(ctx.cfg.get("metrics"))
    if not settings.enabled:
        return None
    blackbox = SklearnBlackbox(ctx.model, int(ctx.cfg.chunk_size))
    seed = (settings.seed, int(image_id))
    result = evaluate_map(blackbox.predict, image, maps[class_index], class_index, settings, seed)
    if settings.sanity:
        result.values.update(_sanity(ctx, algo, image, maps, class_index, settings.seed, seed))
    return result


def _sanity(
    ctx: Any, algo: Any, image: np.ndarray, maps: np.ndarray, class_index: int, base_seed: int, seed: tuple[int, int]
) -> dict[str, float]:
    from xaitk_exp.blackbox import SklearnBlackbox
    from xaitk_exp.metrics.maps import xcorr
    from xaitk_exp.metrics.sanity import other_class_similarity, permuted_label_model
    from xaitk_exp.saliency import class_maps

    permuted = ctx.results.get(PERMUTED_KEY)
    if permuted is None:
        split = ctx.split
        permuted = permuted_label_model(ctx.model, split.train_images, split.train_labels, base_seed)
        ctx.results[PERMUTED_KEY] = permuted
    out = {"Sanity_other_class_xcorr": other_class_similarity(maps, class_index, seed)}
    label = ctx.model.classes_[class_index]
    same = [i for i, c in enumerate(permuted.classes_) if c == label]
    if same:
        perm_maps = class_maps(algo.compute(image, SklearnBlackbox(permuted, int(ctx.cfg.chunk_size))))
        out["Sanity_permuted_labels_xcorr"] = xcorr(maps[class_index], perm_maps[same[0]])
    return out

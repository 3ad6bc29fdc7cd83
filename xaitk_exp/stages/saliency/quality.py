"""The saliency stage's hook: one image's metrics (merged into the run's metric batch) and its curves picture; for
a detector, one detection's metrics and the image's ground truth."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from xaitk_exp.metrics.image import ImageMetrics, evaluate_map
from xaitk_exp.metrics.maps import xcorr
from xaitk_exp.metrics.names import POINTING_GAME
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


# ----- task=detection: one detection's map (stages/saliency/detection.py) -----------------------------------------
def detection_metrics(m: MetricSettings, blackbox: Any, image: np.ndarray, sal: np.ndarray, found: Any, j: int,
                      truth: tuple[np.ndarray, np.ndarray] | None, seed: tuple[int, ...]) -> dict[str, float]:
    """Detection ``j``'s map quality (``metrics:``): deletion / insertion AUCs with D-RISE's similarity, the
    random-order baselines and, with ground truth, the pointing game (left out where no true box matches)."""
    from xaitk_exp.detection.quality import detection_quality

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

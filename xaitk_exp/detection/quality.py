"""How faithful a detection's saliency map is: deletion and insertion (Petsiuk et al.: the RISE protocol, scored with
D-RISE's similarity), each beside its random-order baseline, and the pointing game where ground-truth boxes exist.

The score of a perturbed image is D-RISE's similarity of its best detection to the explained one: IoU x the cosine
of the class-score vectors x the detection's objectness (for a detector with one score per box, xaitk-saliency's
convention: a one-hot class vector and the score as objectness, so the similarity is IoU x score for a detection of
the same class, 0 for another class). It is computed by the same code as the D-RISE maps
(:mod:`xaitk_exp.detection.drise`), so a map is judged by the quantity it was built from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from xaitk_exp.metrics.faithfulness import auc, curve_images, make_substrate, n_steps, random_order, saliency_order


@dataclass
class DetectionQuality:
    """One detection map's metrics. AUCs are in [0, 1] for similarities in [0, 1]: deletion lower is better,
    insertion higher is better; ``*_random``: the same curve for a seeded random pixel order. ``pointing``: 1.0 when
    the map's maximum lies in the matched ground-truth box, 0.0 when not, NaN without a matched box."""

    deletion_auc: float
    insertion_auc: float
    deletion_auc_random: float
    insertion_auc_random: float
    pointing: float = float("nan")


def similarity_curve(images: np.ndarray, bbox: np.ndarray, scores: np.ndarray, blackbox: Any,
                     objectness: float | None = None) -> np.ndarray:
    """``[n]`` images ``[n, H, W(, C)]`` -> each one's D-RISE similarity (best detection) to the reference detection
    (``bbox`` ``[4]`` x0, y0, x1, y1; ``scores`` ``[n_classes]`` in the black box's label order; ``objectness``)."""
    from xaitk_saliency.impls.gen_detector_prop_sal.drise_scoring import DRISEScoring
    from xaitk_saliency.utils.detection import format_detection

    from xaitk_exp.detection.drise import DriseSimilarity

    obj = None if objectness is None else np.asarray([objectness], float)
    ref = format_detection(np.asarray(bbox, float).reshape(1, 4), np.asarray(scores, float).reshape(1, -1), obj)
    similarity = DriseSimilarity(DRISEScoring(), ref)
    return similarity(list(blackbox.detect_objects(iter(images))), len(images))[:, 0]


def deletion_insertion(image: np.ndarray, saliency: np.ndarray, bbox: np.ndarray, scores: np.ndarray, blackbox: Any,
                       objectness: float | None = None, steps: int = 50, substrate: str | float = "auto",
                       insertion_substrate: str | float = "blur", seed: int = 0) -> DetectionQuality:
    """Deletion and insertion AUCs of one detection's ``[H, W]`` map, and the same for a random order.

    Pixels are taken by decreasing signed saliency (seeded tie-break), ``ceil(H*W / steps)`` at a time, so each curve
    has ``steps + 1`` points (fewer for tiny images). Deletion goes from the image to ``substrate``
    (see :func:`~xaitk_exp.metrics.faithfulness.make_substrate`), insertion from ``insertion_substrate`` to the
    image. The four curves go to the black box as one stream.
    """
    h, w = image.shape[:2]
    if saliency.shape != (h, w):
        raise ValueError(f"a map of shape {list(saliency.shape)} for an image of {h}x{w}")
    step = max(1, -(-h * w // int(steps)))
    n = n_steps(h * w, step)
    orders = (saliency_order(saliency, seed), random_order(h * w, seed))
    sub_del = make_substrate(image, substrate)
    sub_ins = make_substrate(image, insertion_substrate)
    stacks = [curve_images(image, sub, order, step, mode)
              for order in orders for sub, mode in ((sub_del, "deletion"), (sub_ins, "insertion"))]
    sims = similarity_curve(np.concatenate(stacks), bbox, scores, blackbox, objectness).reshape(4, n + 1)
    return DetectionQuality(auc(sims[0]), auc(sims[1]), auc(sims[2]), auc(sims[3]))


def matched_ground_truth(bbox: np.ndarray, label: int, gt_boxes: np.ndarray, gt_labels: np.ndarray,
                         min_iou: float = 0.5) -> int | None:
    """The index of the ground-truth box of ``label`` that overlaps ``bbox`` most (IoU with exclusive ends), or None
    when none reaches ``min_iou``."""
    gt_boxes = np.asarray(gt_boxes, float).reshape(-1, 4)
    same = np.flatnonzero(np.asarray(gt_labels) == label)
    if not len(same):
        return None
    ious = box_iou(np.asarray(bbox, float).reshape(1, 4), gt_boxes[same])[0]
    best = int(np.argmax(ious))
    return int(same[best]) if ious[best] >= min_iou else None


def pointing_hit(saliency: np.ndarray, box: np.ndarray, tolerance: int = 0) -> bool:
    """The pointing game for one box: does the map reach its maximum inside ``box`` (x0, y0, x1, y1, exclusive
    ends, grown by ``tolerance`` pixels each side)? A constant map counts as a miss."""
    s = np.nan_to_num(np.asarray(saliency, float))
    if s.max() == s.min():
        return False
    h, w = s.shape
    x0, y0, x1, y1 = np.asarray(box, float)
    r0, r1 = max(0, int(np.floor(y0)) - tolerance), min(h, int(np.ceil(y1)) + tolerance)
    c0, c1 = max(0, int(np.floor(x0)) - tolerance), min(w, int(np.ceil(x1)) + tolerance)
    return r1 > r0 and c1 > c0 and bool(s[r0:r1, c0:c1].max() == s.max())


def pointing_game(saliency: np.ndarray, bbox: np.ndarray, label: int, gt_boxes: np.ndarray | None,
                  gt_labels: np.ndarray | None, tolerance: int = 0) -> float:
    """1.0 / 0.0: the pointing game on the ground-truth box matched to the detection (:func:`matched_ground_truth`);
    NaN when there is no ground truth or no box matches."""
    if gt_boxes is None or gt_labels is None:
        return float("nan")
    k = matched_ground_truth(bbox, label, gt_boxes, gt_labels)
    if k is None:
        return float("nan")
    return float(pointing_hit(saliency, np.asarray(gt_boxes, float).reshape(-1, 4)[k], tolerance))


def detection_quality(image: np.ndarray, saliency: np.ndarray, bbox: np.ndarray, label: int, scores: np.ndarray,
                      blackbox: Any, objectness: float | None = None, gt_boxes: np.ndarray | None = None,
                      gt_labels: np.ndarray | None = None, steps: int = 50, substrate: str | float = "auto",
                      insertion_substrate: str | float = "blur", seed: int = 0) -> DetectionQuality:
    """Every metric of one detection's map: :func:`deletion_insertion` and, with ground truth, :func:`pointing_game`."""
    q = deletion_insertion(image, saliency, bbox, scores, blackbox, objectness, steps, substrate,
                           insertion_substrate, seed)
    q.pointing = pointing_game(saliency, bbox, label, gt_boxes, gt_labels)
    return q


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[A, 4]`` x ``[B, 4]`` boxes (x0, y0, x1, y1, exclusive ends) -> ``[A, B]`` IoU (COCO's convention)."""
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)

"""All metrics of one image's map for the model's predicted class, with every model call in one batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

import xaitk_exp.metrics.faithfulness as F
from xaitk_exp.metrics.maps import complexity, gini, positive_entropy
from xaitk_exp.settings.metrics import MetricSettings

CURVES = ("Deletion", "Insertion", "Deletion_random", "Insertion_random")


@dataclass
class ImageMetrics:
    """``values``: metric name -> float (NaN where undefined); ``curves``: curve name -> ``[n + 1]`` scores of the
    class, at fractions ``0, 1/n, ..., 1`` of the pixels switched."""

    values: dict[str, float]
    curves: dict[str, np.ndarray] = field(default_factory=dict)


def evaluate_map(
    predict: F.Predict,
    image: np.ndarray,
    saliency: np.ndarray,
    class_index: int,
    settings: MetricSettings,
    seed: Sequence[int] = (0,),
) -> ImageMetrics:
    """Deletion/insertion AUC (with the random-order baselines), MuFidelity, entropy, sparseness (and complexity).

    ``image``: ``[H, W]`` or ``[H, W, C]`` as the model sees it (values in [0, 1]); ``saliency``: ``[H, W]`` map of
    class ``class_index`` (a column of ``predict``'s ``[N, n_classes]`` output), any scale. ``seed`` seeds the
    tie-break, the random order and the subsets (pass the image id in it so images get different draws that
    repeat from run to run). The model is called once through ``predict`` (more only past a memory budget).
    """
    image = np.asarray(image)
    sal = np.asarray(saliency, dtype=float)
    if sal.shape != image.shape[:2]:
        raise ValueError(f"saliency map {sal.shape} does not match image {image.shape[:2]}")
    seed = [int(s) for s in seed]
    n_pix = sal.size
    step = settings.step_for(n_pix)
    substrate = F.make_substrate(image, settings.substrate, settings.blur_sigma)
    order = F.saliency_order(sal, [*seed, 0])
    rand = F.random_order(n_pix, [*seed, 1])
    masks = F.subset_masks(n_pix, settings.subsets, settings.fraction, [*seed, 2])
    blocks = [
        F.curve_images(image, substrate, order, step, "deletion"),
        F.curve_images(image, substrate, order, step, "insertion"),
        F.curve_images(image, substrate, rand, step, "deletion"),
        F.curve_images(image, substrate, rand, step, "insertion"),
        F.masked_images(image, substrate, masks),
    ]
    probs = F.predict_blocks(predict, blocks)
    scores = [p[:, class_index] for p in probs]
    curves = dict(zip(CURVES, scores[:4], strict=True))
    values = {name.replace("_random", "") + "_AUC" + ("_random" if "random" in name else ""): F.auc(c)
              for name, c in curves.items()}  # Deletion_AUC, ..., Deletion_AUC_random, ...
    full = float(curves["Deletion"][0])  # row 0 of the deletion curve is the untouched image
    values["MuFidelity"] = F.mufidelity(sal, masks, full, scores[4])
    values["Entropy_positive"] = positive_entropy(sal)
    values["Sparseness_gini"] = gini(sal)
    if settings.complexity:
        values["Complexity"] = complexity(sal)
    return ImageMetrics(values, curves)

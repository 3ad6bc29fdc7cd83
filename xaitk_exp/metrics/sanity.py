"""Sanity checks (Adebayo et al. 2018): a faithful map changes with the class asked and with the model's training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from xaitk_exp.metrics.maps import xcorr


def other_class_similarity(maps: np.ndarray, class_index: int, seed: Sequence[int] = (0,)) -> float:
    """xcorr between class ``class_index``'s map and a seeded random other class's map (``maps``: ``[n, H, W]``).

    Near 1 means the map ignores the class asked for. NaN with a single class.
    """
    others = [i for i in range(len(maps)) if i != class_index]
    if not others:
        return float("nan")
    j = others[int(np.random.default_rng([*seed, 3]).integers(len(others)))]
    return xcorr(maps[class_index], maps[j])


def permuted_label_model(model: Any, images: np.ndarray, labels: np.ndarray, seed: int = 0) -> Any:
    """A fresh clone of ``model`` (``sklearn.base.clone``: same hyperparameters, unfitted) fitted on ``images``
    (``[N, H, W(, C)]``, flattened per image) with the ``labels`` shuffled by a seeded permutation."""
    from sklearn.base import clone

    shuffled = np.random.default_rng([seed, 4]).permutation(np.asarray(labels))
    return clone(model).fit(np.asarray(images).reshape(len(images), -1), shuffled)

"""Metrics of the map alone (no model calls): entropy, sparseness, complexity, similarity."""

from __future__ import annotations

import numpy as np


def _entropy(weights: np.ndarray) -> float:
    total = weights.sum()
    if not np.isfinite(total) or total <= 0:
        return float("nan")
    p = weights[weights > 0] / total
    return float(-(p * np.log(p)).sum())


def positive_entropy(saliency: np.ndarray) -> float:
    """Shannon entropy (nats) of ``P = max(S, 0) / sum(max(S, 0))`` for an ``[H, W]`` map.

    In ``[0, ln(H*W)]``: 0 when one pixel holds all positive saliency; NaN when no pixel is positive.
    """
    s = np.nan_to_num(np.asarray(saliency, dtype=float)).ravel()
    return _entropy(np.clip(s, 0, None))


def complexity(saliency: np.ndarray) -> float:
    """``-sum(P ln P)`` with ``P = |S| / sum|S|`` (nats, in ``[0, ln(H*W)]``); NaN for an all-zero map."""
    return _entropy(np.abs(np.nan_to_num(np.asarray(saliency, dtype=float))).ravel())


def gini(saliency: np.ndarray) -> float:
    """Sparseness as the Gini index of ``|S|`` (Hurley and Rickard 2009), in ``[0, 1 - 1/N]`` for N pixels.

    0 for a uniform map, ``1 - 1/N`` when a single pixel is non-zero; NaN for an all-zero map. With ``c`` sorted
    ascending: ``G = sum_k (2k - N - 1) c_k / (N sum c)``, k = 1..N.
    """
    c = np.sort(np.abs(np.nan_to_num(np.asarray(saliency, dtype=float))).ravel())
    n, total = c.size, c.sum()
    if total <= 0:
        return float("nan")
    k = np.arange(1, n + 1)
    return float(((2 * k - n - 1) * c).sum() / (n * total))


def xcorr(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised cross-correlation of two ``[H, W]`` maps (xaitk-saliency's ``compute_xcorr``), in [-1, 1].

    Two constant maps give 1 if equal else 0; one constant map gives 0.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ca, cb = np.ptp(a) == 0, np.ptp(b) == 0
    if ca or cb:
        return 1.0 if ca and cb and np.array_equal(a, b) else 0.0
    from xaitk_saliency.utils.sal_metrics import compute_xcorr

    return float(compute_xcorr(a, b))

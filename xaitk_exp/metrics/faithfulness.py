"""Faithfulness metrics that query the model: deletion / insertion curves (RISE protocol) and MuFidelity.

Every function here is pure numpy; the model is reached only through a ``predict`` callable mapping
``[N, H, W(, C)]`` images to ``[N, n_classes]`` probabilities (``SklearnBlackbox.predict``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from xaitk_exp.settings.metrics import SUBSTRATES

Seed = int | Sequence[int]
Predict = Callable[[np.ndarray], np.ndarray]


def make_substrate(image: np.ndarray, kind: str | float = "auto", blur_sigma: float = 2.0) -> np.ndarray:
    """What deleted pixels become, same shape and dtype as ``image`` (``[H, W]`` or ``[H, W, C]``, values in [0, 1]).

    ``auto``: zeros for grayscale (``[H, W]`` or ``[H, W, 1]``), the image's mean colour for colour images;
    ``zeros``; ``mean`` (the image's mean value per channel); ``blur`` (Gaussian, ``blur_sigma`` pixels);
    a number: that constant.
    """
    img = np.asarray(image)
    gray = img.ndim == 2 or img.shape[2] == 1
    if not isinstance(kind, str):
        return np.full_like(img, float(kind))
    if kind == "auto":
        kind = "zeros" if gray else "mean"
    if kind == "zeros":
        return np.zeros_like(img)
    if kind == "mean":
        return np.broadcast_to(img.mean(axis=(0, 1), keepdims=img.ndim == 3), img.shape).astype(img.dtype)
    if kind == "blur":
        from scipy.ndimage import gaussian_filter

        sigma = (blur_sigma, blur_sigma) + (0,) * (img.ndim - 2)
        return gaussian_filter(img.astype(float), sigma=sigma, mode="nearest").astype(img.dtype)
    raise ValueError(f"substrate {kind!r}: one of {', '.join(SUBSTRATES)} or a number")


def saliency_order(saliency: np.ndarray, seed: Seed = 0) -> np.ndarray:
    """``[H, W]`` map -> ``[H*W]`` flat pixel indices by decreasing signed saliency (no abs).

    Equal values are ordered by a seeded random permutation, so a constant map gives a random order, not a raster
    scan. NaN counts as 0.
    """
    s = np.nan_to_num(np.asarray(saliency, dtype=float)).ravel()
    tie = np.random.default_rng(seed).permutation(s.size)
    return np.lexsort((tie, -s))  # last key is primary


def random_order(n_pixels: int, seed: Seed = 0) -> np.ndarray:
    """A seeded random permutation of ``range(n_pixels)``: the baseline order."""
    return np.random.default_rng(seed).permutation(n_pixels)


def n_steps(n_pixels: int, step: int) -> int:
    """``ceil(n_pixels / step)``: the curve then has ``n_steps + 1`` points."""
    return -(-int(n_pixels) // int(step))


def curve_images(image: np.ndarray, substrate: np.ndarray, order: np.ndarray, step: int, mode: str) -> np.ndarray:
    """The ``[n + 1, H, W(, C)]`` images of one curve, ``n = ceil(H*W / step)``.

    Row ``i`` has the first ``i * step`` pixels of ``order`` (flat indices over ``H*W``; all channels of a pixel
    change together) switched: ``deletion`` from the image to the substrate (row 0 is the image, row n the
    substrate); ``insertion`` from the substrate to the image (row 0 the substrate, row n the image).
    """
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode {mode!r}: deletion or insertion")
    h, w = image.shape[:2]
    n = n_steps(h * w, step)
    rank = np.empty(h * w, dtype=np.int64)
    rank[np.asarray(order)] = np.arange(h * w)
    switched = (rank // step)[None, :] < np.arange(n + 1)[:, None]  # [n+1, HW]
    switched = switched.reshape((n + 1, h, w) + (1,) * (image.ndim - 2))
    sub = np.asarray(substrate, dtype=image.dtype)
    if mode == "deletion":
        return np.where(switched, sub[None], image[None])
    return np.where(switched, image[None], sub[None])


def auc(curve: np.ndarray) -> float:
    """Area under ``[n + 1]`` scores taken at evenly spaced fractions 0, 1/n, ..., 1 of the pixels (trapezoids):
    ``(sum(s) - s_0/2 - s_n/2) / n``; in [0, 1] for probabilities."""
    s = np.asarray(curve, dtype=float)
    n = len(s) - 1
    if n < 1:
        raise ValueError("a curve needs at least 2 points")
    return float((s.sum() - s[0] / 2 - s[-1] / 2) / n)


def subset_masks(n_pixels: int, n_subsets: int, fraction: float, seed: Seed = 0) -> np.ndarray:
    """``[n_subsets, n_pixels]`` boolean: each row a seeded random subset of ``max(1, round(fraction * n))`` pixels."""
    k = min(n_pixels, max(1, round(fraction * n_pixels)))
    keys = np.random.default_rng(seed).random((n_subsets, n_pixels))
    chosen = np.argpartition(keys, k - 1, axis=1)[:, :k]
    masks = np.zeros((n_subsets, n_pixels), dtype=bool)
    np.put_along_axis(masks, chosen, True, axis=1)
    return masks


def masked_images(image: np.ndarray, substrate: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """``[m, H, W(, C)]``: the image with each mask's pixels (``masks``: ``[m, H*W]``) set to the substrate."""
    h, w = image.shape[:2]
    m = masks.reshape((len(masks), h, w) + (1,) * (image.ndim - 2))
    return np.where(m, np.asarray(substrate, dtype=image.dtype)[None], image[None])


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties) in [-1, 1]; NaN when either side is constant."""
    from scipy.stats import rankdata

    ra, rb = rankdata(a), rankdata(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def mufidelity(saliency: np.ndarray, masks: np.ndarray, full_score: float, masked_scores: np.ndarray) -> float:
    """MuFidelity (Bhatt et al. 2020): Spearman correlation, over subsets, between the summed saliency of the subset
    and the score drop ``full_score - masked_scores`` when the subset is set to the substrate.

    ``saliency``: ``[H, W]``; ``masks``: ``[m, H*W]`` boolean; ``masked_scores``: ``[m]``. In [-1, 1], higher is
    more faithful; NaN if the sums or the drops are all equal.
    """
    sums = masks.astype(float) @ np.nan_to_num(np.asarray(saliency, dtype=float)).ravel()
    return spearman(sums, full_score - np.asarray(masked_scores, dtype=float))


def predict_blocks(predict: Predict, blocks: list[np.ndarray], budget: int = 1 << 24) -> list[np.ndarray]:
    """Predict several image stacks with as few ``predict`` calls as a memory budget (array elements) allows:
    consecutive blocks are concatenated into one call while their total size stays under ``budget``."""
    out: list[np.ndarray] = []
    group: list[np.ndarray] = []
    size = 0
    for block in [*blocks, None]:
        if group and (block is None or size + block.size > budget):
            probs = predict(np.concatenate(group) if len(group) > 1 else group[0])
            starts = np.cumsum([0] + [len(g) for g in group])
            out += [probs[a:b] for a, b in zip(starts[:-1], starts[1:], strict=True)]
            group, size = [], 0
        if block is not None:
            group.append(block)
            size += block.size
    return out

"""D-RISE and RandomGrid detector saliency computed a chunk of masks at a time: xaitk-saliency's maps, with memory
bounded by the chunk instead of masks x image size.

xaitk-saliency 0.15's detector generators (``DRISEStack``, ``RandomGridStack``, or ``PerturbationOcclusion`` with a
``RISEGrid`` / ``RandomGrid`` perturber and ``DRISEScoring``) draw all ``n`` masks (``[n, H, W]`` float32), all
perturbed images, and a float64 copy of the masks at once: about 1.2 GB at 1000 masks of 224x224 RGB. A D-RISE map
is a similarity-weighted mean of the masks, so it can be summed a chunk at a time. The code here repeats
xaitk-saliency's arithmetic (the masks and their random shifts in mask order, the perturbed images, the detection
matrix with its one-hot rule, IoU x cosine x objectness with the best proposal per mask, the weighted sum in mask
order divided by the mask sum, the max-abs scaling), so the maps equal its ``threads=0`` maps
(``tests/detection/test_drise.py``).

Two differences, both deliberate: shifts are always drawn in mask order (xaitk-saliency with ``threads`` > 0 draws
them in whichever order its threads run, so its maps are not repeatable), and when no perturbed image has any
detection the maps are zeros ``[n_dets, H, W]`` (xaitk-saliency returns an empty array).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from typing import Any

import numpy as np

DEFAULT_CHUNK = 256  #: masks per chunk


def chunked_for(generator: Any) -> ChunkedDRISE | None:
    """The chunked twin of a detector saliency generator (``DRISEStack``, ``RandomGridStack``,
    ``PerturbationOcclusion(RISEGrid | RandomGrid, DRISEScoring)``), or None for any other (and for subclasses,
    whose arithmetic may differ)."""
    from xaitk_saliency.impls.gen_detector_prop_sal.drise_scoring import DRISEScoring
    from xaitk_saliency.impls.gen_object_detector_blackbox_sal.drise import DRISEStack, RandomGridStack
    from xaitk_saliency.impls.gen_object_detector_blackbox_sal.occlusion_based import PerturbationOcclusion
    from xaitk_saliency.impls.perturb_image.random_grid import RandomGrid
    from xaitk_saliency.impls.perturb_image.rise import RISEGrid

    po = generator._po if type(generator) in (DRISEStack, RandomGridStack) else generator
    if type(po) is not PerturbationOcclusion or type(po._generator) is not DRISEScoring:
        return None
    if type(po._perturber) not in (RISEGrid, RandomGrid):
        return None
    return ChunkedDRISE(po)


class ChunkedDRISE:
    """A detector ``PerturbationOcclusion`` (D-RISE scoring over RISE or RandomGrid masks), a chunk at a time.

    Call as ``(image, bboxes, scores, blackbox, objectness=None, chunk_size=256)``, with the arguments of
    ``GenerateObjectDetectorBlackboxSaliency.generate``: ``image`` ``[H, W]`` or ``[H, W, C]``; ``bboxes``
    ``[n_dets, 4]`` x0, y0, x1, y1; ``scores`` ``[n_dets, n_classes]`` in the black box's label order;
    ``objectness`` ``[n_dets]`` or None (ones). Returns float64 maps ``[n_dets, H, W]`` in ``[-1, 1]``. Peak memory:
    about ``chunk_size`` masks and perturbed images, plus ``n_dets`` maps.
    """

    def __init__(self, po: Any) -> None:
        self.po = po

    def __call__(self, image: np.ndarray, bboxes: np.ndarray, scores: np.ndarray, blackbox: Any,
                 objectness: np.ndarray | None = None, chunk_size: int = DEFAULT_CHUNK) -> np.ndarray:
        from sklearn.preprocessing import maxabs_scale
        from xaitk_saliency.utils.detection import format_detection
        from xaitk_saliency.utils.masking import occlude_image_batch

        if image.ndim not in (2, 3):
            raise ValueError(f"D-RISE needs an [H, W] or [H, W, C] image, got shape {image.shape}")
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size={chunk_size}: a positive number of masks")
        ref = format_detection(np.asarray(bboxes), np.asarray(scores), None if objectness is None
                               else np.asarray(objectness))
        hw = (int(image.shape[0]), int(image.shape[1]))
        similarity = DriseSimilarity(self.po._generator, ref)
        sal = np.zeros((len(ref), *hw), np.float64)
        mask_sum = np.zeros(hw, np.float64)
        tmp = np.empty_like(sal)
        for masks in _mask_chunks(self.po._perturber, hw, int(chunk_size)):
            occluded = occlude_image_batch(image, masks, fill=self.po.fill, threads=self.po._threads)
            sims = similarity(list(blackbox.detect_objects(occluded)), len(masks))  # [m, n_dets]
            del occluded
            dtype = np.promote_types(sims.dtype, masks.dtype)  # weight_regions_by_scalar's common type
            if sal.dtype != dtype:
                sal, mask_sum, tmp = sal.astype(dtype), mask_sum.astype(dtype), tmp.astype(dtype)
            # xaitk-saliency casts all masks to the common type first; casting one mask at a time inside each
            # operation gives the same values (float32 -> float64 is exact) without a chunk-sized copy
            for mask, row in zip(masks, sims.astype(dtype, copy=False), strict=True):
                np.multiply(row[:, None, None], mask, out=tmp, dtype=dtype)  # `mask * scalar` per detection
                np.add(sal, tmp, out=sal)
                np.add(mask_sum, mask, out=mask_sum, dtype=dtype)
        mask_sum[mask_sum == 0] = 1.0
        sal /= mask_sum
        sal = maxabs_scale(sal.reshape(sal.shape[0], -1), axis=1).reshape(sal.shape)
        return np.clip(sal, -1, 1)


def drise_maps(generator: Any, image: np.ndarray, bboxes: np.ndarray, scores: np.ndarray, blackbox: Any,
               objectness: np.ndarray | None = None, chunk_size: int = DEFAULT_CHUNK) -> np.ndarray:
    """``[n_dets, H, W]`` saliency maps of the reference detections, chunked when the generator has a chunked twin
    (:func:`chunked_for`), else by the generator itself (all masks at once)."""
    chunked = chunked_for(generator)
    if chunked is not None:
        return chunked(image, bboxes, scores, blackbox, objectness, chunk_size)
    return np.asarray(generator(image, bboxes, scores, blackbox, objectness))


class DriseSimilarity:
    """Each perturbed image's best D-RISE similarity to each reference detection, as ``DRISEScoring`` computes it
    after ``PerturbationOcclusion`` turned the black box's output into a detection matrix. The class order is that
    of the first perturbed detection seen (xaitk-saliency's rule), kept across chunks."""

    def __init__(self, scorer: Any, ref: np.ndarray) -> None:
        self.scorer, self.ref = scorer, ref
        self.labels: list[Hashable] | None = None

    def __call__(self, dets: list[Any], n_images: int) -> np.ndarray:
        from scipy.spatial.distance import cdist

        if len(dets) != n_images:
            raise RuntimeError(f"the black box returned {len(dets)} results for {n_images} perturbed images")
        rows = [self._rows(img_dets) for img_dets in dets]
        counts = np.array([len(r) for r in rows])
        n_dets = len(self.ref)
        out = np.zeros((n_images, n_dets), np.float64)
        if counts.sum() == 0:
            return out
        mat = np.concatenate([r for r in rows if len(r)])  # [n_props, 4 + 1 + n_classes]
        if mat.shape[1] != self.ref.shape[1]:
            raise ValueError(f"perturbed detections have {mat.shape[1] - 5} class scores, the reference ones "
                             f"{self.ref.shape[1] - 5}: the black box's label order must match the scores'")
        s1 = self.scorer.iou(mat[:, :4], self.ref[:, :4])
        s2 = (1 - cdist(mat[:, 5:], self.ref[:, 5:], metric="cosine")).astype(np.promote_types(mat.dtype,
                                                                                                self.ref.dtype))
        sims = s1 * s2 * mat[:, 4:5]  # [n_props, n_dets]
        out = out.astype(sims.dtype)
        owner = np.repeat(np.arange(n_images), counts)
        best = np.full((n_images, n_dets), -np.inf, sims.dtype)
        np.maximum.at(best, owner, sims)
        has = counts > 0  # an image without detections keeps 0 (xaitk-saliency's padding rows score 0)
        out[has] = best[has]
        return out

    def _rows(self, img_dets: Any) -> np.ndarray:
        """One perturbed image's detections -> ``[n, 4 + 1 + n_classes]`` float64 rows (box, objectness, scores)."""
        out = []
        for bbox, score_dict in img_dets:
            if self.labels is None:
                self.labels = list(score_dict.keys())
            scores = [score_dict[label] for label in self.labels]
            obj = 1.0
            if len([v for v in scores if v > 0]) == 1:  # a single class score: objectness, one-hot class
                obj = max(scores)
                scores[scores.index(obj)] = 1
            out.append([*bbox.min_vertex, *bbox.max_vertex, obj, *scores])
        return np.asarray(out, np.float64).reshape(len(out), -1) if out else np.zeros((0, 0))


def _mask_chunks(perturber: Any, hw: tuple[int, int], chunk: int) -> Iterator[np.ndarray]:
    """The perturber's masks for an ``hw`` image, ``[m, H, W]`` float32, ``chunk`` at a time, equal to its
    ``perturb`` output with ``threads=0``."""
    from xaitk_saliency.impls.perturb_image.rise import RISEGrid

    draw = _rise_masks(perturber, hw) if type(perturber) is RISEGrid else _random_grid_masks(perturber, hw)
    for start in range(0, perturber.n, chunk):
        stop = min(start + chunk, perturber.n)
        masks = np.empty((stop - start, *hw), np.float32)
        for i in range(start, stop):
            masks[i - start] = draw(i)
        yield masks


def _rise_masks(p: Any, hw: tuple[int, int]) -> Callable[[int], np.ndarray]:
    """``RISEGrid.perturb``'s mask ``i`` (called for ``i`` = 0, 1, ... in order: the shifts are drawn as called)."""
    from skimage.transform import resize

    shift_rng = np.random.default_rng(p.seed)
    cell = np.ceil(np.array(hw) / p.s)
    up_size = (p.s + 1) * cell
    cell_h, cell_w = cell[:2]
    h, w = hw

    def mask(i: int) -> np.ndarray:
        y, x = shift_rng.integers(0, cell_h), shift_rng.integers(0, cell_w)
        return resize(p.grid[i], up_size, order=1, mode="reflect", anti_aliasing=False)[y : y + h, x : x + w]

    return mask


def _random_grid_masks(p: Any, hw: tuple[int, int]) -> Callable[[int], np.ndarray]:
    """``RandomGrid.perturb``'s mask ``i`` (called in order). Its grids are small (cells, not pixels): drawn at once."""
    from skimage.transform import resize

    s = np.array(p.s)
    shape = np.array(hw)
    grid_size = shape // s + 1 + (shape % s != 0)
    grid = (np.random.default_rng(p.seed).random((p.n, *grid_size)) < p.p1).astype(np.float32)
    shift_rng = np.random.default_rng(p.seed)
    up_size = grid_size * s
    center_y, center_x = (up_size - shape) // 2
    max_y, max_x = s // 2
    h, w = hw

    def mask(i: int) -> np.ndarray:
        dx = shift_rng.integers(-max_x, max_x) if max_x != 0 else 0
        dy = shift_rng.integers(-max_y, max_y) if max_y != 0 else 0
        y, x = center_y + dy, center_x + dx
        return resize(grid[i], up_size, order=1)[y : y + h, x : x + w]

    return mask

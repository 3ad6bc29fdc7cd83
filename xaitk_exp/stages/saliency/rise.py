"""RISE and MC-RISE maps drawn and scored a chunk of masks at a time: xaitk-saliency's maps bit for bit, with
memory bounded by the chunk instead of masks x image size.

xaitk-saliency 0.15's ``RISEGrid`` returns all ``n`` masks at once (``[n, H, W]`` float32; ``MCRISEGrid``
``[k, n, H, W]`` float64) and its scorers take them all and make float64 copies: about 1 GB at 1000 masks of
224x224. A map is a confidence-weighted sum over the masks, so it can be built a chunk at a time. The code here
repeats xaitk-saliency's arithmetic in its order (the masks, the perturbed images, the per-mask sum, the scaling);
only the grouping into chunks differs, so the maps are equal bit for bit (``tests/stages/test_rise_chunks.py``).

Masks: a RISE mask is a binary ``s x s`` grid, upsampled bilinearly (skimage ``resize``, order 1) to ``s + 1``
cells and cropped at a random shift. An upsampled pixel depends on at most 2 x 2 grid cells, so it takes one of 16
values; :class:`Upsampler` computes them once per image size by letting skimage upsample 16 grids, then looks a
chunk's masks up block by block (about 10x faster than ``resize`` per mask, so masks need no cache). The lookup is
checked against skimage on the first masks; should it ever differ (another skimage), masks are resized one by one.

Shifts are drawn as xaitk-saliency draws them: a new ``default_rng(seed)`` per image, two integers per mask, in
mask order; only the ``n x 2`` integers are kept between images of one size. With ``seed=None`` they are drawn
afresh per image, as xaitk-saliency does (such maps are random either way). With ``threads`` > 0 xaitk-saliency
draws them in whichever order its threads run; here they are always drawn in mask order (its ``threads=0`` maps).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np

DEFAULT_CHUNK = 256  #: masks per chunk when the black box has no ``chunk_size``
_BLOCK = 16  #: masks upsampled together (a ``[16, up_h, up_w]`` buffer)
_CHECKED = 16  #: masks compared against skimage when an :class:`Upsampler` is built


def chunked_for(generator: Any) -> ChunkedRISE | ChunkedMCRISE | None:
    """The chunked twin of a RISE generator (``RISEStack``, ``PerturbationOcclusion(RISEGrid, RISEScoring)``,
    ``MCRISEStack``), or None for any other algorithm (and for subclasses, whose arithmetic may differ)."""
    from xaitk_saliency.impls.gen_classifier_conf_sal.mc_rise_scoring import MCRISEScoring
    from xaitk_saliency.impls.gen_classifier_conf_sal.rise_scoring import RISEScoring
    from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.mc_rise import MCRISEStack
    from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.occlusion_based import PerturbationOcclusion
    from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.rise import RISEStack
    from xaitk_saliency.impls.perturb_image.mc_rise import MCRISEGrid
    from xaitk_saliency.impls.perturb_image.rise import RISEGrid

    if type(generator) is MCRISEStack:
        parts = (generator._perturber, generator._generator)
        return ChunkedMCRISE(generator) if tuple(map(type, parts)) == (MCRISEGrid, MCRISEScoring) else None
    po = generator._po if type(generator) is RISEStack else generator
    if type(po) is PerturbationOcclusion and (type(po._perturber), type(po._generator)) == (RISEGrid, RISEScoring):
        return ChunkedRISE(po)
    return None


class Upsampler:
    """RISE's upsample-and-crop of binary ``s x s`` grids for one image size, as ``RISEGrid.perturb`` does it.

    ``dtype`` is the grids' (RISE float32, MC-RISE float64); masks come back in it, values in ``[0, 1]``.
    """

    def __init__(
        self, s: int, image_hw: tuple[int, int], dtype: np.dtype, first: np.ndarray, shifts: np.ndarray
    ) -> None:
        """``first``: a few ``[m, s, s]`` grids and their ``[m, 2]`` ``shifts`` to check the lookup on."""
        self.s, self.hw, self.dtype = int(s), tuple(image_hw), np.dtype(dtype)
        self.cell = np.ceil(np.array(image_hw) / s)  # xaitk-saliency's expressions, float64
        self.up_size = (s + 1) * self.cell
        self.up = tuple(int(u) for u in self.up_size)
        self.table: np.ndarray | None = None
        rows, cols = (_influence(self.s, u) for u in self.up)
        if rows is not None and cols is not None:
            (self.re, self.ro, self.rows), (self.ce, self.co, self.cols) = rows, cols
            self.table = self._table()
            if not np.array_equal(self.draw(first, shifts), self._resized(first, shifts)):
                self.table = None  # a skimage whose bilinear upsampling is not local: resize mask by mask

    def draw(self, grids: np.ndarray, shifts: np.ndarray) -> np.ndarray:
        """``[m, s, s]`` binary grids and their ``[m, 2]`` shifts -> ``[m, H, W]`` masks."""
        if self.table is None:
            return self._resized(grids, shifts)
        h, w = self.hw
        out = np.empty((len(grids), h, w), self.dtype)
        buf = np.empty((min(_BLOCK, len(grids)), *self.up), self.dtype)
        bits = grids.astype(np.uint8)
        for start in range(0, len(grids), _BLOCK):
            g = bits[start : start + _BLOCK]
            full = buf[: len(g)]
            for r0, r1, even_r, odd_r in self.rows:
                for c0, c1, even_c, odd_c in self.cols:
                    key = 8 * g[:, even_r, even_c] + 4 * g[:, even_r, odd_c] + 2 * g[:, odd_r, even_c]
                    full[:, r0:r1, c0:c1] = self.table[:, r0:r1, c0:c1][key + g[:, odd_r, odd_c]]
            part = grids[start : start + _BLOCK]
            # skimage clips the upsampled grid to the grid's own range
            np.clip(full, part.min(axis=(1, 2))[:, None, None], part.max(axis=(1, 2))[:, None, None], out=full)
            for j, (y, x) in enumerate(shifts[start : start + _BLOCK]):
                out[start + j] = full[j, y : y + h, x : x + w]
        return out

    def _resized(self, grids: np.ndarray, shifts: np.ndarray) -> np.ndarray:
        from skimage.transform import resize

        h, w = self.hw
        out = np.empty((len(grids), h, w), self.dtype)
        for j, (g, (y, x)) in enumerate(zip(grids, shifts, strict=True)):
            out[j] = resize(g, self.up_size, order=1, mode="reflect", anti_aliasing=False)[y : y + h, x : x + w]
        return out

    def _table(self) -> np.ndarray:
        """``[16, up_h, up_w]``: each pixel's upsampled value for each pattern of its 2 x 2 cells, unclipped.

        Pattern bits, high to low: (even row, even col), (even, odd), (odd, even), (odd, odd) cell. Grid ``t``
        fills cell ``(i, j)`` with bit ``(i % 2, j % 2)`` of ``t``, so every pixel sees every pattern once.
        """
        from skimage.transform import resize

        table = np.zeros((16, *self.up), self.dtype)
        i, j = np.arange(self.s)[:, None] % 2, np.arange(self.s)[None, :] % 2
        rr, cc = np.ix_(np.arange(self.up[0]), np.arange(self.up[1]))
        for t in range(16):
            grid = ((t >> (3 - 2 * i - j)) & 1).astype(self.dtype)
            up = resize(grid, self.up_size, order=1, mode="reflect", anti_aliasing=False, clip=False)
            b = grid.astype(np.int64)
            key = 8 * b[np.ix_(self.re, self.ce)] + 4 * b[np.ix_(self.re, self.co)] + 2 * b[np.ix_(self.ro, self.ce)]
            table[key + b[np.ix_(self.ro, self.co)], rr, cc] = up
        return table


def _influence(s: int, up: int) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int, int]]] | None:
    """Along one axis of length ``up``: the even and the odd grid cell each output index depends on (the same
    cell twice where it depends on one), and the runs of indices sharing them as ``(start, stop, even, odd)``.
    None when an index depends on anything but one cell or two neighbours."""
    from skimage.transform import resize

    hits = np.zeros((s, up), bool)
    for cell in range(s):
        line = np.zeros((s, 1))
        line[cell] = 1.0
        hits[cell] = resize(line, (up, 1), order=1, mode="reflect", anti_aliasing=False, clip=False)[:, 0] != 0
    even, odd = np.zeros(up, np.int64), np.zeros(up, np.int64)
    for k in range(up):
        cells = np.flatnonzero(hits[:, k])
        if not 1 <= len(cells) <= 2 or (len(cells) == 2 and cells[1] - cells[0] != 1):
            return None
        for c in cells:
            (even if c % 2 == 0 else odd)[k] = c
        if len(cells) == 1:
            even[k] = odd[k] = cells[0]
    edges = [0, *(k for k in range(1, up) if (even[k], odd[k]) != (even[k - 1], odd[k - 1])), up]
    runs = [(a, b, int(even[a]), int(odd[a])) for a, b in zip(edges, edges[1:], strict=False)]
    return even, odd, runs


class _ShiftedMasks:
    """One perturber's :class:`Upsampler` and, with a seed, its shifts, for the last image size."""

    def __init__(self, perturber: Any, first: np.ndarray) -> None:
        self.perturber, self.first = perturber, first[:_CHECKED]  # the grids the lookup is checked on
        self._kept: tuple[tuple[int, int], Upsampler, np.ndarray] | None = None

    def for_size(self, hw: tuple[int, int]) -> tuple[Upsampler, np.ndarray]:
        """The upsampler and the ``[n, 2]`` shifts for an image of ``hw``."""
        p = self.perturber
        if self._kept is not None and self._kept[0] == hw:
            up, shifts = self._kept[1:]
            return up, shifts if p.seed is not None else _shifts(up.cell, None, p.n)
        self._kept = None
        shifts = _shifts(np.ceil(np.array(hw) / p.s), p.seed, p.n)
        up = Upsampler(p.s, hw, self.first.dtype, self.first, shifts[: len(self.first)])
        self._kept = (hw, up, shifts)
        return up, shifts


def _shifts(cell: np.ndarray, seed: int | None, n: int) -> np.ndarray:
    """``[n, 2]`` crop offsets (y, x), drawn as ``RISEGrid.perturb`` draws them."""
    rng = np.random.default_rng(seed)
    cell_h, cell_w = cell[:2]
    return np.array([(rng.integers(0, cell_h), rng.integers(0, cell_w)) for _ in range(n)], dtype=np.int64)


class ChunkedRISE:
    """``RISEStack`` (or ``PerturbationOcclusion(RISEGrid, RISEScoring)``) computed a chunk of masks at a time.

    Call as ``(image, blackbox, chunk)``: ``image`` ``[H, W]`` or ``[H, W, C]``; maps ``[n_classes, H, W]`` in
    ``[-1, 1]``, equal to ``generator(image, blackbox)``. Peak memory: about ``chunk`` masks and perturbed images.
    """

    def __init__(self, po: Any) -> None:
        self.po = po
        self.masks = _ShiftedMasks(po._perturber, po._perturber.grid)

    def __call__(self, image: np.ndarray, blackbox: Any, chunk: int) -> np.ndarray:
        from xaitk_saliency.utils.masking import occlude_image_streaming

        hw = _image_hw(image)
        grid = self.po._perturber
        up, shifts = self.masks.for_size(hw)
        pending: deque[np.ndarray] = deque()

        def masks() -> Iterator[np.ndarray]:
            for start in range(0, grid.n, chunk):
                drawn = up.draw(grid.grid[start : start + chunk], shifts[start : start + chunk])
                pending.extend(drawn)
                yield from drawn

        images = occlude_image_streaming(image, masks(), fill=self.po.fill, threads=self.po._threads)
        p1 = self.po._generator.p1
        sal = tmp = None
        for conf in _confidences(blackbox, image, images, grid.n):
            mask = pending.popleft() - p1  # RISEScoring's `masks - p1`, one mask at a time
            if sal is None or tmp is None:
                sal = np.zeros((len(conf), *hw), np.promote_types(conf.dtype, mask.dtype))
                tmp = np.empty_like(sal)
            np.multiply(conf[:, None, None], mask, out=tmp)  # weight_regions_by_scalar's `mask * scalar`, all
            np.add(sal, tmp, out=sal)  # classes at once, summed in mask order
        if sal is None:
            raise RuntimeError("the black box scored no perturbed image")
        return _scaled(sal)


class ChunkedMCRISE:
    """``MCRISEStack`` computed a chunk of masks at a time. Call as ``(image, blackbox, chunk)``: ``image``
    ``[H, W, C]``; maps ``[k_colors, n_classes, H, W]``, equal to ``generator(image, blackbox)`` (xaitk-saliency's
    sign: positive = filling the region with the colour raises the confidence)."""

    def __init__(self, stack: Any) -> None:
        self.stack = stack
        self.masks = _ShiftedMasks(stack._perturber, stack._perturber.grid[0])

    def __call__(self, image: np.ndarray, blackbox: Any, chunk: int) -> np.ndarray:
        from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.mc_rise import MCRISEStack

        hw = _image_hw(image)
        grid, scorer, colours = self.stack._perturber, self.stack._generator, self.stack._fill_colors
        up, shifts = self.masks.for_size(hw)
        pending: deque[np.ndarray] = deque()

        def perturbed() -> Iterator[np.ndarray]:
            for start in range(0, grid.n, chunk):
                part = shifts[start : start + chunk]
                k_masks = np.stack([up.draw(g[start : start + chunk], part) for g in grid.grid])  # [k, m, H, W]
                # MCRISEStack._generate's masks and fill values, for this chunk
                masks = 1 - np.sum(1 - k_masks, axis=0)
                fill = np.zeros((*k_masks.shape[1:], len(colours[0])))
                for k_mask, colour in zip(k_masks, colours, strict=True):
                    fill += (1 - k_mask)[..., None] * np.asarray(colour)
                fill = np.clip(fill, 0, 255)
                # MCRISEScoring's weights: k * (1 - mask) * (1 - p1) - m0 * p1, per colour
                inverse = 1 - k_masks
                del k_masks
                m0 = 1 - inverse.sum(axis=0)
                weights = np.stack([scorer.k * inv * (1 - scorer.p1) - m0 * scorer.p1 for inv in inverse])
                del inverse, m0
                pending.extend(np.swapaxes(weights, 0, 1))  # one [k, H, W] per mask
                for j in range(len(masks)):
                    yield MCRISEStack._work_func(ref_image=image, i_=start + j, m=masks[j], f=fill[j])

        sal = tmp = None
        for conf in _confidences(blackbox, image, perturbed(), grid.n):
            weights = pending.popleft()
            if sal is None or tmp is None:
                sal = np.zeros((len(weights), len(conf), *hw), np.promote_types(conf.dtype, weights.dtype))
                tmp = np.empty_like(sal[0])
            for colour_sal, weight in zip(sal, weights, strict=True):
                np.multiply(conf[:, None, None], weight, out=tmp)
                np.add(colour_sal, tmp, out=colour_sal)
        if sal is None:
            raise RuntimeError("the black box scored no perturbed image")
        return np.asarray([_scaled(colour_sal) for colour_sal in sal])


def _image_hw(image: np.ndarray) -> tuple[int, int]:
    if image.ndim not in (2, 3):
        raise ValueError(f"RISE needs an [H, W] or [H, W, C] image, got shape {image.shape}")
    return int(image.shape[0]), int(image.shape[1])


def _confidences(blackbox: Any, image: np.ndarray, images: Iterator[np.ndarray], n: int) -> Iterator[np.ndarray]:
    """The black box's confidences for each perturbed image, one ``[n_classes]`` row at a time, typed and called as
    ``PerturbationOcclusion`` does (the reference image first, then one lazy stream)."""
    labels = blackbox.get_labels()
    reference = list(blackbox.classify_images([image]))[0]
    dtype = np.asarray([reference[label] for label in labels]).dtype
    count = 0
    for result in blackbox.classify_images(images):
        count += 1
        yield np.asarray([result[label] for label in labels], dtype=dtype)
    if count != n:
        raise RuntimeError(f"the black box returned {count} results for {n} perturbed images")


def _scaled(sal: np.ndarray) -> np.ndarray:
    """RISEScoring's last steps: each class's map divided by its largest absolute value, clipped to [-1, 1]."""
    from sklearn.preprocessing import maxabs_scale

    sal = maxabs_scale(sal.reshape(sal.shape[0], -1), axis=1).reshape(sal.shape)
    clipped: np.ndarray = np.clip(sal, -1, 1)
    return clipped

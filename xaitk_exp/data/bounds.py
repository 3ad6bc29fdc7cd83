"""Bounds on what a dataset may load, checked before the first image is decoded: the side of an image, the pixels
of an image file (Pillow's decompression-bomb limit) and the memory the loaded split will take.

A loader knows how many images it will read and their size before reading any, so a ``dataset.shape`` of
``[100000, 100000]`` is one line naming the estimate and the limit, not a machine swapping until the OOM killer
ends the job without a word.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from xaitk_exp.errors import ConfigError, DataError

#: the largest image side (pixels) a dataset may resize to; classifiers take 28 to 1024 pixels a side, and the
#: saliency stage perturbs each image thousands of times
MAX_SIDE = 8192
#: float64 images, as every loader returns them
ITEM_BYTES = 8
#: how many copies of the images a loader holds at its peak: the decoded images, their stacked array and the
#: train/test split made from it
PEAK_COPIES = 3


def check_shape(
    key: str, shape: Sequence[Any], allowed: str = "[height, width] with positive integers"
) -> tuple[int, int]:
    """``shape`` as ``(H, W)``: two positive integers of at most :data:`MAX_SIDE`, else :class:`ConfigError`."""
    values = list(shape)
    if len(values) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
        raise ConfigError(key, values, allowed)
    if max(values) > MAX_SIDE:
        raise ConfigError(key, values, f"{allowed}, each at most {MAX_SIDE} pixels")
    return values[0], values[1]


def gigabytes(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.1f} GB" if n_bytes >= 1e8 else f"{n_bytes / 1e6:.1f} MB"


def check_memory(key: str, value: Any, n_images: int, shape: Sequence[int], channels: int) -> None:
    """Refuse to load ``n_images`` images of ``shape`` x ``channels`` when their peak (:data:`PEAK_COPIES` copies
    of float64 arrays) exceeds the memory available now (``psutil``), naming the estimate and the limit."""
    height, width = int(shape[0]), int(shape[1])
    need = PEAK_COPIES * n_images * height * width * max(1, int(channels)) * ITEM_BYTES
    if need < 2**28:  # below 256 MB: not worth asking the OS
        return
    import psutil

    available = psutil.virtual_memory().available
    if need > available:
        raise ConfigError(
            key, value,
            f"a size whose images fit in memory: {n_images} images of {height}x{width}x{channels} need about "
            f"{gigabytes(need)} while loading, {gigabytes(available)} is available (make dataset.shape smaller, or "
            "use fewer images)",
        )


@contextmanager
def bomb_check(name: str) -> Iterator[None]:
    """Pillow's decompression-bomb check on opening image ``name``, as one :class:`DataError` line (its warning,
    from :data:`PIL.Image.MAX_IMAGE_PIXELS` up, refuses the image too: decoding it takes as much memory)."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        import re

        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(found.group(1))} pixels, " if found else ""
        raise DataError(
            f"dataset.path: image {name!r} is too large to decode safely ({pixels}Pillow's decompression-bomb limit "
            f"is {Image.MAX_IMAGE_PIXELS} pixels); shrink or remove it"
        ) from None

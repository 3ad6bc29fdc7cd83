"""A MAITE image-classification dataset as an :class:`ImageSplit`: ``dataset=maite dataset.dataset._target_=<factory>``.

MAITE's ``Dataset`` protocol: ``len(ds)`` and ``ds[i] -> (image (C, H, W), target (Cl,), datum_metadata)``; class
names by convention in ``ds.metadata["index2label"]``. The images become ``[H, W, C]`` floats in ``[0, 1]`` (``[H, W]``
for one channel), resized to ``shape`` when given; each label is the target's argmax.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from xaitk_exp.data.base import ImageSplit, split_arrays
from xaitk_exp.data.registry import DatasetKind
from xaitk_exp.errors import ConfigError, DataError


class MaiteDataset:
    """Wraps an already built MAITE dataset (Hydra builds the nested ``dataset`` node first).

    ``max_value``: what a pixel's full intensity is (``auto``: 255 for integer images or any value above 1, else 1);
    ``limit``: keep the first N items.
    """

    def __init__(
        self,
        dataset: Any = None,
        name: str | None = None,
        shape: tuple[int, int] | None = None,
        max_value: float | str = "auto",
        limit: int | None = None,
        test_size: float = 0.25,
        seed: int = 0,
    ) -> None:
        if dataset is None or not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise ConfigError(
                "dataset.dataset", type(dataset).__name__,
                "a node whose _target_ builds a MAITE image-classification dataset (len() and ds[i] -> (image, "
                "target, metadata))",
            )
        self.dataset, self.name, self.limit = dataset, name, limit
        self.shape = tuple(shape) if shape else None
        if self.shape is not None and (len(self.shape) != 2 or min(self.shape) < 1):
            raise ConfigError("dataset.shape", list(self.shape), "null or [height, width] with positive integers")
        if max_value != "auto" and (not isinstance(max_value, (int, float)) or max_value <= 0):
            raise ConfigError("dataset.max_value", max_value, "auto or a positive number")
        self.max_value, self.test_size, self.seed = max_value, test_size, seed

    def load(self) -> ImageSplit:
        n = len(self.dataset) if self.limit is None else min(int(self.limit), len(self.dataset))
        if n < 2:
            raise ConfigError("dataset.dataset", type(self.dataset).__name__, "a MAITE dataset with at least 2 items")
        images, labels, ids = [], [], []
        for i in range(n):
            try:
                image, target, meta = self.dataset[i]
            except Exception as exc:
                raise DataError(f"dataset.dataset: item {i} cannot be read ({type(exc).__name__}: {exc})") from exc
            images.append(self._image(image, i))
            labels.append(int(np.argmax(np.asarray(_numpy(target)).reshape(-1))))
            ids.append(str(meta.get("id", i)) if isinstance(meta, Mapping) else str(i))
        shapes = {im.shape for im in images}
        if len(shapes) > 1:
            raise ConfigError("dataset.shape", None, f"[height, width] to resize to: the items differ in size "
                              f"({sorted(shapes)[:2]}...)")
        meta = getattr(self.dataset, "metadata", None) or {}
        index2label = meta.get("index2label") if isinstance(meta, Mapping) else None
        n_classes = max(labels) + 1
        if index2label:
            names = [str(index2label.get(i, i)) for i in range(max(n_classes, len(index2label)))]
        else:
            names = [str(i) for i in range(n_classes)]
        present = sorted(set(labels))
        label_arr = np.searchsorted(present, labels)
        name = self.name or (meta.get("id") if isinstance(meta, Mapping) else None) or type(self.dataset).__name__
        return split_arrays(str(name), np.stack(images), label_arr, self.test_size, self.seed, ids,
                            [names[i] for i in present])

    def _image(self, image: Any, i: int) -> np.ndarray:
        """``(C, H, W)`` -> ``[H, W, C]`` (``[H, W]`` for one channel) float64 in [0, 1], resized to ``shape``."""
        arr = np.asarray(_numpy(image))
        if arr.ndim != 3:
            raise DataError(
                f"dataset.dataset: item {i} has an image of shape {list(arr.shape)}; MAITE images are (C, H, W)"
            )
        scale = self.max_value
        if scale == "auto":
            scale = 255.0 if np.issubdtype(arr.dtype, np.integer) or float(arr.max(initial=0)) > 1.0 else 1.0
        hwc = np.clip(arr.transpose(1, 2, 0).astype(np.float64) / float(scale), 0.0, 1.0)
        if self.shape is not None and hwc.shape[:2] != self.shape:
            from PIL import Image

            chans = [np.asarray(Image.fromarray(hwc[..., c].astype(np.float32)).resize(
                (self.shape[1], self.shape[0]), Image.Resampling.BILINEAR)) for c in range(hwc.shape[2])]
            hwc = np.clip(np.stack(chans, axis=-1).astype(np.float64), 0.0, 1.0)
        return hwc[..., 0] if hwc.shape[2] == 1 else hwc


def _numpy(value: Any) -> Any:
    for step in ("detach", "cpu"):
        if hasattr(value, step) and callable(getattr(value, step)):
            value = getattr(value, step)()
    return value


DATASET = DatasetKind(name="maite", loader=MaiteDataset, extra="maite")  # lineage: the loader's class

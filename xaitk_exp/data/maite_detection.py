"""``dataset=maite_detection dataset.dataset._target_=<factory>``: a MAITE object-detection dataset as the images
and ground truth of ``task=detection``.

MAITE's protocol: ``len(ds)`` and ``ds[i] -> (image (C, H, W), target, datum_metadata)``, the target holding
``boxes`` (N, 4) x0, y0, x1, y1 and ``labels`` (N,) (attributes or keys); class names in
``ds.metadata["index2label"]``. The images become ``[H, W, C]`` floats in [0, 1] (as ``dataset=maite`` makes them),
every one a test image; the targets become COCO annotations (category ids 1..n for classes 0..n-1, named by
``index2label``), scaled with the images when ``shape`` resizes them, so pycocotools scores the detections."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from xaitk_exp.data.coco import DetectionSplit, _scaled
from xaitk_exp.data.maite_dataset import MaiteDataset, _numpy
from xaitk_exp.data.registry import DatasetKind
from xaitk_exp.errors import ConfigError, DataError


def _field(target: Any, key: str) -> np.ndarray:
    value = target.get(key) if isinstance(target, Mapping) else getattr(target, key, None)
    if value is None:
        raise KeyError(key)
    return np.asarray(_numpy(value))


class MaiteDetectionDataset(MaiteDataset):
    """Wraps a built MAITE object-detection dataset; ``shape``, ``max_value`` and ``limit`` as for ``dataset=maite``."""

    def __init__(self, dataset: Any = None, name: str | None = None, shape: tuple[int, int] | None = None,
                 max_value: float | str = "auto", limit: int | None = None) -> None:
        super().__init__(dataset, name, shape, max_value, limit, test_size=0.25, seed=0)

    def load(self) -> DetectionSplit:
        from xaitk_exp.detection.coco import CocoAnnotations

        n = len(self.dataset) if self.limit is None else min(int(self.limit), len(self.dataset))
        if n < 1:
            raise ConfigError("dataset.dataset", type(self.dataset).__name__, "a MAITE dataset with items")
        meta = getattr(self.dataset, "metadata", None) or {}
        index2label = meta.get("index2label") if isinstance(meta, Mapping) else None
        if not index2label:
            raise ConfigError("dataset.dataset", type(self.dataset).__name__, "a MAITE object-detection dataset "
                              "whose metadata names its classes (index2label)")
        names = [str(index2label[k]) for k in sorted(index2label)]
        images: list[np.ndarray] = []
        sizes: list[tuple[int, int]] = []
        coco_images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        ids: list[str] = []
        for i in range(n):
            try:
                image, target, datum = self.dataset[i]
                boxes = _field(target, "boxes").astype(float).reshape(-1, 4)
                labels = _field(target, "labels").astype(int).reshape(-1)
            except Exception as exc:
                raise DataError(f"dataset.dataset: item {i} cannot be read as (image, target with boxes and labels, "
                                f"metadata) ({type(exc).__name__}: {exc})") from exc
            raw = np.asarray(_numpy(image))
            sizes.append((int(raw.shape[-2]), int(raw.shape[-1])))
            images.append(self._image(image, i))
            coco_images.append({"id": i + 1, "file_name": f"item_{i}", "height": sizes[-1][0], "width": sizes[-1][1]})
            for (x0, y0, x1, y1), label in zip(boxes.tolist(), labels.tolist(), strict=True):
                if not 0 <= label < len(names) or x1 <= x0 or y1 <= y0:
                    raise DataError(f"dataset.dataset: item {i} has a box {[x0, y0, x1, y1]} of label {label}; "
                                    f"boxes are x0 < x1, y0 < y1 with labels 0..{len(names) - 1}")
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": label + 1,
                                    "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
            ids.append(str(datum.get("id", i)) if isinstance(datum, Mapping) else str(i))
        if len({im.shape for im in images}) > 1:
            raise ConfigError("dataset.shape", None, "[height, width] to resize to: the items differ in size")
        name = self.name or (meta.get("id") if isinstance(meta, Mapping) else None) or type(self.dataset).__name__
        ann = CocoAnnotations(Path(str(name)), coco_images, {k + 1: v for k, v in enumerate(names)}, annotations)
        stacked = np.stack(images)
        ann = _scaled(ann, sizes, stacked.shape[1:3])
        return DetectionSplit(str(name), stacked[:0], np.zeros(0, int), stacked, np.full(n, -1), ids, names,
                              has_labels=False, annotations=ann, image_ids=list(range(1, n + 1)))


DATASET = DatasetKind(name="maite_detection", loader=MaiteDetectionDataset, extra="maite")  # lineage: its class

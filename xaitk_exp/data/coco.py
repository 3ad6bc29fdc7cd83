"""``dataset=coco``: a folder of images for a detector, with COCO annotations (``dataset.annotations=
<instances.json>``: the ground truth, its images' ``file_name`` relative to the file's folder) or without (every
image of ``dataset.path``, no ground truth: no AP, still the detections).

Every image is a test image (a detector is not trained here). Images keep their own size (one size for all), or are
resized to ``dataset.shape`` with the ground-truth boxes scaled alike, so boxes are always in the loaded image's
pixels. ``Image_id`` is the row in the split, in the annotation file's image order (else file-name order); the COCO
image id of each row is ``split.image_ids[row]``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from xaitk_exp.data.base import ImageSplit, split_arrays
from xaitk_exp.data.bounds import bomb_check, check_memory, check_shape
from xaitk_exp.data.registry import DatasetKind
from xaitk_exp.errors import ConfigError, DataError

SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class DetectionSplit(ImageSplit):
    """An :class:`ImageSplit` of detection images: no class label per image (``has_labels`` False), the COCO
    ``annotations`` of the test images (None: no ground truth) and each row's COCO ``image_ids``."""

    annotations: Any = None
    image_ids: list[int] | None = None

    def fingerprint(self) -> str:
        h = hashlib.sha256(super().fingerprint().encode())
        if self.annotations is not None:
            h.update(repr((self.annotations.images, self.annotations.categories,
                           self.annotations.annotations)).encode())
        return h.hexdigest()[:16]


class CocoFolder:
    """Images of ``path`` (or of the annotation file's ``images``), RGB (or ``grayscale``), floats in [0, 1]."""

    def __init__(self, path: str | None = None, annotations: str | None = None, name: str | None = None,
                 shape: tuple[int, int] | None = None, grayscale: bool = False) -> None:
        self.path, self.annotations, self.name = path, annotations, name
        self.shape = tuple(shape) if shape is not None else None
        self.grayscale = bool(grayscale)

    def load(self) -> DetectionSplit:
        from xaitk_exp.detection.coco import load_annotations

        ann = load_annotations(self.annotations) if self.annotations else None
        if ann is not None:
            root = Path(self.path).expanduser() if self.path else ann.path.parent
            files = [root / str(im["file_name"]) for im in ann.images]
            ids: list[int] | None = [int(im["id"]) for im in ann.images]
            missing = [f for f in files if not f.is_file()]
            if missing:
                raise ConfigError("dataset.annotations", str(self.annotations),
                                  f"a COCO file whose images exist in {root} ({missing[0].name} does not)")
        else:
            if not self.path:
                raise ConfigError("dataset.path", self.path, "a folder of images (or set dataset.annotations)")
            root = Path(self.path).expanduser()
            if not root.is_dir():
                raise ConfigError("dataset.path", self.path, "an existing folder of images")
            files = sorted(f for f in root.iterdir() if f.is_file() and f.suffix.lower() in SUFFIXES)
            ids = None
            if not files:
                raise ConfigError("dataset.path", self.path, f"a folder holding {', '.join(SUFFIXES)} files")
        if self.shape is not None:
            check_shape("dataset.shape", self.shape)
            check_memory("dataset.shape", list(self.shape), len(files), self.shape, 1 if self.grayscale else 3)
        images, sizes = self._read(files, root)
        if self.shape is None and len(set(sizes)) > 1:
            raise ConfigError("dataset.shape", None, f"[H, W] to resize to: the images have several sizes "
                              f"({sorted(set(sizes))[:3]})")
        if ann is not None:
            ann = _scaled(ann, sizes, images.shape[1:3])
        paths = [f.relative_to(root).as_posix() for f in files]
        names = [ann.categories[c] for c in sorted(ann.categories)] if ann is not None else []
        base = split_arrays(self.name or root.name, images, np.full(len(images), -1), None, 0, paths, names,
                            has_labels=False)
        return DetectionSplit(**base.__dict__, annotations=ann, image_ids=ids)

    def _read(self, files: list[Path], root: Path) -> tuple[np.ndarray, list[tuple[int, int]]]:
        from PIL import Image, UnidentifiedImageError

        mode = "L" if self.grayscale else "RGB"
        arrays: list[np.ndarray] = []
        sizes: list[tuple[int, int]] = []
        for f in files:
            rel = f.relative_to(root).as_posix()
            try:
                with bomb_check(rel), Image.open(f) as im:
                    if self.shape is None and not sizes:
                        check_memory("dataset.shape", None, len(files), im.size[::-1], 1 if self.grayscale else 3)
                    im = im.convert(mode)
                    sizes.append((im.size[1], im.size[0]))
                    if self.shape is not None and im.size != (self.shape[1], self.shape[0]):
                        im = im.resize((self.shape[1], self.shape[0]), Image.Resampling.BILINEAR)
                    arr = np.asarray(im, dtype="float64") / 255.0
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(f"dataset: image {rel!r} cannot be read ({type(exc).__name__}); remove or fix "
                                "it") from exc
            if self.shape is None and arrays and arr.shape != arrays[0].shape:
                raise ConfigError("dataset.shape", None, f"[H, W] to resize to: the images have several sizes "
                                  f"({list(arrays[0].shape[:2])} and {list(arr.shape[:2])})")
            arrays.append(arr)
        return np.stack(arrays), sizes


def _scaled(ann: Any, sizes: list[tuple[int, int]], shape: tuple[int, ...]) -> Any:
    """The annotations with boxes in the loaded images' pixels (each image's file size -> ``shape``)."""
    h, w = int(shape[0]), int(shape[1])
    factors = {int(im["id"]): (w / sw, h / sh) for im, (sh, sw) in zip(ann.images, sizes, strict=True)}
    if all(fx == 1.0 and fy == 1.0 for fx, fy in factors.values()):
        return ann
    images = [{**im, "height": h, "width": w} for im in ann.images]
    annotations = []
    for a in ann.annotations:
        fx, fy = factors[a["image_id"]]
        x, y, bw, bh = a["bbox"]
        annotations.append({**a, "bbox": [x * fx, y * fy, bw * fx, bh * fy], "area": bw * fx * bh * fy})
    return replace(ann, images=images, annotations=annotations)


def _lineage(node: Any) -> tuple[str, str]:
    where = node.get("path") or (Path(str(node.get("annotations"))).parent if node.get("annotations") else ".")
    return "local", Path(str(where)).expanduser().resolve().as_uri()


DATASET = DatasetKind(name="coco", loader=CocoFolder, lineage=_lineage)

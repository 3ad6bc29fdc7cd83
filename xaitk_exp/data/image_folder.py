"""A folder of PNG/JPEG images with one sub-folder per class, or a flat folder of images without ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xaitk_exp.data.base import ImageSplit, split_arrays
from xaitk_exp.data.bounds import bomb_check, check_memory, check_shape
from xaitk_exp.data.registry import DatasetKind
from xaitk_exp.errors import ConfigError, DataError

SUFFIXES = (".png", ".jpg", ".jpeg")


class ImageFolder:
    """Images under ``path/<class>/*.png|jpg``, resized to ``shape`` ``[H, W]``, ``grayscale`` (``[N, H, W]``) or
    RGB (``[N, H, W, 3]``), values in ``[0, 1]``.

    With ``resize=False`` every image must already have ``shape``; mixed sizes are refused. A folder with images and
    no class sub-folders is loaded without ground truth (labels -1, ``has_labels=False``). ``class_map`` renames
    folder classes (``{folder name: model class name}``) where they differ from a pretrained model's class names.
    """

    def __init__(
        self,
        path: str | None = None,
        name: str | None = None,
        shape: tuple[int, int] = (32, 32),
        grayscale: bool = True,
        resize: bool = True,
        test_size: float = 0.25,
        seed: int = 0,
        class_map: dict[str, str] | None = None,
    ) -> None:
        self.path, self.name, self.shape, self.grayscale = path, name, tuple(shape), bool(grayscale)
        self.resize, self.test_size, self.seed = bool(resize), test_size, seed
        if class_map is not None and not (
            isinstance(class_map, dict) and all(isinstance(v, (str, int)) for v in class_map.values())
        ):
            raise ConfigError("dataset.class_map", class_map, "null or a map {folder name: model class name}")
        self.class_map = {str(k): str(v) for k, v in (class_map or {}).items()}

    def load(self) -> ImageSplit:
        from PIL import Image, UnidentifiedImageError

        if not self.path:
            raise ConfigError("dataset.path", self.path, "a folder with one sub-folder of images per class")
        root = Path(self.path).expanduser()
        if not root.is_dir():
            raise ConfigError("dataset.path", self.path, "an existing folder with one sub-folder per class")
        classes = sorted(d.name for d in root.iterdir() if d.is_dir())
        files = [(c, f) for c in classes for f in sorted((root / c).iterdir()) if f.suffix.lower() in SUFFIXES]
        has_labels = bool(files)
        if not files:  # no class sub-folders with images: the folder's own images, without ground truth
            classes = [""]
            files = [("", f) for f in sorted(root.iterdir()) if f.is_file() and f.suffix.lower() in SUFFIXES]
        if not files:
            raise ConfigError(
                "dataset.path", self.path,
                f"a folder whose class sub-folders hold {', '.join(SUFFIXES)} files (or that holds them directly: "
                "images without ground truth)",
            )
        if len(files) < 2 and self.test_size is not None:  # None: no split (a model not trained here)
            raise ConfigError("dataset.path", self.path, "a folder with at least two images (one per split)")
        unknown = sorted(set(self.class_map) - set(classes))
        if has_labels and unknown:
            raise ConfigError(
                "dataset.class_map", self.class_map, f"keys among the folder's class sub-folders ({unknown[0]!r} is not)"
            )
        check_shape("dataset.shape", self.shape)
        if self.resize:  # the size of what is kept is known before any image is decoded
            check_memory("dataset.shape", list(self.shape), len(files), self.shape, 1 if self.grayscale else 3)
        mode = "L" if self.grayscale else "RGB"
        sizes: set[tuple[int, int]] = set()
        images, labels, paths = [], [], []
        for c, f in files:
            rel = f.relative_to(root).as_posix()
            try:
                with bomb_check(rel), Image.open(f) as im:
                    if not self.resize and not sizes:  # kept at their own size, which must be one: the first's
                        check_memory("dataset.resize", False, len(files), im.size[::-1], 1 if self.grayscale else 3)
                    im = im.convert(mode)
                    sizes.add(im.size)
                    if self.resize:
                        im = im.resize((self.shape[1], self.shape[0]), Image.Resampling.BILINEAR)
                    arr = np.asarray(im, dtype="float64") / 255.0
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(f"dataset.path: image {rel!r} cannot be read ({type(exc).__name__}); remove or fix it") from exc
            images.append(arr)
            labels.append(classes.index(c))
            paths.append(rel)
        if not self.resize and len(sizes) > 1:
            raise ConfigError(
                "dataset.resize", False, f"true, or images of one size (found {sorted(sizes)[:3]}...)"
            )
        if not has_labels:
            split = split_arrays(
                self.name or root.name, np.stack(images), np.full(len(images), -1), self.test_size, self.seed,
                paths, [], has_labels=False,
            )
            return split
        present = sorted(set(labels))
        names = [self.class_map.get(classes[i], classes[i]) for i in present]
        label_arr = np.searchsorted(present, labels)
        split = split_arrays(
            self.name or root.name, np.stack(images), label_arr, self.test_size, self.seed, paths, names
        )
        split.class_map = dict(self.class_map) or None
        return split


DATASET = DatasetKind(name="image_folder", loader=ImageFolder)  # lineage: its folder (dataset.path)

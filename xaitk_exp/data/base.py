"""The split container shared by every dataset loader."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from xaitk_exp.errors import ConfigError


@dataclass
class ImageSplit:
    """Train and test images with integer labels.

    Images are float arrays in ``[0, 1]`` shaped ``[N, H, W]`` (grayscale) or ``[N, H, W, C]``.
    ``test_paths`` holds each test image's path relative to the dataset root, where there is one.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    test_paths: list[str] | None = None
    class_names: list[str] = field(default_factory=list)
    #: False for images without ground truth (a folder without class sub-folders): labels are all -1
    has_labels: bool = True
    #: the ``dataset.class_map`` that renamed ``class_names`` (for error messages)
    class_map: dict[str, str] | None = None

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.train_images.shape[1:])

    def images(self, split: str) -> np.ndarray:
        return self.train_images if split == "train" else self.test_images

    def labels(self, split: str) -> np.ndarray:
        return self.train_labels if split == "train" else self.test_labels

    def fingerprint(self) -> str:
        """A short hash of every array: two splits with the same fingerprint hold the same data."""
        h = hashlib.sha256()
        for arr in (self.train_images, self.train_labels, self.test_images, self.test_labels):
            a = np.ascontiguousarray(arr)
            h.update(str((a.shape, a.dtype.str)).encode())
            h.update(a.tobytes())
        return h.hexdigest()[:16]


def check_test_size(test_size: object) -> float:
    """``dataset.test_size`` as a float strictly between 0 and 1, else one :class:`ConfigError` naming the key."""
    if not isinstance(test_size, (int, float)) or isinstance(test_size, bool) or not 0.0 < float(test_size) < 1.0:
        raise ConfigError("dataset.test_size", test_size, "a fraction strictly between 0 and 1 (the share of test images)")
    return float(test_size)


def split_arrays(
    name: str,
    images: np.ndarray,
    labels: np.ndarray,
    test_size: float | None,
    seed: int,
    paths: list[str] | None = None,
    class_names: list[str] | None = None,
    has_labels: bool = True,
) -> ImageSplit:
    """Split stratified by label with a seeded shuffle (scikit-learn's ``train_test_split``).

    ``test_size=None``: no split, every image is a test image (in its order) and the train split is empty: a model
    that is not trained here (ONNX, PyTorch, MAITE, a pretrained MLflow model) is evaluated on all of them.
    """
    if test_size is None:
        idx = np.arange(len(images))
        return ImageSplit(
            name=name,
            train_images=images[:0],
            train_labels=labels[:0],
            test_images=images,
            test_labels=labels,
            test_paths=list(paths) if paths is not None else None,
            class_names=class_names if class_names is not None else [str(c) for c in np.unique(labels[idx])],
            has_labels=has_labels,
        )
    from sklearn.model_selection import train_test_split

    test_size = check_test_size(test_size)
    idx = np.arange(len(images))
    counts = np.unique(labels, return_counts=True)[1]
    n_test = int(np.ceil(test_size * len(idx)))
    if n_test >= len(idx):
        raise ConfigError(
            "dataset.test_size", test_size,
            f"a fraction that leaves at least one of the {len(idx)} images for training, e.g. 0.25",
        )
    # stratified where scikit-learn can (every class twice, each split at least one image per class), else shuffled
    fits = counts.min() >= 2 and min(n_test, len(idx) - n_test) >= len(counts)
    stratify = labels if fits else None
    train_idx, test_idx = train_test_split(idx, test_size=test_size, random_state=seed, stratify=stratify)
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    return ImageSplit(
        name=name,
        train_images=images[train_idx],
        train_labels=labels[train_idx],
        test_images=images[test_idx],
        test_labels=labels[test_idx],
        test_paths=[paths[i] for i in test_idx] if paths is not None else None,
        class_names=class_names if class_names is not None else [str(c) for c in np.unique(labels)],
        has_labels=has_labels,
    )

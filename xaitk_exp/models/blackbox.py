"""The black boxes xaitk-saliency queries (smqtk ``ClassifyImage``): a scikit-learn estimator seen through
``predict_proba`` (:class:`SklearnBlackbox`), and an ONNX / PyTorch / MAITE image classifier
(:class:`ImageModelBlackbox`). Both predict in chunks of ``chunk_size`` images and check that every image they were
given gets exactly one row. A detector (D-RISE) would sit beside them as an ``DetectImageObjects``.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from smqtk_classifier import ClassifyImage


class BatchedBlackbox(ClassifyImage):
    """What both black boxes share: chunking, count checks, and an optional restriction to a few classes.

    ``columns``: the model's class indices this black box reports, in that order (None: every class). xaitk-saliency
    makes one map per reported class, so restricting the classes restricts the maps (each class's map is computed
    from its own column alone: the kept maps are the same as with every class).
    """

    def __init__(self, model: Any, chunk_size: int = 256, columns: Sequence[int] | None = None) -> None:
        self.model = model
        self.chunk_size = int(chunk_size)
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size}: a positive number of images")
        self.all_labels = [_label(c) for c in model.classes_]
        self.columns = None if columns is None else [int(c) for c in columns]
        self.labels = self.all_labels if self.columns is None else [self.all_labels[c] for c in self.columns]
        self.n_calls = 0  # model calls, for tests and benchmarks

    def restricted(self, columns: Sequence[int] | None) -> BatchedBlackbox:
        """The same model reporting only ``columns`` (model class indices, in that order); shares the call count."""
        twin = type(self).__new__(type(self))
        twin.__dict__.update(self.__dict__)
        twin.columns = None if columns is None else [int(c) for c in columns]
        twin.labels = self.all_labels if twin.columns is None else [self.all_labels[c] for c in twin.columns]
        return twin

    def get_labels(self) -> list[Hashable]:
        return list(self.labels)

    def _predict_chunk(self, chunk: np.ndarray) -> np.ndarray:
        """``[n, H, W(, C)]`` -> ``[n, n_classes]`` probabilities for every class (one model call)."""
        raise NotImplementedError

    def predict_all(self, images: np.ndarray) -> np.ndarray:
        """``[N, H, W(, C)]`` images in ``[0, 1]`` -> ``[N, n_classes]`` probabilities of every class, chunked."""
        images = np.asarray(images)
        out = []
        for start in range(0, len(images), self.chunk_size):
            chunk = images[start : start + self.chunk_size]
            self.n_calls += 1
            probs = np.asarray(self._predict_chunk(chunk))
            if probs.ndim != 2 or len(probs) != len(chunk):  # a shortfall would leave uninitialised rows in xaitk
                raise RuntimeError(f"black box returned {len(probs)} results for {len(chunk)} images")
            out.append(probs)
        if not out:
            return np.empty((0, len(self.all_labels)))
        return np.concatenate(out)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """``[N, H, W(, C)]`` images in ``[0, 1]`` -> ``[N, n_reported]`` probabilities (the reported columns)."""
        probs = self.predict_all(images)
        return probs if self.columns is None else probs[:, self.columns]

    def classify_images(self, img_iter: Iterable[np.ndarray]) -> Iterator[dict[Hashable, float]]:
        it = iter(img_iter)
        while True:
            chunk = list(itertools.islice(it, self.chunk_size))
            if not chunk:
                return
            probs = self.predict(np.stack(chunk))
            if len(probs) != len(chunk):
                raise RuntimeError(f"black box returned {len(probs)} results for {len(chunk)} images")
            for row in probs:
                yield dict(zip(self.labels, row.tolist(), strict=True))

    def get_config(self) -> dict[str, Any]:
        return {"model": type(self.model).__name__, "chunk_size": self.chunk_size, "columns": self.columns}


class SklearnBlackbox(BatchedBlackbox):
    """Wraps any fitted estimator with ``predict_proba``; images are flattened to the model's feature vector.

    Predictions are made in chunks of ``chunk_size`` images, so memory is bounded by the chunk, not the stream.
    Labels come from the estimator's ``classes_``.
    """

    def _predict_chunk(self, chunk: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(chunk.reshape(len(chunk), -1))


class ImageModelBlackbox(BatchedBlackbox):
    """An :class:`~xaitk_exp.models.sources.ImageModel` (ONNX Runtime, PyTorch, MAITE): ``[n, H, W(, C)]`` images
    in ``[0, 1]`` (as xaitk-saliency perturbed them) are normalised and laid out by ``model.preprocess`` inside
    each call, then scored without gradients; logits go through a softmax. Labels are class indices ``0..Cl-1``."""

    def _predict_chunk(self, chunk: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(chunk)

    def get_config(self) -> dict[str, Any]:
        return {**self.model.get_config(), "chunk_size": self.chunk_size, "columns": self.columns}


def blackbox_for(model: Any, chunk_size: int = 256, columns: Sequence[int] | None = None) -> BatchedBlackbox:
    """The black box of a built model: :class:`ImageModelBlackbox` for the ONNX / PyTorch / MAITE sources, else
    :class:`SklearnBlackbox`."""
    from xaitk_exp.models.image_model import ImageModel

    cls = ImageModelBlackbox if isinstance(model, ImageModel) else SklearnBlackbox
    return cls(model, chunk_size, columns)


def _label(c: Any) -> Hashable:
    return c.item() if isinstance(c, np.generic) else c


def predict_rows(blackbox: BatchedBlackbox, images: np.ndarray, ids: Sequence[int]) -> np.ndarray:
    """Probabilities ``[N, classes]`` with the rows of ``ids`` filled (NaN elsewhere): each chunk of
    ``blackbox.chunk_size`` images holding one of them is predicted whole, as the whole split is, so that those rows
    are the same bits as :meth:`BatchedBlackbox.predict` of every image."""
    size = blackbox.chunk_size
    probs: np.ndarray | None = None
    for j in sorted({int(k) // size for k in ids}):
        rows = blackbox.predict(images[j * size: (j + 1) * size])
        if probs is None:
            probs = np.full((len(images), rows.shape[1]), np.nan)
        probs[j * size: j * size + len(rows)] = rows
    return probs if probs is not None else np.empty((len(images), 0))

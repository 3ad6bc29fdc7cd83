"""The black box xaitk-saliency queries: a scikit-learn estimator seen through ``predict_proba``."""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterable, Iterator
from typing import Any

import numpy as np
from smqtk_classifier import ClassifyImage


class SklearnBlackbox(ClassifyImage):
    """Wraps any fitted estimator with ``predict_proba``; images are flattened to the model's feature vector.

    Predictions are made in chunks of ``chunk_size`` images, so memory is bounded by the chunk, not the stream.
    Labels come from the estimator's ``classes_``.
    """

    def __init__(self, model: Any, chunk_size: int = 256) -> None:
        self.model = model
        self.chunk_size = int(chunk_size)
        self.labels = [_label(c) for c in model.classes_]
        self.n_calls = 0  # predict_proba calls, for tests and benchmarks

    def get_labels(self) -> list[Hashable]:
        return list(self.labels)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """``[N, H, W(, C)]`` images -> ``[N, n_classes]`` probabilities, one ``predict_proba`` call per chunk."""
        images = np.asarray(images)
        out = []
        for start in range(0, len(images), self.chunk_size):
            chunk = images[start : start + self.chunk_size]
            self.n_calls += 1
            out.append(self.model.predict_proba(chunk.reshape(len(chunk), -1)))
        if not out:
            return np.empty((0, len(self.labels)))
        return np.concatenate(out)

    def classify_images(self, img_iter: Iterable[np.ndarray]) -> Iterator[dict[Hashable, float]]:
        it = iter(img_iter)
        while True:
            chunk = list(itertools.islice(it, self.chunk_size))
            if not chunk:
                return
            probs = self.predict(np.stack(chunk))
            if len(probs) != len(chunk):  # a silent shortfall would leave uninitialised rows in xaitk
                raise RuntimeError(f"black box returned {len(probs)} results for {len(chunk)} images")
            for row in probs:
                yield dict(zip(self.labels, row.tolist(), strict=True))

    def get_config(self) -> dict[str, Any]:
        return {"model": type(self.model).__name__, "chunk_size": self.chunk_size}


def _label(c: Any) -> Hashable:
    return c.item() if isinstance(c, np.generic) else c

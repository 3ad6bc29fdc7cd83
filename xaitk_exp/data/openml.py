"""OpenML image datasets such as ``mnist_784``: downloaded once, then read from scikit-learn's cache."""

from __future__ import annotations

from typing import Any

import numpy as np

from xaitk_exp.data.base import ImageSplit, split_arrays
from xaitk_exp.data.registry import DatasetKind
from xaitk_exp.errors import DataError


class OpenML:
    """A flat OpenML image table reshaped to ``shape`` and scaled by ``1 / max_value``.

    ``data_home`` is scikit-learn's cache folder (None: ``~/scikit_learn_data``); ``limit`` keeps the first N rows.
    """

    def __init__(
        self,
        name: str = "mnist_784",
        shape: tuple[int, ...] = (28, 28),
        max_value: float = 255.0,
        test_size: float = 10000 / 70000,
        seed: int = 0,
        data_home: str | None = None,
        limit: int | None = None,
        version: int = 1,
    ) -> None:
        self.name, self.shape, self.max_value = name, tuple(shape), float(max_value)
        self.test_size, self.seed, self.data_home, self.limit, self.version = test_size, seed, data_home, limit, version

    def load(self) -> ImageSplit:
        from sklearn.datasets import fetch_openml

        try:
            X, y = fetch_openml(
                self.name, version=self.version, data_home=self.data_home, return_X_y=True, as_frame=False,
                parser="liac-arff",
            )
        except Exception as exc:  # network or cache failure: say where to look
            raise DataError(
                f"dataset.name={self.name!r} could not be fetched from OpenML or read from the cache "
                f"dataset.data_home={self.data_home!r}: {type(exc).__name__}: {exc}"
            ) from exc
        if self.limit:
            X, y = X[: self.limit], y[: self.limit]
        images = np.asarray(X, dtype="float64").reshape((len(X), *self.shape)) / self.max_value
        classes, labels = np.unique(np.asarray(y), return_inverse=True)
        return split_arrays(
            self.name, images, labels.astype(int), self.test_size, self.seed, class_names=[str(c) for c in classes]
        )


def _openml_page(node: Any) -> tuple[str, str]:
    """The dataset's OpenML page (its version, when pinned)."""
    version = node.get("version")
    suffix = f"&version={version}" if version is not None else ""
    return "http", f"https://www.openml.org/search?type=data&name={node.get('name')}{suffix}"


DATASET = DatasetKind(name="mnist", loader=OpenML, lineage=_openml_page)

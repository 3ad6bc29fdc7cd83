"""scikit-learn's 8x8 digits: shipped with scikit-learn, no download."""

from __future__ import annotations

from xaitk_exp.data.base import ImageSplit, split_arrays


class Digits:
    """1797 grayscale 8x8 digit images, scaled from 0..16 to ``[0, 1]``."""

    def __init__(self, name: str = "digits", test_size: float = 0.25, seed: int = 0) -> None:
        self.name, self.test_size, self.seed = name, test_size, seed

    def load(self) -> ImageSplit:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = (bunch.images / 16.0).astype("float64")
        return split_arrays(self.name, images, bunch.target.astype(int), self.test_size, self.seed)

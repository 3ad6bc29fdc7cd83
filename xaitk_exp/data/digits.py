"""scikit-learn's 8x8 digits: shipped with scikit-learn, no download."""

from __future__ import annotations

from xaitk_exp.data.base import ImageSplit, split_arrays
from xaitk_exp.data.registry import DatasetKind


class Digits:
    """1797 grayscale 8x8 digit images, scaled from 0..16 to ``[0, 1]``."""

    def __init__(self, name: str = "digits", test_size: float = 0.25, seed: int = 0) -> None:
        self.name, self.test_size, self.seed = name, test_size, seed

    def load(self) -> ImageSplit:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = (bunch.images / 16.0).astype("float64")
        return split_arrays(self.name, images, bunch.target.astype(int), self.test_size, self.seed)


def _shipped_file(node: object) -> tuple[str, str]:
    """The file scikit-learn ships the digits in."""
    from pathlib import Path

    import sklearn.datasets

    return "local", (Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz").as_uri()


DATASET = DatasetKind(name="digits", loader=Digits, lineage=_shipped_file)

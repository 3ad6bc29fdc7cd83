"""Datasets: each loader returns an :class:`ImageSplit` of images shaped ``[N, H, W]`` or ``[N, H, W, C]``.

Pixel values are floats in ``[0, 1]``. ``Image_id`` in the tracking store is the row index in the evaluated split.
"""

from xaitk_exp.data.base import ImageSplit, split_arrays
from xaitk_exp.data.digits import Digits
from xaitk_exp.data.image_folder import ImageFolder
from xaitk_exp.data.maite_dataset import MaiteDataset
from xaitk_exp.data.openml import OpenML

__all__ = ["Digits", "ImageFolder", "ImageSplit", "MaiteDataset", "OpenML", "split_arrays"]

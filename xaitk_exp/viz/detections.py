"""An image with its detections drawn (boxes, class names and scores), and its ground truth where known, for an
evaluation image run of ``task=detection``. Pillow only; small images are enlarged so the labels stay legible."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from xaitk_exp.viz.figures import to_rgb

DETECTED = (255, 140, 0)  #: detections' boxes (orange: apart from the shapes' red and blue)
TRUTH = (20, 160, 60)  #: ground-truth boxes
MIN_SIDE = 256  #: images smaller than this are enlarged (nearest neighbour) to about this size


def draw_boxes(image: np.ndarray, boxes: np.ndarray, captions: Sequence[str], colour: tuple[int, int, int],
               scale: float = 1.0, rgb: np.ndarray | None = None, width: int = 1) -> np.ndarray:
    """``[H', W', 3]`` uint8: ``rgb`` (else ``image`` in [0, 1] enlarged ``scale`` times) with ``boxes`` (x0, y0, x1,
    y1 in ``image``'s pixels) outlined in ``colour``, each captioned."""
    from PIL import Image, ImageDraw

    if rgb is None:
        base = to_rgb(image)
        if scale != 1.0:
            h, w = base.shape[:2]
            size = (round(w * scale), round(h * scale))
            base = np.asarray(Image.fromarray(base).resize(size, Image.Resampling.NEAREST))
        rgb = base
    picture = Image.fromarray(np.ascontiguousarray(rgb))
    draw = ImageDraw.Draw(picture)
    for (x0, y0, x1, y1), caption in zip(np.asarray(boxes, float).reshape(-1, 4).tolist(), captions, strict=True):
        box = [x0 * scale, y0 * scale, max(x0 * scale, x1 * scale - 1), max(y0 * scale, y1 * scale - 1)]
        draw.rectangle(box, outline=colour, width=width)
        if caption:
            tw = draw.textlength(caption)
            ty = box[1] - 11 if box[1] >= 11 else box[1] + 1
            draw.rectangle([box[0], ty, box[0] + tw + 2, ty + 10], fill=colour)
            draw.text((box[0] + 1, ty - 1), caption, fill=(255, 255, 255))
    return np.asarray(picture)


def detections_figure(image: np.ndarray, boxes: np.ndarray, names: Sequence[str], scores: Sequence[float],
                      path: str | Path, truth: tuple[np.ndarray, Sequence[str]] | None = None) -> Path:
    """Write the picture of one image's detections (orange, ``name score``) and ground truth (green, wider, under
    them) to ``path``."""
    from PIL import Image

    h, w = np.asarray(image).shape[:2]
    scale = max(1.0, float(np.ceil(MIN_SIDE / max(h, w))))
    rgb = draw_boxes(image, np.zeros((0, 4)), [], DETECTED, scale)
    if truth is not None:
        rgb = draw_boxes(image, truth[0], [""] * len(truth[1]), TRUTH, scale, rgb, width=3)
    captions = [f"{n} {s:.2f}" for n, s in zip(names, scores, strict=True)]
    rgb = draw_boxes(image, boxes, captions, DETECTED, scale, rgb)
    Image.fromarray(rgb).save(path)
    return Path(path)

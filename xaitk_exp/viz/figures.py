"""Pictures for the MLflow UI, drawn with Pillow: a few milliseconds each, so rendering never dominates a stage.

Saliency maps use a diverging palette: blue for negative, white for zero, red for positive saliency.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

PANEL = 96  # pixels per panel side
LABEL_H = 14
PAD = 4
#: what every saliency picture's colours mean (every stored map follows it: see :class:`xaitk_exp.saliency.Algorithm`)
LEGEND = "red = evidence for the class (raises its confidence), blue = against"
RED, BLUE = (178, 24, 43), (33, 102, 172)


def diverging(values: np.ndarray) -> np.ndarray:
    """``[H, W]`` values in ``[-1, 1]`` -> ``[H, W, 3]`` uint8: blue (-1), white (0), red (+1)."""
    v = np.clip(np.nan_to_num(values), -1.0, 1.0)[..., None]
    white = np.array([255.0, 255.0, 255.0])
    red, blue = np.array(RED, dtype=float), np.array(BLUE, dtype=float)
    rgb = np.where(v >= 0, white + v * (red - white), white + (-v) * (blue - white))
    return rgb.astype(np.uint8)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """An image in ``[0, 1]`` (``[H, W]`` or ``[H, W, C]``) as ``[H, W, 3]`` uint8."""
    img = np.asarray(image, dtype=float)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def overlay(image: np.ndarray, sal: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    base = to_rgb(image).astype(float)
    heat = diverging(sal).astype(float)
    return (base * (1 - alpha) + heat * alpha).astype(np.uint8)


@functools.cache
def _nearest(h: int, w: int) -> np.ndarray:
    """``[PANEL, PANEL]`` flat indices of the ``[h, w]`` pixels that Pillow's nearest-neighbour resize picks."""
    from PIL import Image

    index = Image.fromarray(np.arange(h * w, dtype=np.int32).reshape(h, w))
    return np.asarray(index.resize((PANEL, PANEL), Image.NEAREST), dtype=np.intp)


def at_panel_size(values: np.ndarray, batch: bool = False) -> np.ndarray:
    """``values`` (``[H, W, ...]``, or ``[n, H, W]`` with ``batch``) sampled onto a panel's ``PANEL x PANEL`` pixels
    exactly as :func:`_panel`'s resize would sample them."""
    if batch:
        n, h, w = values.shape[:3]
        return values.reshape(n, h * w, *values.shape[3:])[:, _nearest(h, w)]
    h, w = values.shape[:2]
    return values.reshape(h * w, *values.shape[2:])[_nearest(h, w)]


def _panel(rgb: np.ndarray, label: str):
    from PIL import Image, ImageDraw

    img = Image.fromarray(rgb).resize((PANEL, PANEL), Image.NEAREST)
    canvas = Image.new("RGB", (PANEL, PANEL + LABEL_H), "white")
    canvas.paste(img, (0, LABEL_H))
    ImageDraw.Draw(canvas).text((2, 1), label[:16], fill="black")
    return canvas


def grid(
    panels: Sequence[tuple[np.ndarray, str]], path: str | Path, columns: int = 6, title: str = "", legend: str = ""
) -> Path:
    """Lay out labelled ``[H, W, 3]`` uint8 panels in rows of ``columns`` and write a PNG; ``legend``: a line under
    the panels, after a red and a blue swatch."""
    from PIL import Image, ImageDraw

    cols = min(columns, len(panels))
    rows = -(-len(panels) // cols)
    top = LABEL_H + PAD if title else 0
    bottom = LABEL_H + PAD if legend else 0
    w = cols * (PANEL + PAD) + PAD
    h = top + rows * (PANEL + LABEL_H + PAD) + PAD + bottom
    canvas = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((PAD, 2), title, fill="black")
    if legend:
        y = h - bottom
        draw.rectangle([PAD, y + 2, PAD + 9, y + 11], fill=RED)
        draw.rectangle([PAD + 12, y + 2, PAD + 21, y + 11], fill=BLUE)
        draw.text((PAD + 26, y + 1), legend, fill="black")
    for i, (rgb, label) in enumerate(panels):
        r, c = divmod(i, cols)
        canvas.paste(_panel(rgb, label), (PAD + c * (PANEL + PAD), top + PAD + r * (PANEL + LABEL_H + PAD)))
    canvas.save(path, optimize=False, compress_level=1)
    return Path(path)


def saliency_figure(
    image: np.ndarray,
    maps: np.ndarray,
    labels: Sequence[str],
    predicted: int,
    path: str | Path,
    title: str = "",
) -> Path:
    """The image, an overlay of the predicted class's map, then every class's map (``maps``: ``[n, H, W]``), with
    the legend :data:`LEGEND` under them."""
    image, maps = np.asarray(image), np.asarray(maps)
    if image.shape[0] * image.shape[1] > PANEL * PANEL:
        # colours are per pixel: sampling first, then colouring the panel's pixels, draws the same picture with
        # fewer pixels to colour (a 224x224 map has 5x more pixels than its panel)
        image, maps = at_panel_size(image), at_panel_size(maps, batch=True)
    panels = [(to_rgb(image), "image"), (overlay(image, maps[predicted]), f"overlay {labels[predicted]}")]
    panels += [(diverging(m), f"class {lab}") for m, lab in zip(maps, labels, strict=True)]
    return grid(panels, path, columns=6, title=title, legend=LEGEND)


def confusion_figure(matrix: np.ndarray, labels: Sequence[str], path: str | Path, title: str = "") -> Path:
    """A confusion matrix (rows: ground truth, columns: predicted) with counts in each cell."""
    from PIL import Image, ImageDraw

    n = len(labels)
    cell, margin = 28, 40
    size = margin + n * cell + PAD
    canvas = Image.new("RGB", (size, size + LABEL_H), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((PAD, 2), title or "rows: true, columns: predicted", fill="black")
    peak = max(int(matrix.max()), 1)
    for i in range(n):
        draw.text((PAD, LABEL_H + margin + i * cell + 8), str(labels[i])[:5], fill="black")
        draw.text((margin + i * cell + 8, LABEL_H + PAD + 16), str(labels[i])[:3], fill="black")
        for j in range(n):
            v = int(matrix[i, j])
            shade = int(255 - 200 * v / peak)
            x0, y0 = margin + j * cell, LABEL_H + margin + i * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=(shade, shade, 255), outline="gray")
            draw.text((x0 + 4, y0 + 8), str(v), fill="black" if shade > 110 else "white")
    canvas.save(path)
    return Path(path)

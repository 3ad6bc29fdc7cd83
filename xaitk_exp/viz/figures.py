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


#: the longest side a panel may have, in pixels (very elongated images)
PANEL_MAX = 240
SCALE_W = 160  # the colour scale's width
#: what the colour scale says about the range of the maps
SCALE_NOTE = "each map scaled to its own max |value|"


def panel_size(h: int, w: int) -> tuple[int, int]:
    """A panel's ``(height, width)`` for an ``[h, w]`` image: the image's aspect ratio, the area of a
    ``PANEL x PANEL`` square (an 8x8 digit and a 224x224 photo: 96 x 96; a 96x384 photo: 48 x 192), the long side
    at most :data:`PANEL_MAX`."""
    scale = PANEL / float(np.sqrt(h * w))
    scale = min(scale, PANEL_MAX / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


@functools.cache
def _nearest(h: int, w: int) -> np.ndarray:
    """``[ph, pw]`` flat indices (:func:`panel_size`) of the ``[h, w]`` pixels that Pillow's nearest-neighbour
    resize picks."""
    from PIL import Image

    ph, pw = panel_size(h, w)
    index = Image.fromarray(np.arange(h * w, dtype=np.int32).reshape(h, w))
    return np.asarray(index.resize((pw, ph), Image.Resampling.NEAREST), dtype=np.intp)


def at_panel_size(values: np.ndarray, batch: bool = False) -> np.ndarray:
    """``values`` (``[H, W, ...]``, or ``[n, H, W]`` with ``batch``) sampled onto a panel's pixels
    (:func:`panel_size`) exactly as :func:`_panel`'s resize would sample them."""
    if batch:
        n, h, w = values.shape[:3]
        return values.reshape(n, h * w, *values.shape[3:])[:, _nearest(h, w)]
    h, w = values.shape[:2]
    return values.reshape(h * w, *values.shape[2:])[_nearest(h, w)]


def label_chars(width: int) -> int:
    """How many characters of a label fit above a panel ``width`` pixels wide (Pillow's default font)."""
    return max(16, width // 6)


def _panel(rgb: np.ndarray, label: str, cell: tuple[int, int]):
    """One labelled panel: ``rgb`` resized (nearest) to ``cell`` ``(height, width)``, the label above it."""
    from PIL import Image, ImageDraw

    ph, pw = cell
    img = Image.fromarray(rgb)
    if img.size != (pw, ph):
        img = img.resize((pw, ph), Image.Resampling.NEAREST)
    canvas = Image.new("RGB", (pw, ph + LABEL_H), "white")
    canvas.paste(img, (0, LABEL_H))
    ImageDraw.Draw(canvas).text((2, 1), label[: label_chars(pw)], fill="black")
    return canvas


def _colour_scale(draw, x: int, y: int) -> None:
    """The maps' colour scale at ``(x, y)``: a blue-white-red bar from -1 to +1, its ends and middle labelled."""
    ramp = diverging(np.linspace(-1.0, 1.0, SCALE_W)[None, :])[0]
    for i, colour in enumerate(ramp):
        draw.line([x + i, y + 2, x + i, y + 10], fill=tuple(int(c) for c in colour))
    draw.rectangle([x - 1, y + 1, x + SCALE_W, y + 11], outline="gray")
    draw.text((x - 13, y + 1), "-1", fill="black")
    draw.text((x + SCALE_W // 2 - 3, y + 12), "0", fill="black")
    draw.text((x + SCALE_W + 4, y + 1), "+1", fill="black")
    draw.text((x + SCALE_W + 22, y + 1), SCALE_NOTE, fill="black")


def grid(
    panels: Sequence[tuple[np.ndarray, str]],
    path: str | Path,
    columns: int = 6,
    title: str = "",
    legend: str = "",
    scale: bool = False,
) -> Path:
    """Lay out labelled ``[H, W, 3]`` uint8 panels in rows of ``columns`` and write a PNG. Every panel gets the
    shape :func:`panel_size` gives the first one (the image's aspect ratio). ``title``: one line, or several
    separated by newlines; ``scale``: the maps' colour scale (-1 .. +1) under the panels; ``legend``: a line under
    them, after a red and a blue swatch."""
    from PIL import Image, ImageDraw

    cell = panel_size(*panels[0][0].shape[:2])
    ph, pw = cell
    cols = min(columns, len(panels))
    rows = -(-len(panels) // cols)
    lines = title.split("\n") if title else []
    top = (LABEL_H * len(lines) + PAD) if lines else 0
    bottom = (LABEL_H + PAD if legend else 0) + (2 * LABEL_H + PAD if scale else 0)
    w = max(cols * (pw + PAD) + PAD, (SCALE_W + 260) if scale else 0)
    h = top + rows * (ph + LABEL_H + PAD) + PAD + bottom
    canvas = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((PAD, 2 + i * LABEL_H), line, fill="black")
    if scale:
        _colour_scale(draw, PAD + 14, h - bottom)
    if legend:
        y = h - LABEL_H - PAD
        draw.rectangle([PAD, y + 2, PAD + 9, y + 11], fill=RED)
        draw.rectangle([PAD + 12, y + 2, PAD + 21, y + 11], fill=BLUE)
        draw.text((PAD + 26, y + 1), legend, fill="black")
    for i, (rgb, label) in enumerate(panels):
        r, c = divmod(i, cols)
        canvas.paste(_panel(rgb, label, cell), (PAD + c * (pw + PAD), top + PAD + r * (ph + LABEL_H + PAD)))
    canvas.save(path, optimize=False, compress_level=1)
    return Path(path)


def saliency_figure(
    image: np.ndarray,
    maps: np.ndarray,
    labels: Sequence[str],
    predicted: int,
    path: str | Path,
    title: str = "",
    truth: int | None = None,
) -> Path:
    """The image, an overlay of the predicted class's map, then every class's map (``maps``: ``[n, H, W]`` in
    ``[-1, 1]``), each panel named by its class's label (``labels``, in the maps' order), the predicted class's and
    the true class's (``truth``, an index into ``labels``, where known) marked; the colour scale and the legend
    :data:`LEGEND` under them. Panels keep the image's aspect ratio (:func:`panel_size`)."""
    image, maps = np.asarray(image), np.asarray(maps)
    ph, pw = panel_size(*image.shape[:2])
    if image.shape[0] * image.shape[1] > ph * pw:
        # colours are per pixel: sampling first, then colouring the panel's pixels, draws the same picture with
        # fewer pixels to colour (a 224x224 map has 5x more pixels than its panel)
        image, maps = at_panel_size(image), at_panel_size(maps, batch=True)

    def name(i: int) -> str:  # the label, shortened where needed so that its mark stays readable
        marks = [m for m, j in (("predicted", predicted), ("true", truth)) if j == i]
        mark = " (pred., true)" if len(marks) == 2 else (f" ({marks[0]})" if marks else "")
        return str(labels[i])[: max(1, label_chars(pw) - len(mark))] + mark

    panels = [(to_rgb(image), "image"), (overlay(image, maps[predicted]), f"overlay {labels[predicted]}")]
    panels += [(diverging(m), name(i)) for i, m in enumerate(maps)]
    columns = max(2, min(6, 640 // (pw + PAD)))
    return grid(panels, path, columns=columns, title=title, legend=LEGEND, scale=True)


BOX_COLOUR = (255, 200, 0)  #: a detection's box in the pictures: yellow, apart from the maps' red and blue


def _boxed(rgb: np.ndarray, box: Sequence[float], cell: tuple[int, int]) -> np.ndarray:
    """``rgb`` resized (nearest) to ``cell`` ``(height, width)`` with ``box`` (x0, y0, x1, y1 in ``rgb``'s pixels,
    exclusive ends) drawn on it, two pixels wide."""
    from PIL import Image, ImageDraw

    h, w = rgb.shape[:2]
    ph, pw = cell
    img = Image.fromarray(rgb).resize((pw, ph), Image.Resampling.NEAREST)
    x0, y0, x1, y1 = (float(v) for v in box)
    sx, sy = pw / w, ph / h
    ImageDraw.Draw(img).rectangle([x0 * sx, y0 * sy, max(x0 * sx, x1 * sx - 1), max(y0 * sy, y1 * sy - 1)],
                                  outline=BOX_COLOUR, width=2)
    return np.asarray(img)


def detection_figure(image: np.ndarray, sal: np.ndarray, box: Sequence[float], label: str, path: str | Path,
                     title: str = "", legend: str = LEGEND) -> Path:
    """One detection's picture: the image and the overlay of its map (``sal`` ``[H, W]`` in ``[-1, 1]``), the
    detection's ``box`` (x0, y0, x1, y1 in the image's pixels) drawn on both, then the map alone; ``label`` names
    the detection; the colour scale and ``legend`` under them."""
    image, sal = np.asarray(image), np.asarray(sal)
    cell = panel_size(*image.shape[:2])
    panels = [(_boxed(to_rgb(image), box, cell), label),
              (_boxed(overlay(image, sal), box, cell), "overlay"),
              (_boxed(diverging(sal), box, cell), "map")]
    return grid(panels, path, columns=3, title=title, legend=legend, scale=True)


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

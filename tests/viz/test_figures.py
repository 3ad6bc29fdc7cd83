"""The saliency picture: drawn from maps larger than a panel, it is the picture of the full-size panels; panels keep
the image's aspect ratio; the colour scale, the labels and the true class are on it."""

from __future__ import annotations

import numpy as np
import pytest

from xaitk_exp.viz.figures import (
    LEGEND,
    PAD,
    PANEL,
    PANEL_MAX,
    SCALE_W,
    diverging,
    grid,
    overlay,
    panel_size,
    saliency_figure,
    to_rgb,
)


@pytest.mark.parametrize("shape", [(8, 8), (224, 224, 3), (97, 95, 3), (300, 200, 1), (96, 384, 3)])
def test_saliency_picture_matches_the_full_size_drawing_byte_for_byte(tmp_path, shape):
    rng = np.random.default_rng(0)
    image = rng.uniform(size=shape)
    maps = rng.uniform(-1, 1, size=(3, *shape[:2]))
    maps[0, 0, 0] = np.nan
    labels = ["a", "b", "c"]
    saliency_figure(image, maps, labels, 1, tmp_path / "fast.png", "t", truth=2)
    panels = [(to_rgb(image), "image"), (overlay(image, maps[1]), "overlay b")]
    panels += [(diverging(maps[0]), "a"), (diverging(maps[1]), "b (predicted)"), (diverging(maps[2]), "c (true)")]
    columns = max(2, min(6, 640 // (panel_size(*shape[:2])[1] + PAD)))
    grid(panels, tmp_path / "full.png", columns=columns, title="t", legend=LEGEND, scale=True)
    assert (tmp_path / "fast.png").read_bytes() == (tmp_path / "full.png").read_bytes()


@pytest.mark.parametrize("hw", [(8, 8), (224, 224), (96, 384), (48, 160), (400, 30), (10, 2000)])
def test_panels_keep_the_aspect_ratio_with_the_long_side_capped(hw):
    ph, pw = panel_size(*hw)
    assert max(ph, pw) <= PANEL_MAX
    if max(hw) / min(hw) <= 5:  # not so elongated that the short side rounds to a few pixels
        assert abs(ph / pw - hw[0] / hw[1]) <= 0.03 * hw[0] / hw[1]
    if hw[0] == hw[1]:
        assert (ph, pw) == (PANEL, PANEL)  # square images: the panels they always had


def test_a_wide_photo_is_drawn_wide_with_the_scale_and_the_true_class(tmp_path):
    from PIL import Image

    image = np.random.default_rng(0).uniform(size=(96, 384, 3))
    maps = np.linspace(-1, 1, 2 * 96 * 384).reshape(2, 96, 384)
    path = saliency_figure(image, maps, ["tabby cat", "lynx"], 0, tmp_path / "wide.png", "rise | image 3\npredicted "
                           "tabby cat (0.910), true lynx", truth=1)
    rgb = np.asarray(Image.open(path).convert("RGB"))
    ph, pw = panel_size(96, 384)
    assert (ph, pw) == (48, 192)
    # the first panel (the image) is 192 wide and 48 high: find its non-white extent in its column band
    band = rgb[:, PAD : PAD + pw + 2]
    rows = np.where((band != 255).any(axis=(1, 2)))[0]
    assert rgb.shape[1] >= 3 * (pw + PAD)  # three wide panels a row
    # the colour scale: a bottom row holding the whole blue-white-red ramp (the legend's swatches are two colours)
    ramp = {tuple(c) for c in diverging(np.linspace(-1.0, 1.0, SCALE_W)[None, :])[0]}
    scale_rows = [r for r in range(rgb.shape[0] - 50, rgb.shape[0])
                  if len({tuple(c) for c in rgb[r]} & ramp) > 100]
    assert scale_rows and len(rows) > 0

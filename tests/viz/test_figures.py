"""The saliency picture: drawn from maps larger than a panel, it is the picture of the full-size panels."""

from __future__ import annotations

import numpy as np
import pytest

from xaitk_exp.viz.figures import LEGEND, diverging, grid, overlay, saliency_figure, to_rgb


@pytest.mark.parametrize("shape", [(8, 8), (224, 224, 3), (97, 95, 3), (300, 200, 1)])
def test_saliency_picture_matches_the_full_size_drawing_byte_for_byte(tmp_path, shape):
    rng = np.random.default_rng(0)
    image = rng.uniform(size=shape)
    maps = rng.uniform(-1, 1, size=(3, *shape[:2]))
    maps[0, 0, 0] = np.nan
    labels = ["a", "b", "c"]
    saliency_figure(image, maps, labels, 1, tmp_path / "fast.png", "t")
    panels = [(to_rgb(image), "image"), (overlay(image, maps[1]), "overlay b")]
    panels += [(diverging(m), f"class {lab}") for m, lab in zip(maps, labels, strict=True)]
    grid(panels, tmp_path / "full.png", columns=6, title="t", legend=LEGEND)
    assert (tmp_path / "fast.png").read_bytes() == (tmp_path / "full.png").read_bytes()

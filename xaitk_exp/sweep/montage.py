"""The sweep montage: per image, every job's map of the predicted class side by side."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xaitk_exp import schema

if TYPE_CHECKING:
    from xaitk_exp.tracking.tracker import Tracker

MONTAGE = "sweep_montage.png"
MONTAGE_MAX_IMAGES = 12


def sweep_montage(tracker: Tracker, rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Per image (a row), the image then every job's map of the predicted class (a column per job), in rank
    order; None when no job made saliency maps."""
    import numpy as np

    from xaitk_exp.stages.saliency.algorithm import class_maps
    from xaitk_exp.viz.figures import diverging, grid, to_rgb

    jobs = [r for r in rows if r.get("saliency_run_ids")]
    if not jobs:
        return None
    names = [r.get("algorithm") or f"job {r['job']}" for r in jobs]
    if len(set(names)) < len(names):
        names = [f"#{r['job']} {n}" for r, n in zip(jobs, names, strict=True)]
    cells: dict[tuple[int, int], np.ndarray] = {}
    images: dict[int, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for col, row in enumerate(jobs):
            for run_id in row["saliency_run_ids"].split(","):
                run = tracker.get_run(run_id)
                k = int(run.data.tags.get(schema.IMAGE_ID, -1))
                folder = Path(tracker.download(run_id, schema.NPY_DIR, f"{tmp}/{run_id}"))
                maps = class_maps(np.load(folder / schema.MAPS_NPY))
                images.setdefault(k, np.load(folder / schema.IMAGE_NPY))
                index = run.data.tags.get(schema.PREDICTED_CLASS_INDEX)
                idx = int(index) if index is not None else int(np.argmax(np.clip(maps, 0, None).sum(axis=(1, 2))))
                cells[(k, col)] = maps[idx]
    ids = sorted(images)[:MONTAGE_MAX_IMAGES]
    blank = np.full((8, 8, 3), 255, dtype=np.uint8)
    panels = []
    for k in ids:
        panels.append((to_rgb(images[k]), f"image {k}"))
        panels += [(diverging(cells[(k, c)]) if (k, c) in cells else blank, names[c]) for c in range(len(jobs))]
    return grid(panels, path, columns=1 + len(jobs), title="sweep: predicted-class saliency per image (rows)")

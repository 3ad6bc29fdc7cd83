"""COCO annotations (``dataset.annotations=<instances.json>``) and the evaluation of detections against them with
pycocotools, the reference implementation of COCO's mAP.

An annotation file is data from whoever wrote it: it is parsed as JSON, checked, and an image's ``file_name`` must be
a plain relative path inside the image folder. Boxes are COCO ``bbox`` x, y, w, h; here they become x0, y0, x1, y1.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from xaitk_exp.detection.blackbox import Detections
from xaitk_exp.errors import ConfigError

KEY = "dataset.annotations"


@dataclass
class CocoAnnotations:
    """A checked COCO ``instances.json``: ``images`` (id, file_name, height, width) in file order, ``categories``
    (category id -> name), and each image's annotations."""

    path: Path
    images: list[dict[str, Any]]
    categories: dict[int, str]
    annotations: list[dict[str, Any]]
    _by_image: dict[int, list[dict[str, Any]]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_image = {int(im["id"]): [] for im in self.images}
        for ann in self.annotations:
            self._by_image[int(ann["image_id"])].append(ann)

    def image_file(self, image: Mapping[str, Any]) -> Path:
        """The image's file, beside the annotation file (``file_name`` checked to stay inside that folder)."""
        return self.path.parent / str(image["file_name"])

    def ground_truth(self, image_id: int, category_index: Mapping[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """The image's boxes ``[N, 4]`` x0, y0, x1, y1 and class indices ``[N]`` (``category_index``: COCO category id
        -> the detector's class index; crowd regions left out)."""
        anns = [a for a in self._by_image[int(image_id)] if not a.get("iscrowd")]
        boxes = np.asarray([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], float).reshape(-1, 4)
        labels = np.asarray([category_index[int(a["category_id"])] for a in anns], np.int64)
        return boxes, labels

    def category_index(self, index2label: Mapping[int, Any] | None = None) -> dict[int, int]:
        """COCO category id -> the detector's class index: by name when every category's name is one of the
        detector's labels, else by order (the categories sorted by id are classes 0, 1, ...)."""
        ids = sorted(self.categories)
        if index2label:
            by_name = {str(v): int(k) for k, v in index2label.items()}
            if all(self.categories[c] in by_name for c in ids):
                return {c: by_name[self.categories[c]] for c in ids}
            if len(index2label) < len(ids):
                raise ConfigError(KEY, str(self.path), f"categories the detector knows: it has {len(index2label)} "
                                  f"classes, the file {len(ids)} categories whose names are not its labels")
        return {c: i for i, c in enumerate(ids)}


def load_annotations(path: str | Path) -> CocoAnnotations:
    """Read and check a COCO ``instances.json``; a bad file raises :class:`ConfigError` naming the config key."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(KEY, str(path), "an existing COCO instances.json") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(KEY, str(path), "a readable COCO instances.json", f"{type(e).__name__}: {e}") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations",
                                                                                     "categories")):
        raise ConfigError(KEY, str(path), "a COCO instances.json: a JSON object with lists images, annotations, "
                          "categories")
    try:
        categories = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        images = [{"id": int(im["id"]), "file_name": _plain(str(im["file_name"])), "height": int(im["height"]),
                   "width": int(im["width"])} for im in data["images"]]
        known = {im["id"] for im in images}
        annotations = []
        for a in data["annotations"]:
            x, y, w, h = (float(v) for v in a["bbox"])
            if not (all(math.isfinite(v) for v in (x, y, w, h)) and w > 0 and h > 0):
                raise ValueError(f"annotation {a.get('id')}: bbox {a['bbox']} needs a positive width and height")
            if int(a["image_id"]) not in known or int(a["category_id"]) not in categories:
                raise ValueError(f"annotation {a.get('id')}: unknown image_id or category_id")
            annotations.append({"id": int(a["id"]), "image_id": int(a["image_id"]),
                                "category_id": int(a["category_id"]), "bbox": [x, y, w, h],
                                "area": float(a.get("area", w * h)), "iscrowd": int(a.get("iscrowd", 0))})
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(KEY, str(path), "a COCO instances.json", f"{type(e).__name__}: {e}") from None
    if len(known) != len(images):
        raise ConfigError(KEY, str(path), "a COCO instances.json whose image ids are unique")
    return CocoAnnotations(p, images, categories, annotations)


def _plain(name: str) -> str:
    """A ``file_name`` that stays inside the image folder: relative, no ``..``, no backslash."""
    pure = PurePosixPath(name)
    if not name or pure.is_absolute() or ".." in pure.parts or "\\" in name or ":" in name:
        raise ValueError(f"file_name {name!r}: a relative path inside the annotation file's folder")
    return name


@dataclass
class CocoSummary:
    """COCO metrics of a set of detections: ``map_50`` (AP@0.5), ``map_50_95`` (AP@[.5:.95]), per class (by the
    category's name) ``ap_50`` and ``ap_50_95`` (NaN for a class without ground truth), per image ``image_ap_50``
    (the mean AP@0.5 over the classes that image holds; NaN for an image without ground truth)."""

    map_50: float
    map_50_95: float
    ap_50: dict[str, float]
    ap_50_95: dict[str, float]
    image_ap_50: dict[int, float]


def evaluate(annotations: CocoAnnotations, detections: Mapping[int, Detections],
             index2label: Mapping[int, Any] | None = None) -> CocoSummary:
    """Evaluate ``detections`` (COCO image id -> that image's :class:`Detections`; missing images have none) with
    pycocotools' ``COCOeval`` (bbox, every area, up to 100 detections per image)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    to_category = {i: c for c, i in annotations.category_index(index2label).items()}
    unknown = set(detections) - {im["id"] for im in annotations.images}
    if unknown:
        raise ValueError(f"detections for image ids {sorted(unknown)[:5]} that {annotations.path} does not hold")
    results: list[dict[str, Any]] = []
    for image_id, d in detections.items():
        for (x0, y0, x1, y1), label, score in zip(d.boxes.tolist(), d.labels.tolist(), d.scores.tolist(),
                                                  strict=True):
            results.append({"id": len(results) + 1, "image_id": int(image_id), "category_id": to_category[label],
                            "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "score": score,
                            "iscrowd": 0})
    # copies: COCOeval marks each ground-truth dict (``ignore``) in place, which would change the split's fingerprint
    base = {"images": copy.deepcopy(annotations.images),
            "categories": [{"id": c, "name": n} for c, n in sorted(annotations.categories.items())]}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools reports progress on stdout
        gt, dt = COCO(), COCO()
        gt.dataset = {**base, "annotations": copy.deepcopy(annotations.annotations)}
        dt.dataset = {**base, "annotations": results}
        gt.createIndex()
        dt.createIndex()
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        precision = ev.eval["precision"]  # [T iou, R recall, K classes, A areas, M max dets]
        per_image = _per_image_ap_50(ev)
    names = [annotations.categories[c] for c in ev.params.catIds]
    ap_50 = {n: _mean_ap(precision[0, :, k, 0, -1]) for k, n in enumerate(names)}
    ap_50_95 = {n: _mean_ap(precision[:, :, k, 0, -1]) for k, n in enumerate(names)}
    map_50, map_50_95 = (float(v) if v > -1 else float("nan") for v in ev.stats[1::-1])  # -1: no ground truth
    return CocoSummary(map_50, map_50_95, ap_50, ap_50_95, per_image)


def _per_image_ap_50(ev: Any) -> dict[int, float]:
    """Each image's AP@0.5 from an evaluated ``COCOeval``: its ``accumulate`` run on that image's share of the
    per-image matches ``evaluate`` already made. (``accumulate(p)`` with a subset of images reads the wrong entries,
    and a fresh ``COCOeval`` per image would match everything again: about 3x the summary's time.)"""
    import copy

    matches, evaluated = ev.evalImgs, ev._paramsEval
    n_images, n_areas = len(evaluated.imgIds), len(evaluated.areaRng)
    n_classes = len(evaluated.catIds) if evaluated.useCats else 1
    out = {}
    try:
        for i, image_id in enumerate(evaluated.imgIds):
            one = copy.copy(evaluated)  # this image, every area (range 0), at most 100 detections (the last)
            one.imgIds, one.areaRng, one.maxDets = [image_id], evaluated.areaRng[:1], evaluated.maxDets[-1:]
            ev._paramsEval = one
            # evaluate() orders its entries by class, then area range, then image
            ev.evalImgs = [matches[k * n_areas * n_images + i] for k in range(n_classes)]
            ev.accumulate(one)
            out[int(image_id)] = _mean_ap(ev.eval["precision"][0, :, :, 0, 0])
    finally:
        ev.evalImgs, ev._paramsEval = matches, evaluated
    return out


def _mean_ap(precision: np.ndarray) -> float:
    """COCO's mean over the recall thresholds (and classes, IoUs) that have ground truth; NaN where none has."""
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else float("nan")

"""``task=detection``: a model returns, per image, boxes (x0, y0, x1, y1 in the image's pixels), class labels and
scores (``models/detector.py``: a MAITE object-detection model, a torchvision-style torch module, an ONNX detector
with named outputs); its black box is smqtk-detection's ``DetectImageObjects``; xaitk-saliency's object-detector
generators apply (D-RISE, ``RandomGridStack``).

An evaluation records per image (``ImageID-<k>_conf``) the metrics ``Detections`` and ``Max_score`` and, where COCO
ground truth exists (``dataset=coco dataset.annotations=...``), the image's ``AP_50``; tags ``Predicted_label`` (the
best detection's class), ``Detected_labels`` and ``GT_objects``; artifacts ``detections.json`` (box, label, name,
score per detection) and ``detections.png`` (the boxes drawn, ground truth in green). The summary holds
``mAP_50``, ``mAP_50_95`` and ``AP_50_<class>`` / ``AP_50_95_<class>`` per class, computed by pycocotools
(``detection/coco.py``), and ``per_class_ap.json``.
"""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xaitk_exp import schema
from xaitk_exp.errors import ConfigError
from xaitk_exp.metrics.names import DETECTION_METRICS
from xaitk_exp.settings.metrics import MetricSettings
from xaitk_exp.tasks.base import Task

#: detection labels listed in an image run's ``Detected_labels`` tag at most
MAX_LISTED = 20


def metric_label(name: str) -> str:
    """A class name as MLflow accepts it inside a metric name (letters, digits, ``_ - . /`` and spaces)."""
    return re.sub(r"[^\w\-. /]", "_", str(name))


def detect_rows(blackbox: Any, images: np.ndarray, rows: Sequence[int] | None) -> dict[int, Any]:
    """Each image's :class:`~xaitk_exp.detection.blackbox.Detections`, by row: every image, or the black box's chunks
    (``chunk_size`` images, cut from the split's start as for the whole split) that hold ``rows``."""
    n = len(images)
    if rows is None:
        return dict(enumerate(blackbox.detect(list(images))))
    size = int(blackbox.chunk_size)
    out: dict[int, Any] = {}
    for c in sorted({int(r) // size for r in rows}):
        start = c * size
        for k, d in enumerate(blackbox.detect(list(images[start : min(start + size, n)])), start=start):
            out[k] = d
    return out


class DetectionRecords:
    """One evaluation's detections on the split (or a shard's chunks) and what they make of each run."""

    def __init__(self, split: Any, model: Any, split_name: str, blackbox: Any,
                 rows: Sequence[int] | None = None) -> None:
        self.images = split.images(split_name)
        self.n_split = len(self.images)
        self.names = list(model.class_names)
        self.index2label = dict(enumerate(self.names))
        self.dets = detect_rows(blackbox, self.images, rows)
        self.whole = rows is None
        ann = getattr(split, "annotations", None) if split_name == "test" else None
        self.annotations = ann
        self.image_ids: list[int] = list(getattr(split, "image_ids", None) or range(self.n_split))
        self.coco: Any = None
        self.category_index: dict[int, int] = {}
        if ann is not None:
            from xaitk_exp.detection.coco import evaluate

            self.category_index = ann.category_index(self.index2label)
            self.coco = evaluate(ann, {self.image_ids[k]: d for k, d in self.dets.items()}, self.index2label)

    def _order(self, k: int) -> np.ndarray:
        d = self.dets[k]
        return np.argsort(-d.scores, kind="stable")

    def _truth(self, k: int) -> tuple[np.ndarray, np.ndarray] | None:
        if self.annotations is None:
            return None
        boxes, labels = self.annotations.ground_truth(self.image_ids[k], self.category_index)
        return np.asarray(boxes), np.asarray(labels)

    def image(self, k: int) -> tuple[dict[str, Any], dict[str, float]]:
        d = self.dets[k]
        order = self._order(k)
        labels = [self.names[int(d.labels[i])] for i in order]
        tags: dict[str, Any] = {schema.DETECTED_LABELS: ",".join(labels[:MAX_LISTED])
                                + (f",... ({len(labels)})" if len(labels) > MAX_LISTED else "")}
        if labels:
            tags[schema.PREDICTED_LABEL] = labels[0]
        metrics = {schema.DETECTIONS: float(len(d)), schema.MAX_SCORE: float(d.scores.max()) if len(d) else 0.0}
        truth = self._truth(k)
        if truth is not None:
            tags[schema.GT_OBJECTS] = len(truth[0])
            ap = self.coco.image_ap_50.get(self.image_ids[k], math.nan)
            if not math.isnan(ap):  # an image without ground truth has no AP
                metrics[schema.AP_50] = float(ap)
        return tags, metrics

    def headline(self, k: int) -> tuple[str, float, str]:
        d = self.dets[k]
        if not len(d):
            answer, score = "no detection", 0.0
        else:
            best = int(self._order(k)[0])
            answer, score = f"{self.names[int(d.labels[best])]} (of {len(d)} detections)", float(d.scores[best])
        truth = self._truth(k)
        return answer, score, "unknown" if truth is None else f"{len(truth[0])} objects"

    def log_image(self, tracker: Any, run_id: str, k: int) -> None:
        """Image ``k``'s run: its detections table and the picture of its boxes, in one upload."""
        import json

        from xaitk_exp.viz.detections import detections_figure

        d = self.dets[k]
        order = self._order(k)
        rows = [{"box": [round(float(v), 3) for v in d.boxes[i]], "label": int(d.labels[i]),
                 "name": self.names[int(d.labels[i])], "score": float(d.scores[i])} for i in order]
        table = {"index2label": {str(i): n for i, n in self.index2label.items()}, "detections": rows}
        truth = self._truth(k)
        gt = None if truth is None else (truth[0], [self.names[int(c)] for c in truth[1]])
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, schema.DETECTIONS_TABLE).write_text(json.dumps(table, indent=1))
            detections_figure(self.images[k], d.boxes[order], [r["name"] for r in rows],
                              [r["score"] for r in rows], Path(tmp, schema.DETECTIONS_FIGURE), gt)
            tracker.log_artifacts(run_id, tmp)

    def summary(self, n: int) -> dict[str, float]:
        counts = [len(d) for d in self.dets.values()]
        out: dict[str, float] = {
            schema.EVALUATED_IMAGES: n,
            schema.SPLIT_IMAGES: self.n_split,
            schema.MEAN_DETECTIONS: float(np.mean(counts)) if counts else 0.0,
        }
        if self.coco is not None:
            for key, value in ((schema.MAP_50, self.coco.map_50), (schema.MAP_50_95, self.coco.map_50_95)):
                if not math.isnan(value):
                    out[key] = float(value)
            for iou, per_class in (("50", self.coco.ap_50), ("50_95", self.coco.ap_50_95)):
                for name, value in per_class.items():
                    if not math.isnan(value):
                        out[schema.class_ap(metric_label(name), iou)] = float(value)
        return out

    def log_artifacts(self, tracker: Any, run_id: str, title: str) -> None:
        if self.coco is None:
            return
        table = {name: {schema.AP_50: _finite(self.coco.ap_50[name]),
                        schema.AP_50_95: _finite(self.coco.ap_50_95[name])}
                 for name in self.coco.ap_50}
        tracker.log_dict(run_id, {"split": title, schema.MAP_50: _finite(self.coco.map_50),
                                  schema.MAP_50_95: _finite(self.coco.map_50_95), "classes": table},
                         schema.CLASS_AP_TABLE)

    def outcome(self, split_name: str) -> str:
        if self.coco is None:
            return "no ground truth"
        return f"mAP@0.5 on {split_name}: {self.coco.map_50:.3f}, mAP@[.5:.95]: {self.coco.map_50_95:.3f}"


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


class Detection(Task):
    name = "detection"
    generator_interface = (
        "xaitk_saliency.interfaces.gen_object_detector_blackbox_sal.GenerateObjectDetectorBlackboxSaliency"
    )
    quality_metrics = DETECTION_METRICS  # deletion / insertion with D-RISE's similarity, baselines, pointing game
    order_by = f"metrics.{schema.MAX_SCORE} DESC"
    explains = "detections"  # one saliency run per detection (stages/saliency/detection.py)

    def check_metrics(self, metrics: MetricSettings) -> None:
        """Refuse ``metrics.sanity``; ``metrics.complexity`` (on by default) is a classifier map's: not recorded."""
        if metrics.enabled and metrics.sanity:
            raise ConfigError("metrics.sanity", True, f"false for task={self.name}: it has no sanity metrics")

    def check_model(self, model: Any, key: str = "model") -> None:
        if getattr(model, "task", None) != self.name:
            kind = getattr(model, "source", None) or f"{type(model).__module__}.{type(model).__name__}"
            raise ConfigError(key, kind, "a detector for task=detection (model=maite with a MAITE object-detection "
                              "model, model=torch with a torchvision-style detector, model=onnx with "
                              "model.outputs.boxes/scores)")

    def blackbox(self, model: Any, chunk_size: int) -> Any:
        """smqtk-detection's ``DetectImageObjects`` (:mod:`xaitk_exp.detection.blackbox`) for ``model``."""
        return model.detector(chunk_size)

    def evaluation(self, split: Any, model: Any, split_name: str, blackbox: Any,
                   rows: Sequence[int] | None = None) -> DetectionRecords:
        return DetectionRecords(split, model, split_name, blackbox, rows)

    def output_labels(self, model: Any, class_names: Sequence[str]) -> list[str]:
        """The detector's class indices (a detection's label)."""
        return [str(i) for i in range(len(model.class_names))]

    def output_names(self, model: Any) -> list[str] | None:
        return list(model.class_names)

    def explained_outputs(self, blackbox: Any, image: Any, top_k: int | None) -> tuple[Any, list[int] | None]:
        """The image's detections, best first (``top_k``: at most that many); their indices in the detector's order."""
        d = next(iter(blackbox.detect([np.asarray(image)])))
        order = [int(i) for i in np.argsort(-d.scores, kind="stable")]
        return blackbox, order[:top_k] if top_k else order


TASK = Detection()

"""Detectors as smqtk-detection ``DetectImageObjects`` black boxes, the form xaitk-saliency's detector saliency
queries: a MAITE object-detection model (:class:`MaiteDetector`), a torchvision-style torch detector
(:class:`TorchDetector`) and an ONNX detector whose outputs are named (:class:`OnnxDetector`).

Images come in as xaitk-saliency perturbs them (``[H, W, C]`` or ``[H, W]``, uint8 or floats in [0, 1]);
preprocessing happens inside the black box, per chunk of ``chunk_size`` images. Boxes go out as x0, y0, x1, y1 in the
input image's pixels (scaled back when preprocessing resized the image). Each detection's class scores come out as a
``{label: score}`` dict over every class, in the black box's label order, so xaitk-saliency's class-score vectors
line up with :meth:`Detections.xaitk_inputs`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from smqtk_detection.interfaces.detect_image_objects import DetectImageObjects

Preprocess = Callable[[np.ndarray], np.ndarray]


@dataclass
class Detections:
    """One image's detections: ``boxes`` float64 ``[N, 4]`` x0, y0, x1, y1 in image pixels; ``labels`` int64
    ``[N]`` class indices; ``scores`` float64 ``[N]`` (the label's score); ``class_scores`` float64 ``[N, n_classes]``
    when the detector gives a score per class, else None."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    class_scores: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.boxes)

    def class_matrix(self, n_classes: int) -> np.ndarray:
        """``[N, n_classes]``: the per-class scores, or a one-hot row times the score for single-score detectors."""
        if self.class_scores is not None:
            return self.class_scores
        out = np.zeros((len(self), n_classes))
        out[np.arange(len(self)), self.labels] = self.scores
        return out

    def select(self, index: np.ndarray | Sequence[int]) -> Detections:
        """The detections at ``index`` (a boolean mask or indices), in that order."""
        cs = None if self.class_scores is None else self.class_scores[index]
        return Detections(self.boxes[index], self.labels[index], self.scores[index], cs)

    def chosen(self, min_score: float | None = None, labels: Iterable[int] | None = None) -> np.ndarray:
        """Indices (in detection order) of the detections scoring at least ``min_score`` whose label is one of
        ``labels`` (class indices); None: no condition. What ``query.min_score`` / ``query.label`` select."""
        keep = np.ones(len(self), bool)
        if min_score is not None:
            keep &= self.scores >= float(min_score)
        if labels is not None:
            keep &= np.isin(self.labels, np.asarray(list(labels), np.int64))
        return np.flatnonzero(keep)

    def xaitk_inputs(self, n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(bboxes [N, 4], scores [N, n_classes], objectness [N] or None)`` for
        ``GenerateObjectDetectorBlackboxSaliency.generate``: with a single score per detection, xaitk-saliency's
        advice (a one-hot row and the score as objectness); with per-class scores, the scores and no objectness."""
        if self.class_scores is not None:
            return self.boxes, self.class_scores, None
        onehot = np.zeros((len(self), n_classes))
        onehot[np.arange(len(self)), self.labels] = 1.0
        return self.boxes, onehot, self.scores


def detections_from(boxes: Any, labels: Any, scores: Any, n_classes: int) -> Detections:
    """Checked :class:`Detections` from array-likes (numpy, torch on any device): ``scores`` ``(N,)`` or
    ``(N, n_classes)``; per-class scores give each detection the label of its highest score when ``labels`` is
    None."""
    b = _numpy(boxes).astype(np.float64).reshape(-1, 4)
    s = _numpy(scores).astype(np.float64)
    if s.ndim == 2:
        if s.shape != (len(b), n_classes):
            raise ValueError(f"per-class scores of shape {list(s.shape)} for {len(b)} boxes and {n_classes} classes")
        lab = s.argmax(axis=1) if labels is None else _numpy(labels).astype(np.int64).reshape(-1)
        top = s[np.arange(len(b)), lab] if len(b) else np.zeros(0)
        return _checked(Detections(b, lab, top, s), n_classes)
    if labels is None:
        raise ValueError("a detector with one score per box must give its labels too")
    lab = _numpy(labels).astype(np.int64).reshape(-1)
    return _checked(Detections(b, lab, s.reshape(-1)), n_classes)


def _checked(d: Detections, n_classes: int) -> Detections:
    if not len(d.boxes) == len(d.labels) == len(d.scores):
        raise ValueError(f"{len(d.boxes)} boxes, {len(d.labels)} labels and {len(d.scores)} scores: one each")
    if len(d.labels) and (d.labels.min() < 0 or d.labels.max() >= n_classes):
        raise ValueError(f"labels {sorted(set(d.labels.tolist()))} outside 0..{n_classes - 1}")
    return d


def unit_chw(images: np.ndarray) -> np.ndarray:
    """The default preprocessing: ``[N, H, W(, C)]`` images (uint8 0..255, or floats in [0, 1]) -> float32
    ``[N, C, H, W]`` in [0, 1]."""
    x = np.asarray(images)
    scale = 1.0 / 255.0 if np.issubdtype(x.dtype, np.integer) else 1.0
    x = x.astype(np.float32) * np.float32(scale)
    if x.ndim == 3:
        x = x[..., None]
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


class DetectorBlackbox(DetectImageObjects):
    """What the three black boxes share: chunking, preprocessing, box scaling, count checks, the label order.

    ``index2label``: class index -> name; the dicts handed to xaitk-saliency are keyed by the indices, in order.
    ``preprocess``: ``[n, H, W(, C)]`` images -> the model's batch (``[n, C, h, w]``, or ``[n, h, w, C]`` with
    ``layout="NHWC"``); boxes from an ``h x w`` input are scaled to the image's ``H x W``. ``min_score``: detections
    scoring less are dropped.
    """

    def __init__(self, index2label: Mapping[int, Any], chunk_size: int = 32, preprocess: Preprocess | None = None,
                 layout: str = "NCHW", min_score: float = 0.0) -> None:
        self.index2label = {int(k): v for k, v in sorted(index2label.items())}
        if list(self.index2label) != list(range(len(self.index2label))) or not self.index2label:
            raise ValueError(f"index2label keys {list(self.index2label)}: the class indices 0..n-1")
        self.chunk_size = int(chunk_size)
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size}: a positive number of images")
        if layout not in ("NCHW", "NHWC"):
            raise ValueError(f"layout={layout!r}: NCHW or NHWC")
        self.preprocess = preprocess or unit_chw
        self.layout, self.min_score = layout, float(min_score)
        self.n_calls = 0  # model calls, for tests and benchmarks

    @property
    def n_classes(self) -> int:
        return len(self.index2label)

    @classmethod
    def is_usable(cls) -> bool:
        return True

    def get_labels(self) -> list[Hashable]:
        return list(self.index2label)

    def _detect_batch(self, batch: np.ndarray) -> list[Detections]:
        """One model call on a preprocessed batch -> one :class:`Detections` per image, in the batch's pixels."""
        raise NotImplementedError

    def detect(self, images: Iterable[np.ndarray]) -> Iterator[Detections]:
        """Per image (``[H, W(, C)]``), its detections in that image's pixels, ``chunk_size`` images per model call
        (images of different sizes go to separate calls)."""
        it = iter(images)
        while True:
            chunk = list(itertools.islice(it, self.chunk_size))
            if not chunk:
                return
            start = 0
            while start < len(chunk):
                stop = start + 1
                while stop < len(chunk) and chunk[stop].shape == chunk[start].shape:
                    stop += 1
                yield from self._detect_same_size(chunk[start:stop])
                start = stop

    def _detect_same_size(self, images: list[np.ndarray]) -> Iterator[Detections]:
        batch = self.preprocess(np.stack(images))
        self.n_calls += 1
        found = self._detect_batch(batch)
        if len(found) != len(images):  # a shortfall would shift every later image's detections
            raise RuntimeError(f"the detector returned {len(found)} results for {len(images)} images")
        in_hw = batch.shape[2:4] if self.layout == "NCHW" else batch.shape[1:3]
        h, w = images[0].shape[:2]
        scale = np.array([w / in_hw[1], h / in_hw[0]] * 2)
        for d in found:
            keep = d.scores >= self.min_score
            d = d.select(keep) if not keep.all() else d
            if not np.array_equal(scale, np.ones(4)):
                d.boxes = d.boxes * scale
            yield d

    def detect_objects(self, img_iter: Iterable[np.ndarray]) -> Iterator[list[tuple[Any, dict[Hashable, float]]]]:
        from smqtk_image_io.bbox import AxisAlignedBoundingBox

        labels = self.get_labels()
        for d in self.detect(img_iter):
            rows = d.class_matrix(self.n_classes)
            yield [(AxisAlignedBoundingBox(box[:2], box[2:]), dict(zip(labels, row.tolist(), strict=True)))
                   for box, row in zip(d.boxes, rows, strict=True)]

    def get_config(self) -> dict[str, Any]:
        return {"index2label": {str(k): str(v) for k, v in self.index2label.items()}, "chunk_size": self.chunk_size,
                "layout": self.layout, "min_score": self.min_score}


class MaiteDetector(DetectorBlackbox):
    """A MAITE object-detection model: called on a list of ``(C, H, W)`` arrays, it returns per image an object
    with ``boxes`` ``(N, 4)``, ``labels`` ``(N,)`` and ``scores`` ``(N,)`` or ``(N, n_classes)``; class names come
    from ``model.metadata["index2label"]``."""

    def __init__(self, model: Any, chunk_size: int = 32, preprocess: Preprocess | None = None,
                 min_score: float = 0.0) -> None:
        meta = getattr(model, "metadata", None) or {}
        index2label = meta.get("index2label") if isinstance(meta, Mapping) else None
        if not index2label:
            raise ValueError("the MAITE model's metadata has no index2label: its class names are needed")
        self.model = model
        super().__init__(index2label, chunk_size, preprocess, "NCHW", min_score)

    def _detect_batch(self, batch: np.ndarray) -> list[Detections]:
        out = self.model([batch[i] for i in range(len(batch))])
        return [detections_from(t.boxes, t.labels, t.scores, self.n_classes) for t in out]

    def get_config(self) -> dict[str, Any]:
        meta = getattr(self.model, "metadata", None) or {}
        return {"model": type(self.model).__name__, "id": str(meta.get("id")), **super().get_config()}


class TorchDetector(DetectorBlackbox):
    """A torchvision-style detector: ``module(list of (C, H, W) float tensors)`` -> a list of dicts with ``boxes``
    ``[N, 4]``, ``labels`` ``[N]`` and ``scores`` ``[N]``; run in eval mode without gradients on ``device``."""

    def __init__(self, module: Any, index2label: Mapping[int, Any], chunk_size: int = 32,
                 preprocess: Preprocess | None = None, min_score: float = 0.0, device: str = "cpu") -> None:
        self.module, self.device = module.eval(), device
        super().__init__(index2label, chunk_size, preprocess, "NCHW", min_score)

    def _detect_batch(self, batch: np.ndarray) -> list[Detections]:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
            out = self.module(list(x))
        return [detections_from(o["boxes"], o["labels"], o["scores"], self.n_classes) for o in out]

    def get_config(self) -> dict[str, Any]:
        return {"model": type(self.module).__name__, "device": self.device, **super().get_config()}


class OnnxDetector(DetectorBlackbox):
    """An ONNX detector whose outputs are named in ``outputs`` (keys ``boxes``, ``scores`` and optionally
    ``labels``): with a leading batch axis, ``boxes`` ``[n, N, 4]``, ``scores`` ``[n, N]`` or ``[n, N, n_classes]``,
    ``labels`` ``[n, N]``. A model exported with a fixed batch of 1 is run image by image. Set ``min_score`` for a
    detector that pads its output with low-scoring boxes."""

    def __init__(self, path: str, outputs: Mapping[str, str], index2label: Mapping[int, Any], chunk_size: int = 32,
                 preprocess: Preprocess | None = None, layout: str = "NCHW", min_score: float = 0.0,
                 threads: int | None = None) -> None:
        import onnxruntime as ort

        unknown = sorted(set(outputs) - {"boxes", "scores", "labels"})
        if unknown or not {"boxes", "scores"} <= set(outputs):
            raise ValueError(f"outputs {dict(outputs)}: keys boxes, scores and optionally labels")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads, options.inter_op_num_threads = int(threads), 1
        options.log_severity_level = 3
        self.path, self.outputs = str(path), dict(outputs)
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        names = [o.name for o in self.session.get_outputs()]
        missing = [v for v in self.outputs.values() if v not in names]
        if missing:
            raise ValueError(f"the ONNX model has no output {missing[0]!r}; its outputs are {names}")
        first = self.session.get_inputs()[0]
        self.input_name, self.batch_of_one = first.name, first.shape[0] == 1
        super().__init__(index2label, chunk_size, preprocess, layout, min_score)

    def _detect_batch(self, batch: np.ndarray) -> list[Detections]:
        parts = [batch[i : i + 1] for i in range(len(batch))] if self.batch_of_one else [batch]
        keys = list(self.outputs)
        found = []
        for part in parts:
            values = dict(zip(keys, self.session.run([self.outputs[k] for k in keys], {self.input_name: part}),
                              strict=True))
            for i in range(len(part)):
                labels = values["labels"][i] if "labels" in values else None
                found.append(detections_from(values["boxes"][i], labels, values["scores"][i], self.n_classes))
        return found

    def get_config(self) -> dict[str, Any]:
        return {"path": self.path, "outputs": self.outputs, **super().get_config()}


def _numpy(value: Any) -> np.ndarray:
    for step in ("detach", "cpu"):
        if hasattr(value, step) and callable(getattr(value, step)):
            value = getattr(value, step)()
    return np.asarray(value)

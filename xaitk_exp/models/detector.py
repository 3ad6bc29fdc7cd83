"""Detectors from the image-model sources (``task=detection``): a MAITE object-detection model
(``model=maite model._target_=<factory>``), a torchvision-style torch module (``model=torch``) and an ONNX detector
whose outputs are named in ``model.outputs`` (``model=onnx model.outputs.boxes=<name> model.outputs.scores=<name>
[model.outputs.labels=<name>]``).

A source loads its model as for a classifier (the file, the factory, the allow-list, the SHA-256); here the loaded
model becomes a :class:`DetectorModel` of the same source, whose black box is the matching smqtk-detection
``DetectImageObjects`` of :mod:`xaitk_exp.detection.blackbox`. Preprocessing (``model.preprocess``) stays inside the
black box. Class names: ``model.class_names``, else the model's own (MAITE ``metadata["index2label"]``, ONNX metadata).

``task`` is inferred (``task=auto``, the default) from a MAITE model: the factory's model is called on one black
image of the dataset's shape; an answer whose first item has ``boxes`` and ``scores`` (attributes or keys, as MAITE's
``ObjectDetectionTarget``) is a detector, anything else a classifier. Other sources are classifiers unless
``task=detection`` says otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from xaitk_exp.errors import ConfigError
from xaitk_exp.models.image_model import ImageModel, probe_images
from xaitk_exp.models.maite import MaiteModel
from xaitk_exp.models.sources import build_image_model

TASK = "detection"
#: ``model.outputs`` keys of an ONNX detector
ONNX_OUTPUT_KEYS = ("boxes", "scores", "labels")


def looks_like_detections(item: Any) -> bool:
    """True for one image's answer holding ``boxes`` and ``scores`` (a MAITE ``ObjectDetectionTarget``, a dict)."""
    if isinstance(item, Mapping):
        return "boxes" in item and "scores" in item
    return hasattr(item, "boxes") and hasattr(item, "scores")


def answers_with_detections(model: ImageModel, image_shape: Sequence[int]) -> bool:
    """Call a MAITE model's runtime on one black image of ``image_shape``: does it answer with detections?"""
    if not isinstance(model, MaiteModel):
        return False
    model.load()
    batch = model.preprocess(np.zeros((1, *image_shape), np.float32))
    try:
        out = model._runtime([batch[0]])
        first = next(iter(out), None)
    except Exception:  # a model that refuses the image: building it as a classifier says why, in one line
        return False
    return first is not None and looks_like_detections(first)


class DetectorModel(ImageModel):
    """What a detector of any source adds to the source's :class:`ImageModel`: class names as ``index2label``, a
    check that it answers with detections, and its black box (:meth:`detector`). It has no class scores."""

    task = TASK
    #: ``model.outputs`` of an ONNX detector (output name per key), else None
    detector_outputs: dict[str, str] | None = None

    @property
    def index2label(self) -> dict[int, str]:
        return dict(enumerate(self.class_names))

    def _prep(self, images: np.ndarray) -> np.ndarray:
        """Images as xaitk-saliency hands them (uint8 0..255 or floats in [0, 1]) -> the model's batch."""
        x = np.asarray(images)
        x = x.astype(np.float32) / np.float32(255.0) if np.issubdtype(x.dtype, np.integer) else x
        return self.preprocess(x)

    def detector(self, chunk_size: int = 32, min_score: float = 0.0) -> Any:
        """The smqtk-detection ``DetectImageObjects`` black box of this model, ``chunk_size`` images per call."""
        raise NotImplementedError

    def detect(self, images: Sequence[np.ndarray] | np.ndarray, chunk_size: int = 32) -> list[Any]:
        """Per image its :class:`~xaitk_exp.detection.blackbox.Detections`."""
        return list(self.detector(chunk_size).detect(list(images)))

    def check_images(self, image_shape: Sequence[int], dataset_key: str = "dataset.shape",
                     samples: np.ndarray | None = None) -> None:
        """One black image of ``image_shape`` and ``samples`` through the detector: it must answer with detections
        (boxes, labels, scores per image) whose labels are among its class names."""
        self.load()
        if not self.class_names:  # names the runtime carries (a torch module's index2label) once it is a detector
            self.class_names = list(self.model_names() or [])
        if not self.class_names:
            raise ConfigError("model.class_names", None, "a list of the detector's class names (or a model that "
                              "carries them, as a MAITE model's metadata index2label)")
        self.n_outputs, self.outputs = len(self.class_names), "detections"
        shape = tuple(int(d) for d in image_shape)
        probe = [np.zeros(shape, np.float32)]
        if samples is not None and len(samples):
            probe += [np.asarray(s, np.float32).reshape(shape) for s in samples]
        self._check_answer(probe[:1])
        probe_images(
            lambda: self.detect(probe), dataset_key, shape,
            lambda why: f"images the detector accepts: {self.source} refused {list(shape)} images ({why}); set the "
                        "dataset's shape / grayscale to the model's input",
        )

    def _check_answer(self, images: list[np.ndarray]) -> None:
        """Refuse a model that does not answer with detections (a classifier with task=detection)."""

    def scores(self, images: np.ndarray) -> np.ndarray:
        raise ConfigError("task", "classification", f"detection: model={self.source} is a detector (boxes, labels "
                          "and scores per image), not a classifier")

    def read_outputs(self, scores: np.ndarray) -> str:
        return self.outputs

    def info(self) -> dict[str, Any]:
        return {**super().info(), "task": TASK, "detector_outputs": self.detector_outputs}

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "task": TASK}


class MaiteDetectorModel(DetectorModel, MaiteModel):
    """A MAITE object-detection model: per image ``boxes`` (N, 4) x0, y0, x1, y1, ``labels`` (N,), ``scores``
    (N,) or (N, n_classes)."""

    def _check_answer(self, images: list[np.ndarray]) -> None:
        out = self._runtime([self._prep(np.stack(images))[0]])
        first = next(iter(out), None)
        if first is None or not looks_like_detections(first):
            raise ConfigError(
                "model._target_", self.node.get("_target_"),
                f"a factory of a MAITE object-detection model for task=detection (per image boxes, labels, scores); "
                f"this model answers with {type(first).__name__} (a classifier: task=classification)",
            )

    def detector(self, chunk_size: int = 32, min_score: float = 0.0) -> Any:
        from xaitk_exp.detection.blackbox import MaiteDetector

        self.load()
        runtime = self._runtime
        meta = getattr(runtime, "metadata", None)
        if not (isinstance(meta, Mapping) and meta.get("index2label")) or self.configured_names:
            runtime = _Named(runtime, self.index2label)
        return MaiteDetector(runtime, chunk_size, self._prep, min_score)


class _Named:
    """A MAITE model seen with other class names (``model.class_names``, or a model without ``index2label``)."""

    def __init__(self, model: Any, index2label: Mapping[int, str]) -> None:
        self.model = model
        meta = getattr(model, "metadata", None)
        self.metadata = {**(dict(meta) if isinstance(meta, Mapping) else {}), "index2label": dict(index2label)}

    def __call__(self, batch: Any) -> Any:
        return self.model(batch)


def _torch_detector_model() -> type[DetectorModel]:
    from xaitk_exp.models.torch import TorchModel

    class TorchDetectorModel(DetectorModel, TorchModel):  # type: ignore[misc]
        """A torchvision-style module: ``module(list of (C, H, W) tensors)`` -> a list of dicts with ``boxes``,
        ``labels`` and ``scores``."""

        def _check_answer(self, images: list[np.ndarray]) -> None:
            import torch

            with torch.inference_mode():
                x = torch.from_numpy(self._prep(np.stack(images))).to(self.device)
                try:
                    out = self._runtime(list(x))
                except Exception:  # the full probe reports it, with the image shape
                    return
            first = out[0] if isinstance(out, (list, tuple)) and out else out
            if not (isinstance(first, Mapping) and {"boxes", "labels", "scores"} <= set(first)):
                raise ConfigError(
                    "model", self.display_name,
                    "a torchvision-style detector for task=detection (a list of dicts with boxes, labels, scores per "
                    f"image); this module returns {type(out).__name__} (a classifier: task=classification)",
                )

        def model_names(self) -> list[str] | None:
            """A module's own ``index2label`` (``{index: name}``), if it has one."""
            index2label = getattr(self._runtime, "index2label", None)
            if isinstance(index2label, Mapping) and index2label:
                return [str(index2label[k]) for k in sorted(index2label)]
            return None

        def detector(self, chunk_size: int = 32, min_score: float = 0.0) -> Any:
            from xaitk_exp.detection.blackbox import TorchDetector

            self.load()
            return TorchDetector(self._runtime, self.index2label, chunk_size, self._prep, min_score, self.device)

    TorchDetectorModel.__module__ = __name__
    TorchDetectorModel.__qualname__ = "TorchDetectorModel"
    return TorchDetectorModel


def _onnx_detector_model() -> type[DetectorModel]:
    from xaitk_exp.models.onnx import OnnxModel

    class OnnxDetectorModel(DetectorModel, OnnxModel):  # type: ignore[misc]
        """An ONNX detector: ``model.outputs.boxes`` ``[n, N, 4]``, ``model.outputs.scores`` ``[n, N]`` or
        ``[n, N, n_classes]``, ``model.outputs.labels`` ``[n, N]`` (optional with per-class scores)."""

        def _check_answer(self, images: list[np.ndarray]) -> None:
            names = [o.name for o in self._runtime.get_outputs()]
            outputs = self.detector_outputs or {}
            for key in ("boxes", "scores"):
                if key not in outputs:
                    raise ConfigError(f"model.outputs.{key}", None, f"the name of the ONNX output holding the {key} "
                                      f"for task=detection, one of {names}")
            for key, name in outputs.items():
                if name not in names:
                    raise ConfigError(f"model.outputs.{key}", name, f"one of the ONNX model's outputs {names}")

        def detector(self, chunk_size: int = 32, min_score: float = 0.0) -> Any:
            from xaitk_exp.detection.blackbox import OnnxDetector

            return OnnxDetector(str(self.path), dict(self.detector_outputs or {}), self.index2label, chunk_size,
                                self._prep, self.preprocess.layout, min_score, self.threads)

    OnnxDetectorModel.__module__ = __name__
    OnnxDetectorModel.__qualname__ = "OnnxDetectorModel"
    return OnnxDetectorModel


def __getattr__(name: str) -> Any:  # module-level classes without importing torch / onnxruntime at import
    if name == "TorchDetectorModel":
        return _cached("torch")
    if name == "OnnxDetectorModel":
        return _cached("onnx")
    raise AttributeError(name)


_CLASSES: dict[str, type[DetectorModel]] = {}


def _cached(source: str) -> type[DetectorModel]:
    if source not in _CLASSES:
        make = {"maite": lambda: MaiteDetectorModel, "torch": _torch_detector_model, "onnx": _onnx_detector_model}
        _CLASSES[source] = make[source]()
    return _CLASSES[source]


def as_detector(model: ImageModel, outputs: Mapping[str, str] | None = None) -> DetectorModel:
    """The :class:`DetectorModel` of a loaded source model (the same node, runtime and digest)."""
    if isinstance(model, DetectorModel):
        return model
    if model.source not in ("maite", "torch", "onnx"):
        raise ConfigError("model.source", model.source, "maite, torch or onnx for task=detection")
    cls = _cached(model.source)
    out: DetectorModel = object.__new__(cls)
    out.__dict__.update(model.__dict__)
    out.detector_outputs = dict(outputs) if outputs else None
    return out


def _outputs_setting(node: Mapping[str, Any]) -> dict[str, str] | None:
    """``model.outputs`` of a detector: ``auto`` (MAITE, torch) or a map of ONNX output names."""
    value = node.get("outputs")
    if value is None or value == "auto":
        if node.get("source") == "onnx":
            raise ConfigError("model.outputs.boxes", None, "the name of the ONNX output holding the boxes for "
                              "task=detection (and model.outputs.scores, optionally model.outputs.labels)")
        return None
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(ONNX_OUTPUT_KEYS))
        if unknown:
            raise ConfigError(f"model.outputs.{unknown[0]}", value[unknown[0]], "one of the keys boxes, scores, labels")
        if node.get("source") != "onnx":
            raise ConfigError("model.outputs", dict(value), f"auto for model={node.get('source')} (output names are "
                              "for an ONNX detector)")
        return {str(k): str(v) for k, v in value.items() if v is not None}
    raise ConfigError("model.outputs", value, "auto, or for an ONNX detector the names of its outputs "
                      "(model.outputs.boxes=<name> model.outputs.scores=<name> model.outputs.labels=<name>)")


def build_for_task(node: Mapping[str, Any], extra_allowed: Sequence[str], task: str,
                   image_shape: Sequence[int]) -> ImageModel:
    """The model of an image-model ``model`` node for ``task`` (``auto``: a MAITE detector is a detector)."""
    if task == TASK:
        outputs = _outputs_setting(node)
        plain = {k: v for k, v in node.items() if k != "outputs"}
        model = build_image_model(plain, extra_allowed)
        model.node = dict(node)
        return as_detector(model, outputs)
    model = build_image_model(node, extra_allowed)
    if answers_with_detections(model, image_shape):
        if task == "auto":
            return as_detector(model)
        raise ConfigError("task", task, f"detection: model._target_={node.get('_target_')} answers with detections "
                          "(boxes, labels, scores)")
    return model


def is_detector(model: Any) -> bool:
    return isinstance(model, DetectorModel)

"""A detector of drawn coloured shapes, for tests and benchmarks (no download, built in well under a second).

Scenes are squares and discs in two colours on a plain light background. The detector needs no training: it
matches each pixel to the two prototype colours, groups matching pixels into connected regions and calls a region a
square or a disc from how much of its box it fills. Occluding part of a shape (as D-RISE does) shrinks or splits its
region, so the box's IoU and the score drop: the detector's saliency falls on the shape, as a real detector's would.

- :class:`ShapesDetector`: a torchvision-style ``torch.nn.Module`` (a list of ``(3, H, W)`` float tensors in
  ``[0, 1]`` -> a list of dicts ``boxes`` ``[N, 4]`` x0, y0, x1, y1, ``labels`` ``[N]``, ``scores`` ``[N]``).
- :class:`MaiteShapesDetector`: the same as a MAITE object-detection model (per-class scores ``[N, 4]``).
- :func:`write_onnx_detector`: an ONNX graph of the same idea, one box per colour (outputs ``boxes``, ``scores``,
  ``labels``).
- :func:`draw_scene` / :func:`write_coco_folder`: images with their true boxes; a folder of PNGs plus a COCO
  ``instances.json``.

Boxes use exclusive ends: a shape covering columns ``a .. b-1`` has ``x0 = a``, ``x1 = b`` (COCO ``w = b - a``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: class index -> name, in the detectors' order
CLASSES: dict[int, str] = {0: "red_square", 1: "red_disc", 2: "blue_square", 3: "blue_disc"}
COLOURS: tuple[tuple[int, int, int], ...] = ((220, 40, 40), (40, 60, 220))  #: red, blue (class // 2)
BACKGROUND = (235, 235, 235)
SIGMA = 0.15  #: colour match width, in [0, 1] units: match = exp(-d^2 / (2 sigma^2))
SQUARE_FILL = 0.89  #: a region filling more of its box than this is a square (a disc fills pi/4 = 0.785)
MIN_AREA = 12  #: smaller regions are not reported


@dataclass
class Scene:
    """One drawn image: ``image`` uint8 ``[H, W, 3]``; ``boxes`` ``[N, 4]`` x0, y0, x1, y1; ``labels`` ``[N]``."""

    image: np.ndarray
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def draw_scene(rng: np.random.Generator, size: tuple[int, int] = (64, 64), n_objects: int = 2,
               min_side: int = 10, max_side: int = 22) -> Scene:
    """A scene of ``n_objects`` shapes that neither overlap nor touch (placed by rejection, seeded by ``rng``)."""
    h, w = size
    image = np.empty((h, w, 3), np.uint8)
    image[:] = BACKGROUND
    boxes: list[list[int]] = []
    labels: list[int] = []
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(1000):
        if len(boxes) == n_objects:
            break
        side = int(rng.integers(min_side, min(max_side, h - 2, w - 2) + 1))
        y0, x0 = int(rng.integers(1, h - side)), int(rng.integers(1, w - side))
        box = [x0, y0, x0 + side, y0 + side]
        if any(box[0] <= b[2] + 1 and b[0] <= box[2] + 1 and box[1] <= b[3] + 1 and b[1] <= box[3] + 1 for b in boxes):
            continue
        label = int(rng.integers(0, len(CLASSES)))
        if label % 2 == 0:
            region = (yy >= y0) & (yy < y0 + side) & (xx >= x0) & (xx < x0 + side)
        else:
            r = side / 2
            region = (yy + 0.5 - y0 - r) ** 2 + (xx + 0.5 - x0 - r) ** 2 <= r * r
        image[region] = COLOURS[label // 2]
        ys, xs = np.nonzero(region)
        boxes.append([int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1])
        labels.append(label)
    return Scene(image, np.asarray(boxes, float).reshape(-1, 4), np.asarray(labels, np.int64))


def _regions(match: np.ndarray) -> list[tuple[list[float], np.ndarray, float]]:
    """``[K, H, W]`` colour matches -> per region: box, per-class scores ``[2K]``, in colour then raster order."""
    from scipy.ndimage import find_objects, label

    found = []
    n_classes = 2 * len(match)
    for k, m in enumerate(match):
        regions, count = label(m > 0.5)
        for index, slc in enumerate(find_objects(regions, count), start=1):
            inside = regions[slc] == index
            area = int(inside.sum())
            if area < MIN_AREA:
                continue
            ys, xs = slc
            fill = area / ((ys.stop - ys.start) * (xs.stop - xs.start))
            strength = float(m[slc][inside].mean())
            p_square = 1.0 / (1.0 + np.exp(-(fill - SQUARE_FILL) / 0.03))
            scores = np.zeros(n_classes)
            scores[2 * k], scores[2 * k + 1] = strength * p_square, strength * (1 - p_square)
            found.append(([float(xs.start), float(ys.start), float(xs.stop), float(ys.stop)], scores, fill))
    return found


def _colour_match(images: np.ndarray) -> np.ndarray:
    """``[N, 3, H, W]`` float32 images in [0, 1] -> ``[N, K, H, W]`` match to each prototype colour, in (0, 1].

    Plain numpy (float32): a few small element-wise steps, where torch's thread pool costs more than the work."""
    protos = np.asarray(COLOURS, np.float32) / np.float32(255.0)  # [K, 3]
    d2 = ((images[:, None] - protos[None, :, :, None, None]) ** 2).sum(axis=2)
    return np.exp(d2 * np.float32(-1.0 / (2 * SIGMA**2)))


def _torch_module() -> type:
    import torch

    class ShapesDetector(torch.nn.Module):
        """Torchvision-style detector of :data:`CLASSES`; ``forward(list of (3, H, W) tensors in [0, 1])``."""

        index2label = dict(CLASSES)

        def detect(self, images: list[Any]) -> list[tuple[np.ndarray, np.ndarray]]:
            """Per image: boxes ``[N, 4]`` and per-class scores ``[N, 4]`` (rows sum to at most 1)."""
            arrays = [np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, np.float32) for x in images]
            same = len({a.shape for a in arrays}) == 1
            matches = _colour_match(np.stack(arrays)) if same and arrays else [_colour_match(a[None])[0]
                                                                               for a in arrays]
            out = []
            for match in matches:
                found = _regions(match)
                boxes = np.asarray([f[0] for f in found], float).reshape(-1, 4)
                scores = np.asarray([f[1] for f in found], float).reshape(-1, len(CLASSES))
                out.append((boxes, scores))
            return out

        def forward(self, images: list[Any]) -> list[dict[str, Any]]:
            result = []
            for boxes, scores in self.detect(images):
                result.append({
                    "boxes": torch.as_tensor(boxes, dtype=torch.float32),
                    "labels": torch.as_tensor(scores.argmax(axis=1) if len(scores) else np.zeros(0), dtype=torch.int64),
                    "scores": torch.as_tensor(scores.max(axis=1) if len(scores) else np.zeros(0), dtype=torch.float32),
                })
            return result

    return ShapesDetector


def shapes_detector() -> Any:
    """A fresh :class:`ShapesDetector` (``torch.nn.Module``, eval mode)."""
    return _torch_module()().eval()


def __getattr__(name: str) -> Any:  # ShapesDetector without importing torch at module import
    if name == "ShapesDetector":
        return _torch_module()
    raise AttributeError(name)


@dataclass
class ObjectDetectionTarget:
    """MAITE's object-detection target: ``boxes`` ``(N, 4)`` x0, y0, x1, y1, ``labels`` ``(N,)``, ``scores``."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray


class MaiteShapesDetector:
    """:class:`ShapesDetector` behind MAITE's object-detection ``Model`` protocol: called on a batch of ``(3, H, W)``
    float arrays in [0, 1]; per image an :class:`ObjectDetectionTarget` with per-class ``scores`` ``(N, 4)``."""

    def __init__(self) -> None:
        self.metadata: dict[str, Any] = {"id": "toy-shapes-detector", "index2label": dict(CLASSES)}
        self._net = shapes_detector()

    def __call__(self, batch: Any) -> list[ObjectDetectionTarget]:
        out = []
        for boxes, scores in self._net.detect([np.asarray(x, np.float32) for x in batch]):
            labels = scores.argmax(axis=1) if len(scores) else np.zeros(0, np.int64)
            out.append(ObjectDetectionTarget(boxes, labels.astype(np.int64), scores))
        return out


def maite_shapes_detector() -> MaiteShapesDetector:
    """Factory for ``model=maite model._target_=xaitk_exp.detection.toy.maite_shapes_detector``."""
    return MaiteShapesDetector()


def write_onnx_detector(path: str | Path) -> Path:
    """Write an ONNX detector of the same shapes that reports exactly one box per colour (the extent of all pixels
    matching it). Input ``images`` float32 ``[N, 3, H, W]`` in [0, 1]; outputs ``boxes`` float32 ``[N, 2, 4]``,
    ``scores`` float32 ``[N, 2]`` (the mean colour match, 0 where the colour is absent) and ``labels`` int64
    ``[N, 2]`` (square or disc of that colour, from the fill ratio)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k = len(COLOURS)
    consts = {
        "protos": np.asarray(COLOURS, np.float32).reshape(1, k, 3, 1, 1) / 255.0,
        "neg_inv_2s2": np.asarray(-1.0 / (2 * SIGMA**2), np.float32),
        "half": np.asarray(0.5, np.float32),
        "one": np.asarray(1.0, np.float32),
        "one_i": np.asarray(1, np.int64),
        "fill_cut": np.asarray(SQUARE_FILL, np.float32),
        "base_label": (2 * np.arange(k, dtype=np.int64))[None, :],
        "ax1": np.asarray([1], np.int64),
        "ax2": np.asarray([2], np.int64),
        "ax23": np.asarray([2, 3], np.int64),
    }
    n = helper.make_node
    nodes = [
        n("Unsqueeze", ["images", "ax1"], ["x5"]),  # [N, 1, 3, H, W]
        n("Sub", ["x5", "protos"], ["diff"]),
        n("Mul", ["diff", "diff"], ["sq"]),
        n("ReduceSum", ["sq", "ax2"], ["d2"], keepdims=0),  # [N, K, H, W]
        n("Mul", ["d2", "neg_inv_2s2"], ["logit"]),
        n("Exp", ["logit"], ["match"]),
        n("Greater", ["match", "half"], ["hit"]),
        n("Cast", ["hit"], ["mask"], to=TensorProto.FLOAT),
        n("ReduceMax", ["mask"], ["rows"], axes=[3], keepdims=0),  # [N, K, H]
        n("ReduceMax", ["mask"], ["cols"], axes=[2], keepdims=0),  # [N, K, W]
        n("ArgMax", ["rows"], ["y0"], axis=2, keepdims=0),
        n("ArgMax", ["rows"], ["y_last"], axis=2, keepdims=0, select_last_index=1),
        n("ArgMax", ["cols"], ["x0"], axis=2, keepdims=0),
        n("ArgMax", ["cols"], ["x_last"], axis=2, keepdims=0, select_last_index=1),
        n("Add", ["y_last", "one_i"], ["y1"]),
        n("Add", ["x_last", "one_i"], ["x1"]),
        n("ReduceMax", ["rows"], ["present"], axes=[2], keepdims=0),  # [N, K]
        n("ReduceSum", ["mask", "ax23"], ["area"], keepdims=0),
        n("Mul", ["match", "mask"], ["inside"]),
        n("ReduceSum", ["inside", "ax23"], ["strength_sum"], keepdims=0),
        n("Max", ["area", "one"], ["area1"]),
        n("Div", ["strength_sum", "area1"], ["strength"]),
        n("Mul", ["strength", "present"], ["scores"]),
        n("Sub", ["y1", "y0"], ["hh"]),
        n("Sub", ["x1", "x0"], ["ww"]),
        n("Mul", ["hh", "ww"], ["box_area_i"]),
        n("Cast", ["box_area_i"], ["box_area"], to=TensorProto.FLOAT),
        n("Div", ["area", "box_area"], ["fill"]),
        n("Less", ["fill", "fill_cut"], ["is_disc"]),
        n("Cast", ["is_disc"], ["disc"], to=TensorProto.INT64),
        n("Add", ["base_label", "disc"], ["labels"]),
        *[n("Unsqueeze", [v, "ax2"], [f"{v}_u"]) for v in ("x0", "y0", "x1", "y1")],
        n("Concat", ["x0_u", "y0_u", "x1_u", "y1_u"], ["boxes_i"], axis=2),
        n("Cast", ["boxes_i"], ["boxes"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes, "toy_shapes_detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", k, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", k]),
         helper.make_tensor_value_info("labels", TensorProto.INT64, ["N", k])],
        initializer=[numpy_helper.from_array(v, name) for name, v in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path


def write_coco_folder(folder: str | Path, n_images: int = 4, size: tuple[int, int] = (64, 64), n_objects: int = 2,
                      seed: int = 0) -> tuple[Path, list[Scene]]:
    """Draw ``n_images`` scenes into ``folder`` as ``img_<k>.png`` and write ``folder/instances.json`` (COCO:
    ``images``, ``annotations`` with ``bbox`` x, y, w, h and ``area``, ``categories`` with ids 1..4 for class
    indices 0..3). Returns the annotation file and the scenes, in image-id order (ids 1..n)."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    scenes = [draw_scene(rng, size, n_objects) for _ in range(n_images)]
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for k, scene in enumerate(scenes, start=1):
        name = f"img_{k}.png"
        Image.fromarray(scene.image).save(folder / name)
        images.append({"id": k, "file_name": name, "height": size[0], "width": size[1]})
        for (x0, y0, x1, y1), label in zip(scene.boxes.tolist(), scene.labels.tolist(), strict=True):
            annotations.append({"id": len(annotations) + 1, "image_id": k, "category_id": int(label) + 1,
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    categories = [{"id": i + 1, "name": name} for i, name in CLASSES.items()]
    path = folder / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path, scenes

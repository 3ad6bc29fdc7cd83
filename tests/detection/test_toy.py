"""The test detector of drawn shapes and its annotated folder: what the detection tests and benchmarks stand on."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xaitk_exp.detection import toy


def _chw(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image.transpose(2, 0, 1).astype(np.float32) / 255)


def test_scenes_hold_the_shapes_asked_for_without_overlap():
    scene = toy.draw_scene(np.random.default_rng(3), (64, 64), n_objects=3)
    assert scene.image.shape == (64, 64, 3) and scene.image.dtype == np.uint8
    assert len(scene.boxes) == len(scene.labels) == 3
    for i, (x0, y0, x1, y1) in enumerate(scene.boxes.astype(int)):
        colour = toy.COLOURS[scene.labels[i] // 2]
        inside = np.all(scene.image[y0:y1, x0:x1] == colour, axis=-1)
        assert inside.any(axis=0).all() and inside.any(axis=1).all()  # the box is the shape's extent
        # a square fills its box, a disc about pi/4 of it
        assert inside.mean() == 1.0 if scene.labels[i] % 2 == 0 else 0.7 < inside.mean() < 0.85
    a, b = scene.boxes[0], scene.boxes[1]
    assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1]


def test_torch_detector_finds_every_shape_with_its_box_and_label():
    torch = pytest.importorskip("torch")
    scene = toy.draw_scene(np.random.default_rng(5), (64, 64), n_objects=3)
    out = toy.shapes_detector()([torch.from_numpy(_chw(scene.image))])
    assert set(out[0]) == {"boxes", "labels", "scores"}
    order = np.lexsort((scene.boxes[:, 1], scene.boxes[:, 0]))
    found = np.lexsort((out[0]["boxes"][:, 1].numpy(), out[0]["boxes"][:, 0].numpy()))
    np.testing.assert_array_equal(out[0]["boxes"].numpy()[found], scene.boxes[order])
    np.testing.assert_array_equal(out[0]["labels"].numpy()[found], scene.labels[order])
    assert (out[0]["scores"].numpy() > 0.9).all()


def test_detector_loses_an_occluded_shape_and_sees_nothing_on_a_blank_image():
    scene = toy.draw_scene(np.random.default_rng(5), (64, 64), n_objects=1)
    x0, y0, x1, y1 = scene.boxes[0].astype(int)
    hidden = scene.image.copy()
    hidden[y0:y1, x0:x1] = 0
    det = toy.MaiteShapesDetector()
    full, occluded, blank = det([_chw(scene.image), _chw(hidden), _chw(np.full_like(hidden, 235))])
    assert len(full.boxes) == 1 and len(occluded.boxes) == len(blank.boxes) == 0
    assert full.scores.shape == (1, 4) and full.scores.sum() <= 1 + 1e-9  # MAITE: per-class scores sum to <= 1


def test_maite_detector_follows_the_protocol():
    od = pytest.importorskip("maite.protocols.object_detection")
    det = toy.maite_shapes_detector()
    assert isinstance(det, od.Model)
    assert det.metadata["index2label"] == toy.CLASSES


def test_onnx_detector_gives_one_box_per_colour(tmp_path):
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    scene = next(s for s in (toy.draw_scene(rng, (48, 48), 2) for _ in range(50)) if set(s.labels // 2) == {0, 1})
    path = toy.write_onnx_detector(tmp_path / "det.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    boxes, scores, labels = session.run(["boxes", "scores", "labels"], {"images": _chw(scene.image)[None]})
    assert boxes.shape == (1, 2, 4) and scores.shape == labels.shape == (1, 2)
    for k in range(2):  # colour k's shape: its box and its label
        j = int(np.flatnonzero(scene.labels // 2 == k)[0])
        np.testing.assert_array_equal(boxes[0, k], scene.boxes[j])
        assert labels[0, k] == scene.labels[j] and scores[0, k] > 0.9


def test_coco_folder_round_trips(tmp_path):
    from PIL import Image

    path, scenes = toy.write_coco_folder(tmp_path / "shapes", n_images=3, size=(40, 48), n_objects=2, seed=1)
    data = json.loads(path.read_text())
    assert [im["id"] for im in data["images"]] == [1, 2, 3]
    assert [c["id"] for c in data["categories"]] == [1, 2, 3, 4]
    assert len(data["annotations"]) == 6
    for im, scene in zip(data["images"], scenes, strict=True):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "shapes" / im["file_name"])), scene.image)
        anns = [a for a in data["annotations"] if a["image_id"] == im["id"]]
        xywh = scene.boxes.copy()
        xywh[:, 2:] -= xywh[:, :2]
        np.testing.assert_array_equal([a["bbox"] for a in anns], xywh)
        assert [a["category_id"] - 1 for a in anns] == scene.labels.tolist()

"""Detectors as smqtk-detection black boxes: a MAITE model, a torchvision-style torch module and an ONNX graph, all
answering in the input image's pixels with a score for every class, in the black box's label order."""

from __future__ import annotations

import numpy as np
import pytest
from smqtk_detection.interfaces.detect_image_objects import DetectImageObjects
from smqtk_image_io.bbox import AxisAlignedBoundingBox

from xaitk_exp.detection import toy
from xaitk_exp.detection.blackbox import (
    Detections,
    DetectorBlackbox,
    MaiteDetector,
    OnnxDetector,
    TorchDetector,
    detections_from,
    unit_chw,
)


def _sorted(d: Detections) -> Detections:
    return d.select(np.lexsort((d.boxes[:, 1], d.boxes[:, 0])))


def _truth(scene: toy.Scene) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((scene.boxes[:, 1], scene.boxes[:, 0]))
    return scene.boxes[order], scene.labels[order]


@pytest.fixture(scope="module")
def scenes() -> list[toy.Scene]:
    rng = np.random.default_rng(11)
    two_colours = (s for s in (toy.draw_scene(rng, (48, 56), 2) for _ in range(200)) if set(s.labels // 2) == {0, 1})
    return [next(two_colours) for _ in range(5)]


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory) -> str:
    return str(toy.write_onnx_detector(tmp_path_factory.mktemp("onnx") / "det.onnx"))


def _blackboxes(onnx_path: str, chunk: int = 2) -> dict[str, DetectorBlackbox]:
    return {
        "maite": MaiteDetector(toy.maite_shapes_detector(), chunk_size=chunk),
        "torch": TorchDetector(toy.shapes_detector(), toy.CLASSES, chunk_size=chunk),
        "onnx": OnnxDetector(onnx_path, {"boxes": "boxes", "scores": "scores", "labels": "labels"}, toy.CLASSES,
                             chunk_size=chunk, min_score=0.5),
    }


@pytest.mark.parametrize("source", ["maite", "torch", "onnx"])
def test_each_source_finds_the_drawn_boxes_and_labels(scenes, onnx_path, source):
    bb = _blackboxes(onnx_path)[source]
    assert isinstance(bb, DetectImageObjects)
    found = list(bb.detect(s.image for s in scenes))  # a lazy stream, uint8 [H, W, 3] as xaitk-saliency passes it
    assert len(found) == len(scenes) and bb.n_calls == 3  # 5 images in chunks of 2
    for d, scene in zip(found, scenes, strict=True):
        boxes, labels = _truth(scene)
        d = _sorted(d)
        np.testing.assert_array_equal(d.boxes, boxes)
        np.testing.assert_array_equal(d.labels, labels)
        assert (d.scores > 0.9).all()


def test_detect_objects_yields_boxes_and_a_score_for_every_class_in_label_order(scenes, onnx_path):
    for source, bb in _blackboxes(onnx_path).items():
        (dets,) = list(bb.detect_objects([scenes[0].image]))
        assert len(dets) == 2, source
        for box, score_dict in dets:
            assert isinstance(box, AxisAlignedBoundingBox)
            assert list(score_dict) == bb.get_labels() == [0, 1, 2, 3]
            assert max(score_dict.values()) > 0.9
    per_class = next(MaiteDetector(toy.maite_shapes_detector()).detect([scenes[0].image]))
    assert per_class.class_scores is not None and per_class.class_scores.shape == (2, 4)
    single = next(TorchDetector(toy.shapes_detector(), toy.CLASSES).detect([scenes[0].image]))
    assert single.class_scores is None
    rows = single.class_matrix(4)  # one-hot x score
    np.testing.assert_allclose(rows.sum(axis=1), single.scores)
    boxes, onehot, objectness = single.xaitk_inputs(4)
    np.testing.assert_array_equal(onehot.argmax(axis=1), single.labels)
    np.testing.assert_array_equal(objectness, single.scores)


def test_detections_are_chosen_by_score_and_label():
    d = Detections(np.zeros((4, 4)), np.array([0, 2, 2, 1]), np.array([0.9, 0.4, 0.8, 0.7]))
    assert d.chosen().tolist() == [0, 1, 2, 3]
    assert d.chosen(min_score=0.7).tolist() == [0, 2, 3]
    assert d.chosen(labels=[2]).tolist() == [1, 2]
    assert d.chosen(min_score=0.5, labels=[2, 1]).tolist() == [2, 3]
    assert d.select(d.chosen(labels=[3])).boxes.shape == (0, 4)


def test_float_images_in_unit_range_give_the_same_detections(scenes):
    bb = TorchDetector(toy.shapes_detector(), toy.CLASSES)
    as_uint8 = next(bb.detect([scenes[1].image]))
    as_float = next(bb.detect([scenes[1].image / 255.0]))
    np.testing.assert_array_equal(as_uint8.boxes, as_float.boxes)
    np.testing.assert_array_equal(as_uint8.labels, as_float.labels)


def test_boxes_come_back_in_the_input_images_pixels_when_preprocessing_resizes(scenes):
    def doubled(images: np.ndarray) -> np.ndarray:  # a model that wants twice the resolution
        return unit_chw(np.repeat(np.repeat(images, 2, axis=1), 2, axis=2))

    plain = next(TorchDetector(toy.shapes_detector(), toy.CLASSES).detect([scenes[2].image]))
    big = next(TorchDetector(toy.shapes_detector(), toy.CLASSES, preprocess=doubled).detect([scenes[2].image]))
    np.testing.assert_array_equal(_sorted(big).boxes, _sorted(plain).boxes)


def test_images_of_different_sizes_go_to_separate_calls(scenes):
    small = toy.draw_scene(np.random.default_rng(2), (32, 40), 1)
    bb = TorchDetector(toy.shapes_detector(), toy.CLASSES, chunk_size=8)
    found = list(bb.detect([scenes[0].image, small.image, scenes[1].image]))
    assert bb.n_calls == 3 and len(found) == 3
    np.testing.assert_array_equal(found[1].boxes, small.boxes)


def test_min_score_drops_weak_detections(scenes, onnx_path):
    # the ONNX detector reports a box for every colour; an absent colour scores 0
    one_colour = toy.draw_scene(np.random.default_rng(1), (48, 48), 1)
    keep_all = OnnxDetector(onnx_path, {"boxes": "boxes", "scores": "scores", "labels": "labels"}, toy.CLASSES)
    kept = OnnxDetector(onnx_path, {"boxes": "boxes", "scores": "scores", "labels": "labels"}, toy.CLASSES,
                        min_score=0.5)
    assert len(next(keep_all.detect([one_colour.image]))) == 2
    assert len(next(kept.detect([one_colour.image]))) == 1


def test_a_detector_that_loses_images_is_refused(scenes):
    class Forgetful(toy.MaiteShapesDetector):
        def __call__(self, batch):
            return super().__call__(batch)[:-1]

    with pytest.raises(RuntimeError, match="returned 1 results for 2 images"):
        list(MaiteDetector(Forgetful()).detect([s.image for s in scenes[:2]]))


def test_bad_wiring_is_named(onnx_path):
    with pytest.raises(ValueError, match="no output 'dets'"):
        OnnxDetector(onnx_path, {"boxes": "dets", "scores": "scores"}, toy.CLASSES)
    with pytest.raises(ValueError, match="keys boxes, scores"):
        OnnxDetector(onnx_path, {"boxes": "boxes"}, toy.CLASSES)

    class Nameless:
        metadata = {"id": "x"}

        def __call__(self, batch):
            return []

    with pytest.raises(ValueError, match="index2label"):
        MaiteDetector(Nameless())
    with pytest.raises(ValueError, match="labels \\[7\\] outside 0..3"):
        detections_from([[0, 0, 1, 1]], [7], [0.5], 4)
    with pytest.raises(ValueError, match="must give its labels"):
        detections_from([[0, 0, 1, 1]], None, [0.5], 4)
    with pytest.raises(ValueError, match="chunk_size=0"):
        TorchDetector(toy.shapes_detector(), toy.CLASSES, chunk_size=0)


def test_config_names_the_model_and_settings(onnx_path):
    for source, bb in _blackboxes(onnx_path, chunk=4).items():
        cfg = bb.get_config()
        assert cfg["chunk_size"] == 4 and cfg["index2label"]["0"] == "red_square", source
    assert _blackboxes(onnx_path)["onnx"].get_config()["outputs"]["boxes"] == "boxes"

"""task=detection's models: a MAITE detector (and task inferred from it), a torchvision-style torch module, an ONNX
detector with named outputs; each becomes smqtk-detection's black box with the same detections as the detector
itself, and each wrong pairing of model and task is one line naming the key."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xaitk_exp.detection.toy import CLASSES, draw_scene
from xaitk_exp.errors import ConfigError
from xaitk_exp.models.detector import build_for_task, is_detector
from xaitk_exp.tasks import task_named

SHAPE = (48, 48, 3)
NAMES = [CLASSES[i] for i in sorted(CLASSES)]
MAITE = {"source": "maite", "_target_": "xaitk_exp.detection.toy.MaiteShapesDetector", "outputs": "auto",
         "preprocess": {"layout": "NCHW"}}


class TinyMaiteClassifier:
    """A MAITE image-classification model: one (3,) probability vector per image."""

    metadata = {"id": "tiny", "index2label": {0: "a", 1: "b", 2: "c"}}

    def __call__(self, batch: Any) -> list[np.ndarray]:
        return [np.full(3, 1 / 3, np.float32) for _ in batch]


def scenes(n: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [draw_scene(rng, SHAPE[:2], 2).image.astype(np.float64) / 255 for _ in range(n)]


def same_detections(got: list[Any], expected: list[Any]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert len(a) > 0
        np.testing.assert_allclose(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)


def test_a_maite_detector_is_inferred_and_its_black_box_is_smqtk_detections():
    from smqtk_detection.interfaces.detect_image_objects import DetectImageObjects

    from xaitk_exp.detection.blackbox import MaiteDetector
    from xaitk_exp.detection.toy import maite_shapes_detector

    model = build_for_task(MAITE, (), "auto", SHAPE)
    assert is_detector(model) and model.task == "detection"
    task = task_named("detection")
    model.check_images(SHAPE, samples=np.stack(scenes(2)))
    task.check_model(model)
    assert model.class_names == NAMES and model.n_outputs == 4
    box = task.blackbox(model, chunk_size=2)
    assert isinstance(box, DetectImageObjects) and box.chunk_size == 2
    same_detections(list(box.detect(scenes())), list(MaiteDetector(maite_shapes_detector()).detect(scenes())))
    # xaitk-saliency's view: (box, {class index: score}) per detection, every class in the black box's order
    first = next(iter(box.detect_objects(scenes(1))))
    assert first and list(first[0][1]) == [0, 1, 2, 3]


def test_a_torchvision_style_module_is_a_detector_with_its_own_class_names(tmp_path: Path):
    import torch

    from xaitk_exp.detection.blackbox import TorchDetector
    from xaitk_exp.detection.toy import shapes_detector

    weights = tmp_path / "shapes.pt"
    torch.save(shapes_detector().state_dict(), weights)
    node = {"source": "torch", "_target_": "xaitk_exp.detection.toy.ShapesDetector", "weights": str(weights)}
    model = build_for_task(node, (), "detection", SHAPE)
    model.check_images(SHAPE)
    assert model.class_names == NAMES
    expected = list(TorchDetector(shapes_detector(), CLASSES).detect(scenes()))
    same_detections(model.detect(scenes(), chunk_size=2), expected)
    # a worker process gets it pickled, without its runtime, and loads it again
    same_detections(pickle.loads(pickle.dumps(model)).detect(scenes()), expected)


def test_an_onnx_detector_reads_the_outputs_the_config_names(tmp_path: Path):
    from xaitk_exp.detection.blackbox import OnnxDetector
    from xaitk_exp.detection.toy import write_onnx_detector

    path = write_onnx_detector(tmp_path / "shapes.onnx")
    outputs = {"boxes": "boxes", "scores": "scores", "labels": "labels"}
    node = {"source": "onnx", "path": str(path), "outputs": outputs, "class_names": NAMES}
    model = build_for_task(node, (), "detection", SHAPE)
    model.check_images(SHAPE)
    expected = list(OnnxDetector(str(path), outputs, CLASSES).detect(scenes()))
    same_detections(model.detect(scenes(), chunk_size=2), expected)
    same_detections(pickle.loads(pickle.dumps(model)).detect(scenes()), expected)


@pytest.mark.parametrize(("outputs", "message"), [
    (None, "model.outputs.boxes=None is invalid: the name of the ONNX output holding the boxes"),
    ({"boxes": "boxes"}, "model.outputs.scores=None is invalid: the name of the ONNX output holding the scores"),
    ({"boxes": "boxes", "scores": "nope"},
     "model.outputs.scores='nope' is invalid: one of the ONNX model's outputs ['boxes', 'scores', 'labels']"),
    ({"boxes": "boxes", "scores": "scores", "masks": "m"}, "model.outputs.masks='m' is invalid: one of the keys"),
])
def test_an_onnx_detector_without_a_right_output_name_is_one_line(tmp_path: Path, outputs, message):
    from xaitk_exp.detection.toy import write_onnx_detector

    path = write_onnx_detector(tmp_path / "shapes.onnx")
    node = {"source": "onnx", "path": str(path), "outputs": outputs, "class_names": NAMES}
    with pytest.raises(ConfigError) as err:
        build_for_task(node, (), "detection", SHAPE).check_images(SHAPE)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_a_classifier_with_task_detection_and_a_detector_with_task_classification_are_one_line():
    classifier = {**MAITE, "_target_": f"{__name__}.TinyMaiteClassifier"}
    allowed = (f"{__name__}.",)
    with pytest.raises(ConfigError) as err:
        build_for_task(classifier, allowed, "detection", SHAPE).check_images(SHAPE)
    assert str(err.value).startswith(f"model._target_='{__name__}.TinyMaiteClassifier' is invalid: a factory of a "
                                     "MAITE object-detection model for task=detection")
    assert "\n" not in str(err.value)
    assert not is_detector(build_for_task(classifier, allowed, "auto", SHAPE))  # auto: a classifier stays one
    with pytest.raises(ConfigError) as err:
        build_for_task(MAITE, (), "classification", SHAPE)
    assert str(err.value).startswith("task='classification' is invalid: detection: model._target_=")
    with pytest.raises(ConfigError, match=r"^task='classification' is invalid: detection"):
        task_named("classification").check_model(build_for_task(MAITE, (), "detection", SHAPE))


def test_a_scikit_learn_model_is_no_detector():
    from sklearn.linear_model import LogisticRegression

    with pytest.raises(ConfigError) as err:
        task_named("detection").check_model(LogisticRegression())
    assert str(err.value).startswith("model='sklearn.linear_model._logistic.LogisticRegression' is invalid: a "
                                     "detector for task=detection")


def test_the_detection_task_accepts_detector_generators_only():
    from xaitk_exp.tasks.detection import TASK

    TASK.check_saliency({"_target_": "xaitk_saliency.impls.gen_object_detector_blackbox_sal.drise.DRISEStack"})
    with pytest.raises(ConfigError, match="a detection saliency generator"):
        TASK.check_saliency({"_target_": "xaitk_saliency.impls.gen_image_classifier_blackbox_sal.rise.RISEStack",
                             "name": "rise"})


def test_the_detections_picture_draws_each_box_and_the_ground_truth(tmp_path: Path):
    from PIL import Image

    from xaitk_exp.viz.detections import DETECTED, TRUTH, detections_figure

    image = np.full((32, 32, 3), 0.9)
    path = detections_figure(image, np.array([[4.0, 20.0, 12.0, 28.0]]), ["red_disc"], [0.9], tmp_path / "d.png",
                             (np.array([[20.0, 2.0, 30.0, 12.0]]), ["blue_square"]))
    picture = np.asarray(Image.open(path))
    assert picture.shape == (256, 256, 3)  # enlarged 8 times: legible captions
    assert tuple(picture[28 * 8 - 1, 6 * 8]) == DETECTED  # the detection's bottom edge
    assert tuple(picture[6 * 8, 20 * 8]) == TRUTH  # the ground truth's left edge
    assert tuple(picture[128, 128]) == (229, 229, 229)  # the image itself elsewhere

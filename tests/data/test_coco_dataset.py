"""dataset=coco: images for a detector with COCO ground truth (or none), boxes in the loaded images' pixels, and
one-line errors naming the key for a bad annotation file or folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xaitk_exp.data.coco import CocoFolder
from xaitk_exp.detection.toy import CLASSES, write_coco_folder
from xaitk_exp.errors import ConfigError


def test_a_coco_folder_loads_every_image_as_a_test_image_with_its_ground_truth(tmp_path: Path):
    path, scenes = write_coco_folder(tmp_path / "shapes", n_images=3, size=(40, 48), seed=2)
    split = CocoFolder(annotations=str(path)).load()
    assert split.test_images.shape == (3, 40, 48, 3) and len(split.train_images) == 0
    assert not split.has_labels and split.image_ids == [1, 2, 3]
    assert split.class_names == [CLASSES[i] for i in sorted(CLASSES)]
    assert split.test_paths == ["img_1.png", "img_2.png", "img_3.png"]
    np.testing.assert_allclose(split.test_images[0], scenes[0].image / 255.0)
    boxes, labels = split.annotations.ground_truth(1, split.annotations.category_index())
    np.testing.assert_array_equal(boxes, scenes[0].boxes)
    np.testing.assert_array_equal(labels, scenes[0].labels)


def test_resized_images_get_their_ground_truth_scaled_alike(tmp_path: Path):
    path, scenes = write_coco_folder(tmp_path / "shapes", n_images=2, size=(64, 64), seed=4)
    split = CocoFolder(annotations=str(path), shape=(32, 48)).load()
    assert split.test_images.shape == (2, 32, 48, 3)
    boxes, _ = split.annotations.ground_truth(2, split.annotations.category_index())
    np.testing.assert_allclose(boxes, scenes[1].boxes * [0.75, 0.5, 0.75, 0.5])
    assert split.annotations.images[0]["height"] == 32


def test_the_fingerprint_follows_the_annotations(tmp_path: Path):
    path, _ = write_coco_folder(tmp_path / "shapes", n_images=2, seed=5)
    before = CocoFolder(annotations=str(path)).load().fingerprint()
    data = json.loads(path.read_text())
    data["annotations"][0]["bbox"][0] += 1
    path.write_text(json.dumps(data))
    assert CocoFolder(annotations=str(path)).load().fingerprint() != before
    assert CocoFolder(path=str(path.parent)).load().annotations is None


def _bad(tmp_path: Path, case: str) -> CocoFolder:
    path, _ = write_coco_folder(tmp_path / "shapes", n_images=2, size=(32, 32), seed=6)
    data = json.loads(path.read_text())
    if case == "missing file":
        return CocoFolder(annotations=str(tmp_path / "nope.json"))
    if case == "outside":
        data["images"][0]["file_name"] = "../secret.png"
    if case == "absent image":
        data["images"][1]["file_name"] = "gone.png"
    if case == "sizes":
        from PIL import Image

        Image.new("RGB", (20, 20)).save(path.parent / "img_2.png")
    if case == "empty folder":
        return CocoFolder(path=str(tmp_path))
    path.write_text(json.dumps(data))
    return CocoFolder(annotations=str(path))


@pytest.mark.parametrize(("case", "start"), [
    ("missing file", "dataset.annotations='"),
    ("outside", "dataset.annotations='"),
    ("absent image", "dataset.annotations='"),
    ("sizes", "dataset.shape=None is invalid: [H, W] to resize to"),
    ("empty folder", "dataset.path='"),
])
def test_a_bad_annotation_file_or_folder_is_one_line_naming_the_key(tmp_path: Path, case: str, start: str):
    with pytest.raises(ConfigError) as err:
        _bad(tmp_path, case).load()
    assert str(err.value).startswith(start) and "\n" not in str(err.value)


def test_dataset_coco_is_a_registered_kind_with_its_folder_as_lineage(make_cfg, tmp_path: Path):
    from xaitk_exp.data.registry import dataset_source, kind_for
    from xaitk_exp.settings.nodes import to_dict

    node = to_dict(make_cfg("dataset=coco", f"dataset.annotations={tmp_path / 'a' / 'instances.json'}").dataset)
    assert kind_for(node).name == "coco"
    assert dataset_source(node) == ("local", (tmp_path / "a").resolve().as_uri())


class ShapesDataset:
    """A MAITE object-detection dataset of drawn shapes: (image (3, H, W) uint8, target, {"id": i})."""

    def __init__(self, n: int = 3, seed: int = 8) -> None:
        from xaitk_exp.detection.toy import draw_scene

        rng = np.random.default_rng(seed)
        self.scenes = [draw_scene(rng, (40, 40), 2) for _ in range(n)]
        self.metadata = {"id": "shapes", "index2label": dict(CLASSES)}

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, i: int) -> tuple[np.ndarray, dict, dict]:
        s = self.scenes[i]
        return s.image.transpose(2, 0, 1), {"boxes": s.boxes, "labels": s.labels}, {"id": i}


def test_a_maite_detection_dataset_becomes_images_with_coco_ground_truth():
    from xaitk_exp.data.maite_detection import MaiteDetectionDataset

    ds = ShapesDataset()
    split = MaiteDetectionDataset(ds, shape=(20, 20)).load()
    assert split.name == "shapes" and split.test_images.shape == (3, 20, 20, 3) and split.image_ids == [1, 2, 3]
    boxes, labels = split.annotations.ground_truth(2, split.annotations.category_index(CLASSES))
    np.testing.assert_allclose(boxes, ds.scenes[1].boxes / 2)
    np.testing.assert_array_equal(labels, ds.scenes[1].labels)
    with pytest.raises(ConfigError, match=r"^dataset.dataset='list' is invalid"):
        MaiteDetectionDataset([]).load()

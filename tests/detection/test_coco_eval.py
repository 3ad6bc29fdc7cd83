"""COCO annotations and pycocotools' evaluation of detections, on cases whose values can be checked by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xaitk_exp.detection import toy
from xaitk_exp.detection.blackbox import Detections, TorchDetector
from xaitk_exp.detection.coco import evaluate, load_annotations
from xaitk_exp.errors import ConfigError


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    # 4 images, 2 shapes each: red squares in images 1, 3 and 4 (seed 0), no blue square anywhere
    path, scenes = toy.write_coco_folder(tmp_path_factory.mktemp("coco") / "shapes", n_images=4, seed=0)
    return path, scenes


def _ground_truth_as_detections(ann, score=0.9):
    index = ann.category_index(toy.CLASSES)
    out = {}
    for im in ann.images:
        boxes, labels = ann.ground_truth(im["id"], index)
        out[im["id"]] = Detections(boxes, labels, np.full(len(boxes), score))
    return out


def test_annotations_load_with_boxes_in_corner_form(folder):
    path, scenes = folder
    ann = load_annotations(path)
    assert [im["id"] for im in ann.images] == [1, 2, 3, 4]
    index = ann.category_index(toy.CLASSES)
    assert index == {1: 0, 2: 1, 3: 2, 4: 3}  # matched by name
    for im, scene in zip(ann.images, scenes, strict=True):
        boxes, labels = ann.ground_truth(im["id"], index)
        np.testing.assert_array_equal(boxes, scene.boxes)
        np.testing.assert_array_equal(labels, scene.labels)
        assert ann.image_file(im).is_file()


def test_perfect_detections_score_one(folder):
    ann = load_annotations(folder[0])
    s = evaluate(ann, _ground_truth_as_detections(ann), toy.CLASSES)
    assert s.map_50 == pytest.approx(1.0) and s.map_50_95 == pytest.approx(1.0)
    assert s.ap_50["red_square"] == pytest.approx(1.0)
    assert np.isnan(s.ap_50["blue_square"])  # no ground truth: no AP, not 0
    assert s.image_ap_50 == pytest.approx({1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0})


def test_evaluating_leaves_the_annotations_as_loaded(folder):
    # pycocotools marks ground-truth dicts in place; the split's fingerprint (a replay's check) hashes these lists
    ann = load_annotations(folder[0])
    before = json.dumps([ann.images, ann.annotations], sort_keys=True)
    evaluate(ann, _ground_truth_as_detections(ann), toy.CLASSES)
    assert json.dumps([ann.images, ann.annotations], sort_keys=True) == before


def test_one_missed_object_gives_the_known_values(folder):
    ann = load_annotations(folder[0])
    dets = _ground_truth_as_detections(ann)
    assert dets[1].labels.tolist() == [1, 0]
    dets[1] = dets[1].select([0])  # miss image 1's red square: 2 of the 3 red squares found, none wrong
    s = evaluate(ann, dets, toy.CLASSES)
    # COCO interpolates precision at 101 recall points: 1.0 up to recall 2/3 (0.00 .. 0.66), 0 beyond
    assert s.ap_50["red_square"] == pytest.approx(67 / 101)
    assert s.ap_50_95["red_square"] == pytest.approx(67 / 101)
    assert s.map_50 == pytest.approx((67 / 101 + 1 + 1) / 3)
    assert s.image_ap_50 == pytest.approx({1: 0.5, 2: 1.0, 3: 1.0, 4: 1.0})  # image 1: red disc 1, red square 0


def test_a_loose_box_counts_at_iou_half_but_not_above(folder):
    ann = load_annotations(folder[0])
    dets = _ground_truth_as_detections(ann)
    d = dets[2]
    x0, y0, x1, y1 = d.boxes[0]
    grown = d.boxes.copy()
    grown[0] = [x0, y0, x0 + (x1 - x0) * 1.6, y1]  # IoU 1/1.6 = 0.625
    dets[2] = Detections(grown, d.labels, np.array([0.5, 0.9]))  # ranked last of the blue discs
    s = evaluate(ann, dets, toy.CLASSES)
    assert s.map_50 == pytest.approx(1.0)
    assert s.map_50_95 < 1.0
    # blue discs (2 in image 2, 1 in image 3): the loose box is a hit at thresholds 0.50..0.60 (3 of 10); above,
    # it is a false positive after two hits, so precision 1 up to recall 2/3: 67 of COCO's 101 recall points
    assert s.ap_50_95["blue_disc"] == pytest.approx((3 * 1.0 + 7 * 67 / 101) / 10)


def test_the_toy_detector_scores_full_marks_on_its_own_folder(folder):
    from PIL import Image

    ann = load_annotations(folder[0])
    bb = TorchDetector(toy.shapes_detector(), toy.CLASSES)
    images = [np.asarray(Image.open(ann.image_file(im))) for im in ann.images]
    dets = dict(zip([im["id"] for im in ann.images], bb.detect(images), strict=True))
    s = evaluate(ann, dets, toy.CLASSES)
    assert s.map_50 == pytest.approx(1.0) and s.map_50_95 == pytest.approx(1.0)


def test_no_detections_at_all_score_zero(folder):
    ann = load_annotations(folder[0])
    s = evaluate(ann, {}, toy.CLASSES)
    assert s.map_50 == 0.0 and s.image_ap_50[1] == 0.0


def _write(tmp_path, data) -> str:
    p = tmp_path / "instances.json"
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(p)


GOOD = {"images": [{"id": 1, "file_name": "a.png", "height": 8, "width": 8}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]}],
        "categories": [{"id": 1, "name": "thing"}]}


@pytest.mark.parametrize("data, hint", [
    ("{not json", "JSONDecodeError"),
    ({"images": []}, "lists images, annotations, categories"),
    ({**GOOD, "images": [{**GOOD["images"][0], "file_name": "/etc/passwd"}]}, "relative path"),
    ({**GOOD, "images": [{**GOOD["images"][0], "file_name": "../x.png"}]}, "relative path"),
    ({**GOOD, "annotations": [{**GOOD["annotations"][0], "bbox": [1, 1, 0, 2]}]}, "positive width"),
    ({**GOOD, "annotations": [{**GOOD["annotations"][0], "image_id": 9}]}, "unknown image_id"),
    ({**GOOD, "images": GOOD["images"] * 2}, "unique"),
])
def test_a_bad_annotation_file_is_one_line_naming_the_key(tmp_path, data, hint):
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError, match=hint) as err:
        load_annotations(path)
    assert str(err.value).startswith(f"dataset.annotations={path!r} is invalid")
    assert "\n" not in str(err.value)


def test_a_missing_annotation_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="an existing COCO instances.json"):
        load_annotations(tmp_path / "nope.json")


def test_categories_map_by_order_when_names_differ(tmp_path):
    ann = load_annotations(_write(tmp_path, {**GOOD, "categories": [{"id": 7, "name": "a"}, {"id": 1, "name": "b"}]}))
    assert ann.category_index({0: "x", 1: "y"}) == {1: 0, 7: 1}
    with pytest.raises(ConfigError, match="categories the detector knows"):
        ann.category_index({0: "x"})


def test_per_image_ap_equals_a_separate_cocoeval_of_each_image(folder):
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ann = load_annotations(folder[0])
    rng = np.random.default_rng(4)
    dets = {}
    for i, d in _ground_truth_as_detections(ann).items():  # jittered boxes, a false positive, random scores
        boxes = np.vstack([d.boxes + rng.integers(-4, 5, d.boxes.shape), [[30, 30, 40, 40]]])
        dets[i] = Detections(boxes, np.append(d.labels, rng.integers(0, 4)), rng.random(len(boxes)))
    got = evaluate(ann, dets, toy.CLASSES).image_ap_50
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(folder[0]))
        dt = gt.loadRes([{"image_id": i, "category_id": int(c) + 1, "bbox": [x0, y0, x1 - x0, y1 - y0], "score": s}
                         for i, d in dets.items()
                         for (x0, y0, x1, y1), c, s in zip(d.boxes.tolist(), d.labels, d.scores.tolist(),
                                                           strict=True)])
        for image_id in got:
            ev = COCOeval(gt, dt, iouType="bbox")
            ev.params.imgIds = [image_id]
            ev.evaluate()
            ev.accumulate()
            p = ev.eval["precision"][0, :, :, 0, -1]
            assert got[image_id] == pytest.approx(p[p > -1].mean())
    assert len(set(got.values())) > 1  # the case is not trivial

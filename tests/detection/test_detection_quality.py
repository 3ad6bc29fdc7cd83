"""Quality of a detection's saliency map: deletion / insertion scored with D-RISE's similarity, their random-order
baselines, and the pointing game, on the toy detector and on hand-checkable maps."""

from __future__ import annotations

import numpy as np
import pytest
from xaitk_saliency.impls.gen_object_detector_blackbox_sal.drise import DRISEStack

from xaitk_exp.detection import toy
from xaitk_exp.detection.blackbox import TorchDetector
from xaitk_exp.detection.drise import drise_maps
from xaitk_exp.detection.quality import (
    box_iou,
    deletion_insertion,
    detection_quality,
    matched_ground_truth,
    pointing_game,
    pointing_hit,
    similarity_curve,
)


@pytest.fixture(scope="module")
def setup():
    scene = toy.draw_scene(np.random.default_rng(1), (40, 48), 2)
    bb = TorchDetector(toy.shapes_detector(), toy.CLASSES, chunk_size=128)
    det = next(bb.detect([scene.image]))
    boxes, scores, objectness = det.xaitk_inputs(4)
    maps = drise_maps(DRISEStack(n=100, s=4, p1=0.6, seed=0), scene.image, boxes, scores, bb, objectness)
    return scene, bb, det, scores, objectness, maps


def test_similarity_is_iou_times_score_for_the_same_class_and_zero_for_another(setup):
    scene, bb, det, scores, objectness, _ = setup
    j = 0
    shifted = np.roll(scene.image, 2, axis=1)  # the shape moves 2 px right: same class, lower IoU
    blank = np.full_like(scene.image, 235)
    sims = similarity_curve(np.stack([scene.image, shifted, blank]), det.boxes[j], scores[j], bb, objectness[j])
    w = det.boxes[j, 2] - det.boxes[j, 0]
    h = det.boxes[j, 3] - det.boxes[j, 1]
    iou_shift = ((w - 2 + 1) * (h + 1)) / ((w + 2 + 1) * (h + 1))  # D-RISE's IoU counts pixels (+1)
    assert sims[0] == pytest.approx(det.scores[j])
    assert sims[1] == pytest.approx(iou_shift * det.scores[j])
    assert sims[2] == 0.0
    other = scores[j][::-1].copy()  # explaining another class: cosine 0 with every detection
    assert similarity_curve(scene.image[None], det.boxes[j], other, bb, objectness[j])[0] == 0.0


def test_drise_maps_beat_their_random_baselines_and_a_random_map(setup):
    scene, bb, det, scores, objectness, maps = setup
    for j in range(len(det)):
        q = deletion_insertion(scene.image, maps[j], det.boxes[j], scores[j], bb, objectness[j], steps=20)
        assert q.deletion_auc < q.deletion_auc_random
        assert q.insertion_auc > q.insertion_auc_random
        noise = np.random.default_rng(j).random(maps[j].shape)
        r = deletion_insertion(scene.image, noise, det.boxes[j], scores[j], bb, objectness[j], steps=20)
        assert q.insertion_auc > r.insertion_auc
        assert r.deletion_auc_random == q.deletion_auc_random  # the baseline depends on the seed only
        assert 0 <= min(q.deletion_auc, q.insertion_auc) and max(q.deletion_auc, q.insertion_auc) <= 1


def test_a_map_of_the_box_itself_deletes_the_detection_at_once(setup):
    # a map that is 1 inside the box: the first steps delete the shape, so the curve drops to 0 right away
    scene, bb, det, scores, objectness, _ = setup
    x0, y0, x1, y1 = det.boxes[0].astype(int)
    box_map = np.zeros(scene.image.shape[:2])
    box_map[y0:y1, x0:x1] = 1.0
    hw = scene.image.shape[0] * scene.image.shape[1]
    steps = hw // ((x1 - x0) * (y1 - y0))  # the first step deletes the whole box
    q = deletion_insertion(scene.image, box_map, det.boxes[0], scores[0], bb, objectness[0], steps=steps)
    n = -(-hw // -(-hw // steps))  # points after the first: ceil(HW / step), step = ceil(HW / steps)
    assert q.deletion_auc == pytest.approx(det.scores[0] / 2 / n)  # only the first point is not 0


def test_pointing_game_by_hand():
    s = np.zeros((10, 10))
    s[6, 7] = 1.0
    assert pointing_hit(s, [5, 5, 9, 9])
    assert not pointing_hit(s, [0, 0, 5, 5])
    assert pointing_hit(s, [0, 0, 5, 5], tolerance=3)
    assert not pointing_hit(np.ones((10, 10)), [0, 0, 5, 5])  # a flat map points nowhere
    gt_boxes, gt_labels = np.array([[0, 0, 5, 5], [5, 5, 10, 10]]), np.array([1, 2])
    assert matched_ground_truth([5, 5, 9, 10], 2, gt_boxes, gt_labels) == 1
    assert matched_ground_truth([5, 5, 9, 10], 1, gt_boxes, gt_labels) is None  # the other class's box
    assert pointing_game(s, [5, 5, 9, 10], 2, gt_boxes, gt_labels) == 1.0
    assert pointing_game(s, [0, 0, 5, 4], 1, gt_boxes, gt_labels) == 0.0
    assert np.isnan(pointing_game(s, [5, 5, 9, 10], 2, None, None))


def test_box_iou_by_hand():
    np.testing.assert_allclose(box_iou([[0, 0, 2, 2]], [[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]]),
                               [[1 / 7, 1.0, 0.0]])


def test_detection_quality_bundles_every_metric(setup):
    scene, bb, det, scores, objectness, maps = setup
    q = detection_quality(scene.image, maps[1], det.boxes[1], int(det.labels[1]), scores[1], bb, objectness[1],
                          scene.boxes, scene.labels, steps=10)
    assert q.pointing == 1.0
    assert q.deletion_auc < q.deletion_auc_random
    with pytest.raises(ValueError, match="map of shape"):
        deletion_insertion(scene.image, maps[1][:10], det.boxes[1], scores[1], bb, objectness[1])

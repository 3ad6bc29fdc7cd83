"""task=detection's evaluation stage: one run per image (Detections, Max_score, AP_50 with ground truth, the
detections table and picture), a summary with pycocotools' mAP; images without annotations; reuse and shards."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from xaitk_exp import schema
from xaitk_exp.detection.toy import write_coco_folder

MAITE = ["model=maite", "model._target_=xaitk_exp.detection.toy.MaiteShapesDetector"]
EXPERIMENT = "MaiteShapesDetector - Evaluation"


@pytest.fixture
def coco(tmp_path: Path) -> Path:
    path, _ = write_coco_folder(tmp_path / "shapes", n_images=5, size=(64, 64), n_objects=2, seed=3)
    return path


def runs_of(client, name: str) -> list:
    exp = client.get_experiment_by_name(name)
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=1000)


def test_a_maite_detector_on_a_coco_folder_writes_image_runs_and_a_summary_with_pycocotools_map(
        run_stage, client, coco):
    from xaitk_exp.detection.coco import evaluate, load_annotations
    from xaitk_exp.detection.toy import maite_shapes_detector
    from xaitk_exp.detection.blackbox import MaiteDetector

    ctx = run_stage("stage=train", *MAITE, "dataset=coco", f"dataset.annotations={coco}")
    assert ctx.task.name == "detection"  # inferred: task=auto and a MAITE model that answers with detections
    ctx = run_stage("stage=evaluation", *MAITE, "dataset=coco", f"dataset.annotations={coco}")
    runs = runs_of(client, EXPERIMENT)
    images = sorted((r for r in runs if r.data.tags[schema.RUN_TYPE] == "image"),
                    key=lambda r: int(r.data.tags[schema.IMAGE_ID]))
    summary = next(r for r in runs if r.data.tags[schema.RUN_TYPE] == "summary")
    assert [r.info.run_name for r in images] == [schema.evaluation_image_run(k) for k in range(5)]
    # the same numbers as the detector and pycocotools give directly
    ann = load_annotations(coco)
    from PIL import Image

    arrays = [np.asarray(Image.open(coco.parent / im["file_name"]).convert("RGB"), float) / 255 for im in ann.images]
    direct = list(MaiteDetector(maite_shapes_detector()).detect(arrays))
    expected = evaluate(ann, {im["id"]: d for im, d in zip(ann.images, direct, strict=True)},
                        maite_shapes_detector().metadata["index2label"])
    for k, run in enumerate(images):
        m = run.data.metrics
        assert m[schema.DETECTIONS] == len(direct[k])
        assert m[schema.MAX_SCORE] == pytest.approx(float(direct[k].scores.max()))
        assert m[schema.AP_50] == pytest.approx(expected.image_ap_50[ann.images[k]["id"]])
        assert run.data.tags[schema.GT_OBJECTS] == "2"
        assert run.data.tags[schema.EVALUATION_SUMMARY_RUN_ID] == summary.info.run_id
        files = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {schema.DETECTIONS_TABLE, schema.DETECTIONS_FIGURE} <= files
    table = json.loads(Path(client.download_artifacts(images[0].info.run_id, schema.DETECTIONS_TABLE)).read_text())
    assert len(table["detections"]) == len(direct[0])
    assert {"box", "label", "name", "score"} <= set(table["detections"][0])
    m = summary.data.metrics
    assert m[schema.MAP_50] == pytest.approx(expected.map_50)
    assert m[schema.MAP_50_95] == pytest.approx(expected.map_50_95)
    for name, ap in expected.ap_50.items():
        if not math.isnan(ap):
            assert m[schema.class_ap(name)] == pytest.approx(ap)
    assert schema.CLASS_AP_TABLE in {a.path for a in client.list_artifacts(summary.info.run_id)}

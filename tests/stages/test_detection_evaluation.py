"""task=detection's evaluation stage: one run per image (Detections, Max_score, AP_50 with ground truth, the
detections table and picture), a summary with pycocotools' mAP; images without annotations; reuse and shards."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xaitk_exp import schema
from xaitk_exp.errors import ConfigError
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


def test_a_folder_without_annotations_records_detections_but_no_ap(run_stage, client, coco):
    folder = coco.parent
    run_stage("stage=train", *MAITE, "dataset=coco", f"dataset.path={folder}")
    ctx = run_stage("stage=evaluation", *MAITE, "dataset=coco", f"dataset.path={folder}", "logging=low")
    runs = runs_of(client, EXPERIMENT)
    images = [r for r in runs if r.data.tags[schema.RUN_TYPE] == "image"]
    assert len(images) == 5
    for run in images:
        assert schema.AP_50 not in run.data.metrics and schema.GT_OBJECTS not in run.data.tags
        assert run.data.metrics[schema.DETECTIONS] >= 1 and run.data.metrics[schema.MAX_SCORE] > 0.5
        assert run.data.tags[schema.PREDICTED_LABEL] in run.data.tags[schema.DETECTED_LABELS].split(",")
    summary = client.get_run(ctx.evaluation_run_id).data
    assert schema.MAP_50 not in summary.metrics and summary.metrics[schema.EVALUATED_IMAGES] == 5
    assert summary.metrics[schema.MEAN_DETECTIONS] == pytest.approx(
        np.mean([r.data.metrics[schema.DETECTIONS] for r in images]))


def test_a_shard_detects_only_the_chunks_that_hold_its_rows(tmp_path: Path):
    from xaitk_exp.data.coco import CocoFolder
    from xaitk_exp.models.detector import build_for_task
    from xaitk_exp.tasks.detection import DetectionRecords

    path, _ = write_coco_folder(tmp_path / "shapes", n_images=7, size=(48, 48), seed=1)
    split = CocoFolder(annotations=str(path)).load()
    node = {"source": "maite", "_target_": "xaitk_exp.detection.toy.MaiteShapesDetector"}
    model = build_for_task(node, (), "detection", split.image_shape)
    model.check_images(split.image_shape)
    whole = DetectionRecords(split, model, "test", model.detector(3))
    box = model.detector(3)
    part = DetectionRecords(split, model, "test", box, rows=[4, 6])
    assert sorted(part.dets) == [3, 4, 5, 6] and box.n_calls == 2  # chunks [3, 6) and [6, 7)
    for k in (4, 6):
        assert part.image(k) == whole.image(k)  # the same detections and the same AP_50 as the whole split's


def test_the_same_config_reuses_the_evaluation_and_force_reruns_it(run_stage, client, coco):
    args = [*MAITE, "dataset=coco", f"dataset.annotations={coco}", "evaluation.num_images=2"]
    run_stage("stage=train", *args)
    first = run_stage("stage=evaluation", *args).evaluation_run_id
    assert run_stage("stage=evaluation", *args).evaluation_run_id == first
    assert len(runs_of(client, EXPERIMENT)) == 3
    assert run_stage("stage=evaluation", *args, "force=true").evaluation_run_id != first


@pytest.mark.parametrize("level", ["low", "high"])
def test_every_logging_level_writes_the_same_detection_records(run_stage, client, coco, level):
    args = [*MAITE, "dataset=coco", f"dataset.annotations={coco}", "evaluation.num_images=2", f"logging={level}"]
    run_stage("stage=train", *args)
    ctx = run_stage("stage=evaluation", *args)
    images = [r for r in runs_of(client, EXPERIMENT) if r.data.tags[schema.RUN_TYPE] == "image"]
    assert len(images) == 2
    for run in images:
        assert {schema.DETECTIONS, schema.MAX_SCORE, schema.AP_50} <= set(run.data.metrics)
        assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {schema.DETECTIONS_TABLE,
                                                                            schema.DETECTIONS_FIGURE}
    assert schema.MAP_50 in client.get_run(ctx.evaluation_run_id).data.metrics


def test_a_detection_evaluation_reproduces_as_a_match(run_stage, client, coco):
    args = [*MAITE, "dataset=coco", f"dataset.annotations={coco}", "evaluation.num_images=3"]
    run_stage("stage=train", *args)
    original = run_stage("stage=evaluation", *args).evaluation_run_id
    out = run_stage("stage=reproduce", f"run_id={original}")
    new = client.get_run(out.results["reproduce_run_id"])
    assert new.data.tags["reproduced_match"] == "True", new.data.tags.get("reproduced_differs")
    assert new.data.metrics[schema.MAP_50] == client.get_run(original).data.metrics[schema.MAP_50]


@pytest.mark.slow
def test_a_sharded_detection_evaluation_equals_one_process(tmp_path: Path, coco):
    from conftest import local_client, run_cli
    from mlflow import MlflowClient

    from xaitk_exp.app import compose_config, run

    args = ["progress=false", *MAITE, "dataset=coco", f"dataset.annotations={coco}", "chunk_size=2"]
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    single.mkdir()
    sharded.mkdir()
    uri = f"sqlite:///{single / 'mlflow.db'}"
    for stage in ("train", "evaluation"):
        run(compose_config([f"tracking.uri={uri}", f"stage={stage}", *args]), [], single)
    out = run_cli(["-m", "stage=evaluation", "shards=2", "shard=range(0,2)", "hydra/launcher=joblib",
                   "hydra.launcher.n_jobs=2", *args], sharded, timeout=500)
    assert out.returncode == 0, out.stderr[-3000:]

    def records(client: Any) -> tuple[dict, dict]:
        runs = runs_of(client, EXPERIMENT)
        images = {r.data.tags[schema.IMAGE_ID]: r for r in runs if r.data.tags[schema.RUN_TYPE] == "image"}
        summary = next(r for r in runs if r.data.tags[schema.RUN_TYPE] == "summary")
        return images, summary.data.metrics

    ref_images, ref_summary = records(MlflowClient(uri))
    client = local_client(sharded)
    images, summary = records(client)
    assert sorted(images) == sorted(ref_images) == [str(k) for k in range(5)]
    for k, run in images.items():
        assert run.data.metrics == ref_images[k].data.metrics
        assert run.data.tags[schema.SHARD] in ("0/2", "1/2")
        assert schema.DETECTIONS_TABLE in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert summary[schema.MAP_50] == ref_summary[schema.MAP_50]
    assert summary[schema.MAP_50_95] == ref_summary[schema.MAP_50_95]


class ShapesDataset:
    """A MAITE object-detection dataset of drawn shapes: (image (3, H, W) uint8, target, {"id": i})."""

    def __init__(self) -> None:
        from xaitk_exp.detection.toy import CLASSES, draw_scene

        rng = np.random.default_rng(9)
        self.scenes = [draw_scene(rng, (48, 48), 2) for _ in range(3)]
        self.metadata = {"id": "maite-shapes", "index2label": dict(CLASSES)}

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, i: int) -> tuple[np.ndarray, Any, dict]:
        from xaitk_exp.detection.toy import ObjectDetectionTarget

        s = self.scenes[i]
        return s.image.transpose(2, 0, 1), ObjectDetectionTarget(s.boxes, s.labels, np.ones(len(s.labels))), {"id": i}


def test_a_maite_detection_dataset_is_evaluated_against_its_boxes(run_stage, client):
    args = [*MAITE, "dataset=maite_detection", f"dataset.dataset._target_={__name__}.ShapesDataset",
            f"allow_targets=[{__name__}.]"]
    run_stage("stage=train", *args)
    ctx = run_stage("stage=evaluation", *args)
    images = [r for r in runs_of(client, EXPERIMENT) if r.data.tags[schema.RUN_TYPE] == "image"]
    assert len(images) == 3 and {r.data.tags[schema.DATASET] for r in images} == {"maite-shapes"}
    assert [r.data.metrics[schema.AP_50] for r in images] == pytest.approx([1.0] * 3)  # every shape found
    assert client.get_run(ctx.evaluation_run_id).data.metrics[schema.MAP_50] == pytest.approx(1.0)


def test_an_onnx_detector_named_in_config_is_recorded_and_evaluated(run_stage, client, coco, tmp_path: Path):
    from xaitk_exp.detection.toy import write_onnx_detector

    path = write_onnx_detector(tmp_path / "shapes.onnx")
    args = ["task=detection", "model=onnx", f"model.path={path}",
            "model.outputs={boxes:boxes,scores:scores,labels:labels}",
            "model.class_names=[red_square,red_disc,blue_square,blue_disc]", "dataset=coco",
            f"dataset.annotations={coco}", "evaluation.num_images=2"]
    train = run_stage("stage=train", *args)
    assert client.get_run(train.train_run_id).data.tags[schema.MODEL_FORMAT] == "file"
    ctx = run_stage("stage=evaluation", *args)
    assert ctx.train_run_id == train.train_run_id
    images = [r for r in runs_of(client, "shapes - Evaluation") if r.data.tags[schema.RUN_TYPE] == "image"]
    assert len(images) == 2 and all(r.data.metrics[schema.DETECTIONS] == 2 for r in images)
    assert schema.MAP_50 in client.get_run(ctx.evaluation_run_id).data.metrics
    with pytest.raises(ConfigError) as err:
        run_stage("stage=train", *args[:3], "model.outputs={boxes:boxes,scores:score}", *args[4:])
    assert str(err.value).startswith("model.outputs.scores='score' is invalid: one of the ONNX model's outputs")
    assert {r.info.status for r in runs_of(client, "shapes - Train")} == {"FINISHED"}  # refused before a run opened

"""The saliency stage for detectors (D-RISE, RandomGrid): one run per explained detection, maps equal to
xaitk-saliency's own, detections chosen by query.min_score / query.label."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image
from xaitk_saliency.impls.gen_object_detector_blackbox_sal.drise import DRISEStack, RandomGridStack

from xaitk_exp import schema
from xaitk_exp.detection import toy
from xaitk_exp.detection.blackbox import MaiteDetector, TorchDetector
from xaitk_exp.errors import ConfigError, QueryError
from xaitk_exp.settings.config import QuerySettings
from xaitk_exp.stages.saliency.algorithm import Algorithm
from xaitk_exp.stages.saliency.detection import box_text, explain_image, label_indices

N = 50  # masks: small, the maps' equality does not need more


@pytest.fixture(scope="module")
def scene() -> toy.Scene:
    return toy.draw_scene(np.random.default_rng(4), (64, 64), 2)


def _algorithm(option: str, *overrides: str) -> Algorithm:
    from xaitk_exp.app import compose_config

    cfg = compose_config([f"saliency={option}", f"saliency.n={N}", "seed=3", *overrides])
    return Algorithm(cfg.saliency, (64, 64, 3))


@pytest.mark.parametrize("option, direct", [
    ("drise", lambda: DRISEStack(n=N, s=7, p1=0.5, seed=3, threads=0)),  # s auto: 7 cells on 64x64
    ("detector_random_grid", lambda: RandomGridStack(n=N, s=(11, 11), p1=0.5, seed=3, threads=0)),  # 64 / 6
])
@pytest.mark.parametrize("image_kind", ["float", "uint8"])
def test_the_stages_maps_equal_a_direct_xaitk_saliency_call(scene, option, direct, image_kind):
    """The shipped config (auto grid, fill = the image's mean colour) gives xaitk-saliency's maps for every chosen
    detection, each equal to the map of a call for that detection alone."""
    image = scene.image.astype(float) / 255 if image_kind == "float" else scene.image
    algo = _algorithm(option)
    bb = TorchDetector(toy.shapes_detector(), toy.CLASSES, chunk_size=16)
    got = explain_image(algo, bb, image, chunk_size=17)
    assert got.chosen == [0, 1] and got.maps.shape == (2, 64, 64)
    boxes, scores, objectness = got.detections.xaitk_inputs(bb.n_classes)
    gen = direct()
    gen.fill = image.reshape(-1, 3).astype(float).mean(axis=0)
    want = gen(image, boxes, scores, bb, objectness)
    np.testing.assert_allclose(got.maps, want, rtol=0, atol=1e-6)
    for j in got.chosen:
        alone = gen(image, boxes[j : j + 1], scores[j : j + 1], bb, objectness[j : j + 1])
        np.testing.assert_allclose(got.maps[j], alone[0], rtol=0, atol=1e-6)
    assert algo.config()["n"] == N and algo.config()["algorithm"] == option


def test_min_score_and_label_choose_the_detections(scene):
    bb = MaiteDetector(toy.maite_shapes_detector(), chunk_size=16)
    algo = _algorithm("drise", "saliency.n=8")
    every = explain_image(algo, bb, scene.image)
    labels = every.detections.labels.tolist()
    assert every.chosen == [0, 1] and len(set(labels)) == 2  # the scene holds two classes
    one = label_indices(toy.CLASSES[labels[1]], bb.index2label)
    assert explain_image(algo, bb, scene.image, labels=one).chosen == [1]
    assert explain_image(algo, bb, scene.image, labels=label_indices(str(labels[0]), bb.index2label)).chosen == [0]
    assert explain_image(algo, bb, scene.image, min_score=1.0).chosen == []
    top = float(every.detections.scores.max())
    best = int(np.argmax(every.detections.scores))
    assert explain_image(algo, bb, scene.image, min_score=top).chosen == [best]


def test_a_label_the_detector_lacks_is_a_one_line_error():
    with pytest.raises(ConfigError, match=r"query\.label.*'cat'.*red_square, red_disc, blue_square, blue_disc"):
        label_indices("cat", toy.CLASSES)
    with pytest.raises(ConfigError, match=r"query\.label.*7.*0\.\.3"):
        label_indices(7, toy.CLASSES)
    assert label_indices(None, toy.CLASSES) is None


@pytest.mark.parametrize("kwargs, key", [
    ({"min_score": 1.5}, "query.min_score"),
    ({"min_score": "high"}, "query.min_score"),
    ({"label": [1, 2]}, "query.label"),
    ({"label": True}, "query.label"),
])
def test_bad_query_values_are_one_line_errors(kwargs, key):
    with pytest.raises(ConfigError, match=key) as err:
        QuerySettings(**kwargs)
    assert "\n" not in str(err.value)


def test_query_keys_left_null_keep_the_classification_hash():
    from omegaconf import OmegaConf, open_dict

    from xaitk_exp.app import compose_config
    from xaitk_exp.settings.hashes import stage_hash
    from xaitk_exp.settings.nodes import to_dict

    cfg = compose_config([])
    assert cfg.query.min_score is None and cfg.query.label is None
    # what the hash was before the two keys existed
    query = {k: v for k, v in to_dict(cfg.query).items() if k not in ("min_score", "label")}
    cfg_old = compose_config([])
    with open_dict(cfg_old):
        cfg_old.query = OmegaConf.create(query)
    assert stage_hash(cfg, "saliency", lambda: (8, 8)) == stage_hash(cfg_old, "saliency", lambda: (8, 8))
    assert stage_hash(compose_config(["query.min_score=0.5"]), "saliency", lambda: (8, 8)) != stage_hash(
        cfg, "saliency", lambda: (8, 8))


def test_the_run_name_and_box_tag():
    assert schema.detection_saliency_run(3, 1) == "ImageID-3_det-1_saliency_maps"
    assert box_text(np.array([10.0, 12.5, 30.0, 40.0])) == "10,12.5,30,40"


def test_the_detection_picture_shows_the_image_overlay_and_map(tmp_path, scene):
    from xaitk_exp.viz.figures import BOX_COLOUR, detection_figure

    sal = np.zeros((64, 64))
    x0, y0, x1, y1 = scene.boxes[0].astype(int)
    sal[y0:y1, x0:x1] = 1.0
    path = detection_figure(scene.image, sal, scene.boxes[0], "red_square 0.93", tmp_path / "d.png", "drise")
    rgb = np.asarray(Image.open(path).convert("RGB"))
    assert rgb.shape[1] >= 3 * 96  # three panels side by side
    assert (rgb == np.array(BOX_COLOUR, np.uint8)).all(axis=2).sum() > 3 * 4 * 10  # the box on each panel


def test_each_shipped_generator_belongs_to_one_task():
    from xaitk_exp.tasks import task_named

    classification = task_named("classification").saliency_options()
    assert {"drise", "detector_random_grid"}.isdisjoint(classification) and {"rise", "sliding_window"} <= set(
        classification)
    assert task_named("classification").takes_generator(
        "xaitk_saliency.impls.gen_image_classifier_blackbox_sal.rise.RISEStack")
    assert not task_named("classification").takes_generator(
        "xaitk_saliency.impls.gen_object_detector_blackbox_sal.drise.DRISEStack")


# ----- the stage, in process, on a real SQLite store ------------------------------------------------------------------
MAITE = ["model=maite", "model._target_=xaitk_exp.detection.toy.MaiteShapesDetector"]
SALIENCY_EXP = f"MaiteShapesDetector - {schema.SALIENCY}"
SMALL = ["saliency=drise", f"saliency.n={N}", "chunk_size=16", "metrics.step=256"]


@pytest.fixture
def coco(tmp_path):
    path, scenes = toy.write_coco_folder(tmp_path / "shapes", n_images=3, size=(64, 64), n_objects=2, seed=3)
    return path, scenes


def _saliency_runs(client):
    exp = client.get_experiment_by_name(SALIENCY_EXP)
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=1000)


def test_one_run_per_detection_with_its_tags_map_picture_and_metrics(run_stage, client, coco):
    """stage=all on a COCO folder: the best image's two detections, each a run whose map equals a direct
    DRISEStack call on the loaded image with the same detector, seed and settings."""
    path, scenes = coco
    ctx = run_stage(*MAITE, "dataset=coco", f"dataset.annotations={path}", *SMALL, "metrics.step=64",
                    "query.max_results=1")
    runs = sorted(_saliency_runs(client), key=lambda r: int(r.data.tags[schema.DETECTION]))
    assert [r.info.run_id for r in runs] == sorted(ctx.results["saliency_run_ids"], key=lambda i: [
        r.info.run_id for r in runs].index(i))
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    k = int(runs[0].data.tags[schema.IMAGE_ID])
    evaluation = client.get_run(runs[0].data.tags[schema.EVALUATION_RUN_ID])
    assert evaluation.data.tags[schema.IMAGE_ID] == str(k) and evaluation.info.run_name == schema.evaluation_image_run(k)
    image = np.asarray(ctx.split.images("test")[k])
    bb = MaiteDetector(toy.maite_shapes_detector(), chunk_size=16)
    found = next(bb.detect([image]))
    boxes, scores, objectness = found.xaitk_inputs(bb.n_classes)
    gen = DRISEStack(n=N, s=7, p1=0.5, seed=0, threads=0)
    gen.fill = image.reshape(-1, 3).astype(float).mean(axis=0)
    direct = gen(image, boxes, scores, bb, objectness)
    for j, run in enumerate(runs):
        tags, metrics = run.data.tags, run.data.metrics
        assert run.info.run_name == schema.detection_saliency_run(k, j) == f"ImageID-{k}_det-{j}_saliency_maps"
        assert tags[schema.DETECTION] == str(j) and tags[schema.SALIENCY_ALGORITHM] == "drise"
        assert tags[schema.PREDICTED_LABEL] == toy.CLASSES[int(found.labels[j])]
        assert [float(v) for v in tags[schema.BOX].split(",")] == found.boxes[j].tolist()
        assert tags[schema.TRAIN_RUN_ID] and tags[schema.CONFIG_HASH] and tags[schema.EVALUATION_SUMMARY_RUN_ID]
        assert metrics[schema.SCORE] == pytest.approx(float(found.scores[j]))
        assert run.data.params["n"] == str(N) and run.data.params["seed"] == "0"
        saved = np.load(client.download_artifacts(run.info.run_id, f"{schema.NPY_DIR}/{schema.MAPS_NPY}"))
        assert saved.shape == (1, 64, 64)
        np.testing.assert_allclose(saved[0], direct[j], rtol=0, atol=1e-6)
        assert schema.DETECTION_FIGURE in {a.path for a in client.list_artifacts(run.info.run_id)}
        # quality (metrics.enabled): deletion / insertion with their baselines, and the pointing game (COCO boxes)
        for key in ("Deletion_AUC", "Insertion_AUC", "Deletion_AUC_random", "Insertion_AUC_random"):
            assert 0.0 <= metrics[key] <= 1.0
        assert metrics["Pointing_game"] in (0.0, 1.0)
    # the toy detector's maps are faithful: deleting by the map hurts more than deleting at random
    assert np.mean([r.data.metrics["Deletion_AUC"] for r in runs]) < np.mean(
        [r.data.metrics["Deletion_AUC_random"] for r in runs])


def test_min_score_label_reuse_and_force(run_stage, client, coco):
    path, _ = coco
    common = (*MAITE, "dataset=coco", f"dataset.annotations={path}", *SMALL, "metrics.enabled=false",
              "query.max_results=3")
    ctx = run_stage(*common)
    first = ctx.results["saliency_run_ids"]
    runs = {r.info.run_id: r for r in _saliency_runs(client)}
    assert len(first) == len(runs) == 6  # three images, two shapes each
    # a class chosen by name: only its detections, reused from the first job
    label = runs[first[0]].data.tags[schema.PREDICTED_LABEL]
    ctx = run_stage(*common, f"query.label={label}", "stage=saliency")
    picked = ctx.results["saliency_run_ids"]
    assert picked and set(picked) <= set(first) and len(_saliency_runs(client)) == 6
    assert {runs[i].data.tags[schema.PREDICTED_LABEL] for i in picked} == {label}
    # min_score: the detections scoring at least that; force=true: new runs
    scores = sorted(r.data.metrics[schema.SCORE] for r in runs.values())
    threshold = (scores[0] + scores[-1]) / 2
    ctx = run_stage(*common, f"query.min_score={threshold}", "stage=saliency", "force=true")
    again = ctx.results["saliency_run_ids"]
    assert len(again) == sum(s >= threshold for s in scores) and not set(again) & set(first)
    assert all(client.get_run(i).data.metrics[schema.SCORE] >= threshold for i in again)
    with pytest.raises(ConfigError, match=r"query\.label=.?cat.? is invalid"):
        run_stage(*common, "query.label=cat", "stage=saliency")
    assert all(r.info.status == "FINISHED" for r in _saliency_runs(client))


def test_a_classifier_generator_is_refused_for_a_detector(run_stage, coco):
    path, _ = coco
    with pytest.raises(ConfigError, match=r"saliency\._target_.*task=detection"):
        run_stage(*MAITE, "dataset=coco", f"dataset.annotations={path}", "saliency=rise", "stage=saliency")


def _record(client, run) -> dict:
    """What a saliency run records, without what differs between stores (ids, hosts, times, git)."""
    varying = {schema.EVALUATION_RUN_ID, schema.EVALUATION_EXP_ID, schema.EVALUATION_SUMMARY_RUN_ID,
               schema.TRAIN_RUN_ID, schema.HOST, schema.PID, schema.PROCESS}
    tags = {k: v for k, v in run.data.tags.items() if k not in varying and not k.startswith("mlflow.")}

    def files(path=None):
        out = []
        for a in client.list_artifacts(run.info.run_id, path):
            out += files(a.path) if a.is_dir else [re.sub(r"\+timestamp\+[^.]*", "+<time, uuid>", a.path)]
        return out

    saved = np.load(client.download_artifacts(run.info.run_id, f"{schema.NPY_DIR}/{schema.MAPS_NPY}"))
    return {"name": run.info.run_name, "tags": tags, "metrics": run.data.metrics, "params": run.data.params,
            "files": sorted(files()), "map": saved.tobytes()}


def test_the_three_logging_levels_leave_the_same_records(run_stage, coco, tmp_path):
    from mlflow import MlflowClient

    path, _ = coco
    records = {}
    for level in ("high", "mid", "low"):
        (tmp_path / level).mkdir()
        uri = f"sqlite:///{tmp_path / level / 'mlflow.db'}"
        run_stage(*MAITE, "dataset=coco", f"dataset.annotations={path}", *SMALL, "saliency.n=20",
                  "query.max_results=1", f"logging={level}", uri=uri)
        client = MlflowClient(uri)
        runs = sorted(_saliency_runs(client), key=lambda r: r.info.run_name)
        records[level] = [_record(client, r) for r in runs]
    assert len(records["low"]) == 2
    for level in ("high", "mid"):
        for a, b in zip(records[level], records["low"], strict=True):
            for key in a:
                assert a[key] == b[key], (level, key)


@pytest.mark.slow
def test_the_command_explains_detections_and_refuses_a_bad_label_in_one_line(tmp_path, coco):
    from conftest import local_client, run_cli

    path, _ = coco
    args = [*MAITE, "dataset=coco", f"dataset.annotations={path}", *SMALL, "query.max_results=1", "progress=false"]
    done = run_cli(args, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    runs = _saliency_runs(local_client(tmp_path))
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    bad = run_cli([*args, "stage=saliency", "query.label=cat"], tmp_path)
    assert bad.returncode == 2
    lines = [line for line in bad.stderr.splitlines() if "query.label" in line]
    assert len(lines) == 1 and "'cat'" in lines[0] and "red_square" in lines[0], bad.stderr[-2000:]
    assert len(_saliency_runs(local_client(tmp_path))) == 2  # nothing recorded, nothing lost


@pytest.mark.slow
def test_n_jobs_changes_no_bit_of_the_maps_or_metrics(run_stage, coco, tmp_path):
    """n_jobs=2 (a worker process beside the stage's) records the runs n_jobs=1 records, maps bit for bit."""
    from mlflow import MlflowClient

    path, _ = coco
    records = {}
    for n_jobs in (1, 2):
        (tmp_path / f"jobs{n_jobs}").mkdir()
        uri = f"sqlite:///{tmp_path / f'jobs{n_jobs}' / 'mlflow.db'}"
        ctx = run_stage(*MAITE, "dataset=coco", f"dataset.annotations={path}", *SMALL, "saliency.n=20",
                        "query.max_results=3", f"n_jobs={n_jobs}", uri=uri)
        client = MlflowClient(uri)
        ids = ctx.results["saliency_run_ids"]
        assert sorted(ids) == sorted(r.info.run_id for r in _saliency_runs(client))
        records[n_jobs] = [_record(client, client.get_run(i)) for i in ids]
        pids = {client.get_run(i).data.tags[schema.PID] for i in ids}
        assert len(pids) == n_jobs  # n_jobs=2: a worker process recorded some of the runs
    assert len(records[1]) == 6
    for a, b in zip(records[1], records[2], strict=True):
        for key in ("name", "metrics", "params", "files", "map"):
            assert a[key] == b[key], key
        assert a["tags"] == b["tags"]


def test_reproducing_a_detections_run_matches_that_detection(run_stage, client, coco):
    """stage=reproduce of the image's second detection reruns it, not the first, and finds every byte the same;
    the data fingerprint the run recorded after the evaluation (pycocotools had read the annotations) still holds."""
    path, _ = coco
    common = (*MAITE, "dataset=coco", f"dataset.annotations={path}", *SMALL, "query.max_results=1")
    ctx = run_stage(*common)
    second = next(r for r in _saliency_runs(client) if r.data.tags[schema.DETECTION] == "1")
    train_fingerprint = client.get_run(second.data.tags[schema.TRAIN_RUN_ID]).data.tags[schema.DATA_FINGERPRINT]
    assert second.data.tags[schema.DATA_FINGERPRINT] == train_fingerprint == ctx.split.fingerprint()
    ctx = run_stage(*common, "stage=reproduce", f"run_id={second.info.run_id}")
    new = client.get_run(ctx.results["reproduce_run_id"])
    assert new.data.tags["reproduced_from"] == second.info.run_id
    assert (new.data.tags[schema.DETECTION], new.data.tags[schema.BOX]) == (
        second.data.tags[schema.DETECTION], second.data.tags[schema.BOX])
    assert new.data.tags["reproduced_match"] == "True", new.data.tags["reproduced_differs"]
    assert "data differs" not in new.data.tags["reproduced_warnings"]


def test_update_run_id_rewrites_a_detections_run_for_the_newly_selected_detection(run_stage, client, coco):
    """update_run_id: the given detection run now shows the first detection the query selects (another image):
    its map (a direct DRISEStack call's), tags, score, the new name, Modified_run=True and what it showed before."""
    path, _ = coco
    common = (*MAITE, "dataset=coco", f"dataset.annotations={path}", *SMALL, "metrics.step=64")
    run_stage(*common, "query.max_results=1")
    before = {r.info.run_id: r for r in _saliency_runs(client)}
    old = next(r for r in before.values() if r.data.tags[schema.DETECTION] == "1")
    k_old = old.data.tags[schema.IMAGE_ID]
    ctx = run_stage(*common, "stage=saliency", f"update_run_id={old.info.run_id}",
                    f"query.filter=\"tags.{schema.IMAGE_ID} != '{k_old}'\"")
    assert ctx.results["saliency_run_ids"] == [old.info.run_id]
    after = _saliency_runs(client)
    assert sorted(r.info.run_id for r in after) == sorted(before)  # edited, none added
    run = client.get_run(old.info.run_id)
    tags, metrics = run.data.tags, run.data.metrics
    k = int(tags[schema.IMAGE_ID])
    assert str(k) != k_old and tags[schema.DETECTION] == "0" and run.info.status == "FINISHED"
    assert run.info.run_name == schema.detection_saliency_run(k, 0)
    assert tags[schema.MODIFIED_RUN] == "True"
    assert (tags[schema.PREVIOUS_IMAGE_ID], tags[schema.PREVIOUS_DETECTION]) == (k_old, "1")
    assert tags[schema.PREVIOUS_EVALUATION_RUN_ID] == old.data.tags[schema.EVALUATION_RUN_ID]
    evaluation = client.get_run(tags[schema.EVALUATION_RUN_ID])
    assert evaluation.data.tags[schema.IMAGE_ID] == str(k)
    assert tags[schema.EVALUATION_RUN_ID] != old.data.tags[schema.EVALUATION_RUN_ID]
    image = np.asarray(ctx.split.images("test")[k])
    bb = MaiteDetector(toy.maite_shapes_detector(), chunk_size=16)
    found = next(bb.detect([image]))
    assert tags[schema.PREDICTED_LABEL] == toy.CLASSES[int(found.labels[0])]
    assert [float(v) for v in tags[schema.BOX].split(",")] == found.boxes[0].tolist()
    assert metrics[schema.SCORE] == pytest.approx(float(found.scores[0]))
    history = client.get_metric_history(run.info.run_id, "Deletion_AUC")
    assert len(history) == 2 and metrics["Deletion_AUC"] == history[-1].value  # the new detection's, logged after
    boxes, scores, objectness = found.xaitk_inputs(bb.n_classes)
    gen = DRISEStack(n=N, s=7, p1=0.5, seed=0, threads=0)
    gen.fill = image.reshape(-1, 3).astype(float).mean(axis=0)
    direct = gen(image, boxes[:1], scores[:1], bb, None if objectness is None else objectness[:1])
    saved = np.load(client.download_artifacts(run.info.run_id, f"{schema.NPY_DIR}/{schema.MAPS_NPY}"))
    np.testing.assert_allclose(saved, direct, rtol=0, atol=1e-6)
    assert run.data.params == old.data.params
    # the other detection's run is untouched
    other = next(i for i in before if i != old.info.run_id)
    assert client.get_run(other).data.tags == before[other].data.tags


def test_update_run_id_that_is_not_a_detection_run_of_this_model_is_a_one_line_error(run_stage, client, coco):
    path, _ = coco
    common = (*MAITE, "dataset=coco", f"dataset.annotations={path}", *SMALL, "metrics.enabled=false",
              "query.max_results=1")
    ctx = run_stage(*common)
    ids = sorted(ctx.results["saliency_run_ids"])
    evaluation = client.get_run(ctx.evaluation_run_id)
    for bad in (ctx.evaluation_run_id, "0123456789abcdef0123456789abcdef"):
        with pytest.raises(ConfigError, match=rf"update_run_id=.?{bad}.? is invalid") as err:
            run_stage(*common, "stage=saliency", f"update_run_id={bad}")
        assert "\n" not in str(err.value)
    # a differing saliency param: MLflow params are immutable
    with pytest.raises(ConfigError, match=r"update_run_id.*these differ: n"):
        run_stage(*common, "stage=saliency", f"update_run_id={ids[0]}", "saliency.n=20")
    # no detection scores 1.0: nothing to write, the run is left as it was
    with pytest.raises(QueryError, match=rf"update_run_id={ids[0]}: no selected image has a detection"):
        run_stage(*common, "stage=saliency", f"update_run_id={ids[0]}", "query.min_score=1.0")
    assert sorted(r.info.run_id for r in _saliency_runs(client)) == ids
    assert all(r.info.status == "FINISHED" and schema.MODIFIED_RUN not in r.data.tags for r in _saliency_runs(client))
    assert client.get_run(ctx.evaluation_run_id).data.tags == evaluation.data.tags

"""Each stage against a real SQLite store: the schema users query, reuse, edits, and bit-exact maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xaitk_exp.errors import ConfigError, QueryError, TrackingError

SEED_QUERY = "metrics.Predicted_class_conf >= 0.9 and tags.Predicted_class = '4'"


def _exp(client, name):
    exp = client.get_experiment_by_name(name)
    assert exp is not None, f"missing experiment {name}"
    return exp.experiment_id


def _runs(client, name, flt=""):
    return client.search_runs([_exp(client, name)], filter_string=flt, max_results=1000)


def test_train_stage_records_params_loss_and_model(run_stage, client):
    ctx = run_stage("stage=train")
    (run,) = _runs(client, "MLPClassifier - Train")
    assert run.info.run_name == "train_info" and run.info.status == "FINISHED"
    p = run.data.params
    assert (p["hidden_layer_sizes"], p["solver"], p["max_iter"], p["learning_rate_init"]) == ("[50]", "sgd", "10", "0.1")
    assert run.data.tags["Dataset"] == "digits"
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.tags["Experiment"] == "MLPClassifier - Train" and exp.tags["framework"] == "scikit-learn"
    assert "version" in exp.tags
    history = client.get_metric_history(run.info.run_id, "Train loss")
    assert [m.step for m in history] == list(range(ctx.model.n_iter_))
    assert np.allclose([m.value for m in history], ctx.model.loss_curve_)
    files = {f.path for f in client.list_artifacts(run.info.run_id, "sklearn-model")}
    assert {"sklearn-model/MLmodel", "sklearn-model/model.skops", "sklearn-model/input_example.json"} <= files
    assert {f.path for f in client.list_artifacts(run.info.run_id, "config")} >= {
        "config/config.yaml", "config/overrides.yaml", "config/environment.json"
    }
    import mlflow.sklearn

    loaded = mlflow.sklearn.load_model(f"runs:/{run.info.run_id}/sklearn-model")
    X = ctx.split.test_images.reshape(len(ctx.split.test_images), -1)
    assert np.array_equal(loaded.predict_proba(X), ctx.model.predict_proba(X))


def test_evaluation_stage_one_run_per_image_plus_summary(run_stage, client):
    run_stage("stage=train")
    ctx = run_stage("stage=evaluation", "evaluation.num_images=12")
    train = _runs(client, "MLPClassifier - Train")[0]
    images = _runs(client, "MLPClassifier - Evaluation", "tags.Run_type = 'image'")
    assert sorted(r.info.run_name for r in images) == sorted(f"ImageID-{k}_conf" for k in range(12))
    probs = ctx.model.predict_proba(ctx.split.test_images[:12].reshape(12, -1))
    for run in images:
        k = int(run.data.tags["Image_id"])
        t, m = run.data.tags, run.data.metrics
        assert (t["Dataset"], t["Datasplit"]) == ("digits", "test")
        assert (t["Train_run_id"], t["Train_exp_id"]) == (train.info.run_id, train.info.experiment_id)
        assert t["GT_class"] == str(ctx.split.test_labels[k])
        assert t["Predicted_class"] == str(int(np.argmax(probs[k])))
        assert m["Predicted_class_conf"] == pytest.approx(probs[k].max())
        assert [m[f"Class_{c}_conf"] for c in range(10)] == pytest.approx(probs[k].tolist())
        assert run.info.status == "FINISHED"
    (summary,) = _runs(client, "MLPClassifier - Evaluation", "tags.Run_type = 'summary'")
    # top-level runs linked by tag: MLflow's runs table folds nested runs away from a typed query
    assert all(r.data.tags["Evaluation_summary_run_id"] == summary.info.run_id for r in images)
    assert not any("mlflow.parentRunId" in r.data.tags for r in images)
    assert f"tags.Evaluation_summary_run_id = '{summary.info.run_id}'" in summary.data.tags["mlflow.note.content"]
    assert all(summary.info.run_id in r.data.tags["mlflow.note.content"] for r in images)
    assert summary.data.metrics["Evaluated_images"] == 12
    assert 0.8 < summary.data.metrics["Accuracy"] <= 1.0
    assert "confusion_matrix.png" in {f.path for f in client.list_artifacts(summary.info.run_id)}


@pytest.mark.with_upstream
def test_seed_query_selects_and_explains_matching_images(run_stage, client):
    ctx = run_stage("stage=all", f'query.filter="{SEED_QUERY}"', "query.max_results=3", "evaluation.num_images=100")
    runs = _runs(client, "MLPClassifier - Saliency Map Generation")
    assert 1 <= len(runs) <= 3 and len(runs) == len(ctx.results["saliency_run_ids"])
    evals = {r.info.run_id: r for r in _runs(client, "MLPClassifier - Evaluation", "tags.Run_type = 'image'")}
    confs = []
    for run in runs:
        src = evals[run.data.tags["Evaluation_run_id"]]
        assert src.data.tags["Predicted_class"] == "4" and src.data.metrics["Predicted_class_conf"] >= 0.9
        assert run.data.tags["Image_id"] == src.data.tags["Image_id"]
        assert run.info.run_name == f"ImageID-{src.data.tags['Image_id']}_saliency_maps"
        assert run.data.params["window_size"] == "[2, 2]" and run.data.params["fill"] == "0"
        assert run.data.tags["Saliency_algorithm"] == "sliding_window"
        confs.append(run.data.metrics["Predicted_class_conf"])
        paths = {f.path for f in client.list_artifacts(run.info.run_id, "saliency_map_np_arrays")}
        assert "saliency_map_np_arrays/saliency_maps.npy" in paths
        assert "Image_saliency_maps.png" in {f.path for f in client.list_artifacts(run.info.run_id)}
    ranked = sorted((r.data.metrics["Predicted_class_conf"] for r in evals.values()
                     if r.data.tags["Predicted_class"] == "4" and r.data.metrics["Predicted_class_conf"] >= 0.9),
                    reverse=True)
    assert sorted(confs, reverse=True) == ranked[: len(confs)]


@pytest.mark.with_upstream
def test_shortcuts_build_the_same_selection(run_stage, client):
    run_stage("query.min_conf=0.9", "query.predicted_class=4", "query.max_results=2", "evaluation.num_images=100")
    runs = _runs(client, "MLPClassifier - Saliency Map Generation")
    assert len(runs) == 2
    assert all(r.data.tags["Predicted_class"] == "4" and r.data.metrics["Predicted_class_conf"] >= 0.9 for r in runs)


@pytest.mark.with_upstream
def test_query_matching_nothing_fails_before_any_saliency_run(run_stage, client):
    run_stage("stage=train")
    with pytest.raises(QueryError, match="matched no evaluation run"):
        run_stage("query.min_conf=1.0", "query.predicted_class=nine")
    exp = client.get_experiment_by_name("MLPClassifier - Saliency Map Generation")
    assert exp is None or not client.search_runs([exp.experiment_id])


@pytest.mark.with_upstream
def test_editing_a_saliency_run_rewrites_it_for_the_new_image(run_stage, client):
    run_stage("query.predicted_class=4")
    (run,) = _runs(client, "MLPClassifier - Saliency Map Generation")
    assert run.data.tags["Predicted_class"] == "4"
    run_stage("stage=saliency", "query.predicted_class=9", f"update_run_id={run.info.run_id}")
    (edited,) = _runs(client, "MLPClassifier - Saliency Map Generation")
    assert edited.info.run_id == run.info.run_id and edited.info.status == "FINISHED"
    assert edited.data.tags["Predicted_class"] == "9" and edited.data.tags["Modified_run"] == "True"
    assert edited.data.tags["Image_id"] != run.data.tags["Image_id"]
    local = client.download_artifacts(run.info.run_id, "saliency_map_np_arrays/image.npy")
    ctx_img = np.load(local)
    from xaitk_exp.data import Digits

    assert np.array_equal(ctx_img, Digits().load().test_images[int(edited.data.tags["Image_id"])])


@pytest.mark.with_upstream
def test_editing_with_other_params_is_refused_with_the_way_out(run_stage, client):
    run_stage()
    (run,) = _runs(client, "MLPClassifier - Saliency Map Generation")
    with pytest.raises(ConfigError, match="params are immutable: drop update_run_id"):
        run_stage("stage=saliency", "saliency.stride=[2,2]", f"update_run_id={run.info.run_id}")
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


@pytest.mark.with_upstream
def test_second_run_reuses_train_and_evaluation_unless_forced(run_stage, client):
    run_stage()
    run_stage("saliency=rise", "saliency.n=100")
    assert len(_runs(client, "MLPClassifier - Train")) == 1
    assert len(_runs(client, "MLPClassifier - Evaluation", "tags.Run_type = 'summary'")) == 1
    run_stage("force=true", "stage=train")
    assert len(_runs(client, "MLPClassifier - Train")) == 2


def test_evaluation_without_a_train_run_says_what_to_do(run_stage):
    with pytest.raises(TrackingError, match="run stage=train first"):
        run_stage("stage=evaluation")


def test_pretrained_model_is_explained_without_training(run_stage, client, tmp_path):
    run_stage("stage=train")
    (train,) = _runs(client, "MLPClassifier - Train")
    ctx = run_stage("model=pretrained", f"model.uri=runs:/{train.info.run_id}/sklearn-model", "evaluation.num_images=5")
    assert len(_runs(client, "MLPClassifier - Train")) == 1
    evals = _runs(client, "MLPClassifier - Evaluation", "tags.Run_type = 'image'")
    assert len(evals) == 5 and all(r.data.tags["Train_run_id"] == train.info.run_id for r in evals)
    assert len(ctx.results["saliency_run_ids"]) == 1


@pytest.mark.parametrize("algorithm", ["sliding_window", "rise", "mc_rise"])
def test_stored_map_equals_direct_xaitk_bit_for_bit(run_stage, client, algorithm):
    import mlflow.sklearn
    from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.mc_rise import MCRISEStack
    from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.rise import RISEStack
    from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.slidingwindow import SlidingWindowStack

    from xaitk_exp.data import Digits
    from xaitk_exp.models.blackbox import SklearnBlackbox

    overrides = [f"saliency={algorithm}", "seed=7"] + ([] if algorithm == "sliding_window" else ["saliency.n=300"])
    run_stage(*overrides)
    (run,) = _runs(client, "MLPClassifier - Saliency Map Generation")
    stored = np.load(client.download_artifacts(run.info.run_id, "saliency_map_np_arrays/saliency_maps.npy"))
    (train,) = _runs(client, "MLPClassifier - Train")
    model = mlflow.sklearn.load_model(f"runs:/{train.info.run_id}/sklearn-model")
    image = Digits(seed=7).load().test_images[int(run.data.tags["Image_id"])]
    if algorithm == "sliding_window":
        gen = SlidingWindowStack(window_size=(2, 2), stride=(1, 1), threads=0)
        gen.fill = 0
    elif algorithm == "rise":
        gen = RISEStack(n=300, s=4, p1=0.5, seed=7, threads=0, debiased=True)
        gen.fill = 0
    else:
        gen = MCRISEStack(n=300, s=4, p1=0.5, fill_colors=[[0], [1]], seed=7, threads=0)
        image = image[..., None]
    direct = gen(image, SklearnBlackbox(model, chunk_size=256))
    if algorithm == "mc_rise":  # stored maps mean positive = evidence for the class: MC-RISE's own sign is flipped
        direct = -direct
    assert stored.dtype == direct.dtype and stored.shape == direct.shape
    assert np.array_equal(stored, direct)


@pytest.mark.with_upstream
def test_black_box_checks_counts_and_batches(run_stage):
    from xaitk_exp.models.blackbox import SklearnBlackbox

    ctx = run_stage("stage=train")
    bb = SklearnBlackbox(ctx.model, chunk_size=64)
    imgs = ctx.split.test_images[:150]
    out = list(bb.classify_images(iter(imgs)))
    assert len(out) == 150 and bb.n_calls == 3
    assert list(out[0]) == list(range(10))
    assert np.allclose([out[5][c] for c in range(10)], ctx.model.predict_proba(imgs[5:6].reshape(1, -1))[0])


def test_artifacts_stay_under_the_store_folder(run_stage, tmp_path):
    run_stage("stage=train")
    assert (tmp_path / "mlartifacts").is_dir()
    assert not (Path.cwd() / "mlruns").exists()


def test_running_leaves_the_environment_alone(run_stage, monkeypatch):
    import os

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_stage("stage=train", "logging=mid")
    assert "MLFLOW_TRACKING_URI" not in os.environ  # else later jobs and subprocesses would inherit this store


def _nest_the_old_way(client, summary_id: str) -> list:
    """Rewrite an evaluation's image runs as stores written before kept them: nested under the summary run
    (``mlflow.parentRunId``), without the linking tag."""
    images = _runs(client, "MLPClassifier - Evaluation", f"tags.Evaluation_summary_run_id = '{summary_id}'")
    assert images
    for run in images:
        client.delete_tag(run.info.run_id, "Evaluation_summary_run_id")
        client.set_tag(run.info.run_id, "mlflow.parentRunId", summary_id)
    return images


@pytest.mark.with_upstream
def test_a_store_with_nested_image_runs_still_reads(run_stage, client, capsys):
    """Stores written before nested the image runs under their summary: selection, reuse, an image run's id as
    evaluation_run_id and the reproduction of an evaluation still find them."""
    (summary,) = _runs(client, "MLPClassifier - Evaluation", "tags.Run_type = 'summary'")
    summary_id = summary.info.run_id
    images = _nest_the_old_way(client, summary_id)
    assert _runs(client, "MLPClassifier - Evaluation", f"tags.Evaluation_summary_run_id = '{summary_id}'") == []
    best = max(images, key=lambda r: r.data.metrics["Predicted_class_conf"])
    # reuse of the finished evaluation, then the query over its nested image runs
    ctx = run_stage("stage=all", "saliency=rise", "saliency.n=50", "query.max_results=2")
    assert ctx.evaluation_run_id == summary_id
    assert "[evaluation] reusing run" in capsys.readouterr().out
    explained = [client.get_run(i) for i in ctx.results["saliency_run_ids"]]
    assert len(explained) == 2 and explained[0].data.tags["Evaluation_run_id"] == best.info.run_id
    assert {r.data.tags["Evaluation_run_id"] for r in explained} <= {r.info.run_id for r in images}
    # an image run's id names its (nested) evaluation
    ctx = run_stage("stage=saliency", "saliency=rise", "saliency.n=50",
                    f"evaluation_run_id={images[0].info.run_id}", f"query.filter=\"tags.Image_id = '{images[0].data.tags['Image_id']}'\"")
    assert ctx.evaluation_run_id == summary_id
    # the reproduction of the old evaluation compares its nested image runs with the new, linked ones
    out = run_stage("stage=reproduce", f"run_id={summary_id}")
    new = client.get_run(out.results["reproduce_run_id"])
    assert new.data.tags["reproduced_match"] == "True", new.data.tags.get("reproduced_differs")


def test_a_recorded_onnx_model_has_a_description_and_links(run_stage, client, tmp_path, capsys):
    """``model=onnx`` at the train stage records the model (not trains it): that run too says what it is and where
    it is, also when a later command reuses it."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "models"))
    import model_zoo

    images, labels = model_zoo.colour_digits(n=12, size=16)
    folder = model_zoo.write_folder(tmp_path / "photos", images, labels)
    model = model_zoo.linear_onnx(tmp_path / "linear.onnx", n_classes=10, size=16)
    ov = ["stage=train", "model=onnx", f"model.path={model}", "dataset=image_folder", f"dataset.path={folder}",
          "dataset.grayscale=false", "dataset.shape=[16,16]"]
    for reused in (False, True):
        ctx = run_stage(*ov)
        out = capsys.readouterr().out
        run = client.get_run(ctx.train_run_id)
        note = run.data.tags["mlflow.note.content"]
        assert "recorded as it is (not trained here)" in note and run.data.tags["Model_sha256"] in note
        assert f"[train] run: http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}" in out
        assert ("reusing run" in out) == reused

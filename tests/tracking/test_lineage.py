"""Lineage MLflow shows by itself: dataset inputs, logged models, registered versions loaded by alias or version
(bit-identical maps, ``stage=reproduce`` agrees), and saliency maps as MLflow images. Real SQLite stores, real
models; the three levels' equality is in test_levels.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xaitk_exp.errors import ConfigError

BASE = ["progress=false", "evaluation.num_images=6", "query.max_results=2", "metrics.mufidelity.subsets=8"]
MAPS = "saliency_map_np_arrays/saliency_maps.npy"


def _run(folder: Path, *extra: str):
    from xaitk_exp.app import compose_config, run

    overrides = [f"tracking.uri=sqlite:///{folder / 'mlflow.db'}", *BASE, *extra]
    return run(compose_config(overrides), overrides, folder)


def _client(folder: Path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")


def _runs(client, experiment: str, flt: str = ""):
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], flt, max_results=1000, order_by=["attributes.start_time DESC"])


def _maps(client, runs, tmp: Path) -> dict[str, bytes]:
    out = {}
    for r in runs:
        out[r.data.tags["Image_id"]] = np.load(client.download_artifacts(r.info.run_id, MAPS, str(tmp))).tobytes()
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One job that trains and registers ``lineage-mlp@champion`` (logging=low), then one that explains the model
    loaded by that alias (logging=mid)."""
    folder = tmp_path_factory.mktemp("lineage")
    _run(folder, "logging=low", "model.register=lineage-mlp@champion")
    _run(folder, "logging=mid", "model=pretrained", "model.uri=models:/lineage-mlp@champion")
    return folder


def test_train_and_evaluation_log_the_data_as_a_dataset_input_with_the_fingerprint_as_digest(store):
    client = _client(store)
    (train,) = _runs(client, "MLPClassifier - Train")
    summaries = _runs(client, "MLPClassifier - Evaluation", "tags.Run_type = 'summary'")
    assert len(summaries) == 2  # the trained model's, the registered one's
    for run, context in [(train, "train")] + [(s, "test") for s in summaries]:
        (ds,) = run.inputs.dataset_inputs
        assert ds.dataset.name == "digits"
        assert ds.dataset.digest == run.data.tags["data_fingerprint"]
        assert ds.dataset.source_type == "local" and "digits.csv.gz" in ds.dataset.source
        assert {t.key: t.value for t in ds.tags} == {"mlflow.data.context": context}
    # the UI's dataset.* filters
    exp = client.get_experiment_by_name("MLPClassifier - Evaluation").experiment_id
    found = set()
    for summary in summaries:  # the registered model, not trained here, is evaluated on every image: its own digest
        digest = summary.data.tags["data_fingerprint"]
        found |= {r.info.run_id for r in client.search_runs(
            [exp], f"dataset.name = 'digits' AND dataset.digest = '{digest}' AND dataset.context = 'test'")}
    assert found == {s.info.run_id for s in summaries}
    assert len({s.data.tags["data_fingerprint"] for s in summaries}) == 2  # the test split, every image
    # per-image runs carry no dataset input (one more store call each: see benchmarks/bench_lineage.py)
    image = _runs(client, "MLPClassifier - Evaluation", "tags.Run_type = 'image'")[0]
    assert not image.inputs.dataset_inputs


def test_logged_model_links_the_train_run_and_the_evaluations(store, tmp_path):
    client = _client(store)
    (train,) = _runs(client, "MLPClassifier - Train")
    (model,) = client.search_logged_models([train.info.experiment_id])
    assert (model.name, model.source_run_id, str(model.status)) == ("MLPClassifier", train.info.run_id, "READY")
    assert [o.model_id for o in train.outputs.model_outputs] == [model.model_id]
    for summary in _runs(client, "MLPClassifier - Evaluation", "tags.Run_type = 'summary'"):
        summary = client.get_run(summary.info.run_id)  # search_runs leaves model inputs out
        assert [m.model_id for m in summary.inputs.model_inputs] == [model.model_id]
        assert summary.data.tags["Train_run_id"] == train.info.run_id
    accuracy = [m for m in model.metrics if m.key == "Accuracy"]
    assert len(accuracy) == 2 and {m.dataset_name for m in accuracy} == {"digits"}
    # the run's own sklearn-model/ folder is still there, listed once, even from a process whose global tracking URI
    # is another store (MLflow resolves a same-named logged model's files through it); runs:/ URIs load
    import mlflow
    import mlflow.sklearn

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'elsewhere.db'}")
    try:
        files = [f.path for f in client.list_artifacts(train.info.run_id, "sklearn-model")]
    finally:
        mlflow.set_tracking_uri(previous)
    assert "sklearn-model/model.skops" in files and len(files) == len(set(files))
    assert hasattr(mlflow.sklearn.load_model(f"runs:/{train.info.run_id}/sklearn-model"), "predict_proba")


def test_registered_model_by_alias_records_its_version(store, tmp_path):
    client = _client(store)
    (train,) = _runs(client, "MLPClassifier - Train")
    assert (train.data.tags["Registered_model"], train.data.tags["Model_version"]) == ("lineage-mlp", "1")
    (version,) = client.search_model_versions("name = 'lineage-mlp'")
    assert version.run_id == train.info.run_id
    assert client.get_registered_model("lineage-mlp").aliases == {"champion": 1}
    summaries = _runs(client, "MLPClassifier - Evaluation", "tags.Run_type = 'summary'")
    # the job that registered the model and the one that loaded it by alias both evaluate version 1 of it
    for summary in summaries:
        tags = summary.data.tags
        assert (tags["Registered_model"], tags["Model_version"]) == ("lineage-mlp", "1")
        assert tags["Train_run_id"] == train.info.run_id
    assert summaries[0].data.tags["config_hash"] != summaries[1].data.tags["config_hash"]  # pretrained vs mlp
    saliency = _runs(client, "MLPClassifier - Saliency Map Generation")
    by_evaluation: dict[str, list] = {}
    for r in saliency:
        by_evaluation.setdefault(r.data.tags["Evaluation_summary_run_id"], []).append(r)
    assert set(by_evaluation) == {s.info.run_id for s in summaries}
    # the two jobs explain different images (the registered model, not trained here, sees every image): each has
    # its two maps; that a job on the alias gives the same maps again is test_version_uri...'s reproduce MATCH
    for s in summaries:
        maps = _maps(client, by_evaluation[s.info.run_id], tmp_path / s.info.run_id)
        assert len(maps) == 2 and all(len(m) > 0 for m in maps.values())


def test_version_uri_records_its_version_and_reproduce_of_an_alias_job_matches(store, capsys):
    client = _client(store)
    alias_summary = _runs(client, "MLPClassifier - Evaluation", "tags.Run_type = 'summary'")[0]  # the latest job
    ctx = _run(store, "logging=low", "model=pretrained", "model.uri=models:/lineage-mlp/1", "stage=evaluation",
               "force=true")
    summary = client.get_run(ctx.evaluation_run_id)
    assert (summary.data.tags["Model_version"], summary.data.tags["Registered_model"]) == ("1", "lineage-mlp")
    (train,) = _runs(client, "MLPClassifier - Train")
    assert summary.data.tags["Train_run_id"] == train.info.run_id
    # a saliency run of the job that loaded models:/lineage-mlp@champion, reproduced from the store alone
    target = _runs(client, "MLPClassifier - Saliency Map Generation",
                   f"tags.Evaluation_summary_run_id = '{alias_summary.info.run_id}'")[0]
    capsys.readouterr()
    ctx = _run(store, "logging=low", "stage=reproduce", f"run_id={target.info.run_id}")
    new = client.get_run(ctx.results["reproduce_run_id"])
    assert new.data.tags["reproduced_match"] == "True", new.data.tags.get("reproduced_differs")
    assert "MATCH" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("uri", "listed"),
    [
        ("models:/lineage-mlp@nope", "aliases: @champion -> 1"),
        ("models:/lineage-mlp/9", "versions of 'lineage-mlp': 1"),
        ("models:/nope@champion", "registered models: lineage-mlp"),
    ],
)
def test_unknown_registered_model_is_one_line_naming_what_exists(store, uri, listed):
    client = _client(store)
    before = len(_runs(client, "MLPClassifier - Evaluation"))
    with pytest.raises(ConfigError) as err:
        _run(store, "logging=low", "model=pretrained", f"model.uri={uri}", "force=true")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"model.uri={uri!r}") and listed in message
    assert len(_runs(client, "MLPClassifier - Evaluation")) == before  # stopped before any run
    running = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id],
                                                                                  "attributes.status = 'RUNNING'")]
    assert not running


@pytest.mark.parametrize("value", ["a/b", "x@latest", "x@v2", "x@bad alias", "@alias"])
def test_bad_register_value_stops_before_anything_runs(tmp_path, value):
    with pytest.raises(ConfigError) as err:
        _run(tmp_path, f"model.register={value}")
    assert str(err.value).startswith(f"model.register={value!r}")
    assert not (tmp_path / "mlflow.db").exists()


def test_saliency_runs_log_their_picture_as_an_mlflow_image_beside_the_seed_artifacts(store):
    client = _client(store)
    for run in _runs(client, "MLPClassifier - Saliency Map Generation"):
        assert run.data.tags["mlflow.loggedImages"] == "True"
        images = [f.path for f in client.list_artifacts(run.info.run_id, "images")]
        assert len(images) == 2, images
        assert all(p.startswith("images/saliency~sliding_window+step+0+timestamp+") for p in images)
        assert {Path(p).suffix for p in images} == {".png", ".webp"}
        root = {f.path for f in client.list_artifacts(run.info.run_id)}
        assert {"Image_saliency_maps.png", "saliency_map_np_arrays"} <= root


def test_registering_a_reused_train_run_again_makes_no_new_version(store):
    _run(store, "logging=low", "stage=train", "model.register=lineage-mlp@champion")
    client = _client(store)
    assert len(_runs(client, "MLPClassifier - Train")) == 1  # reused
    assert [str(v.version) for v in client.search_model_versions("name = 'lineage-mlp'")] == ["1"]

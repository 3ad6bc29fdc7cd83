"""Shards with an image model: a TorchScript CNN (``model=torch``) on a small image folder, at logging=high and mid.
The sharded evaluation's summary (built from the shards' saved outputs: the merge runs no model) and its image runs,
and the sharded saliency maps, equal one process's bit for bit (real SQLite stores, real xaitk-saliency). The
in-process sweep steps are the callback's: open the summary, run each shard's job, merge."""

from __future__ import annotations

import json
from pathlib import Path

import model_zoo
import numpy as np
import pytest

from xaitk_exp import schema

torch = pytest.importorskip("torch")

PRE = ["model.preprocess.mean=[0.2,0.2,0.2]", "model.preprocess.std=[0.3,0.3,0.3]"]
MAPS = f"{schema.NPY_DIR}/{schema.MAPS_NPY}"


@pytest.fixture(scope="module")
def cnn(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("cnn")
    images, labels = model_zoo.colour_digits(n=20, seed=2)  # every image is evaluated (no train split)
    return {"ts": str(model_zoo.save_torchscript(model_zoo.train_cnn(epochs=1), root / "cnn.pt")),
            "folder": str(model_zoo.write_folder(root / "digits", images, labels))}


def _by_image(client, experiment: str, kind: str) -> dict[str, object]:
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], f"tags.{schema.RUN_TYPE} = '{kind}'", max_results=1000)
    return {r.data.tags.get(schema.IMAGE_ID, kind): r for r in runs}


@pytest.mark.slow
@pytest.mark.parametrize("level", ["high", "mid"])
def test_a_sharded_torch_model_equals_one_process(cnn, make_cfg, run_stage, tmp_path: Path, monkeypatch,
                                                 level: str) -> None:
    from mlflow import MlflowClient

    from xaitk_exp.app import run
    from xaitk_exp.models.blackbox import BatchedBlackbox
    from xaitk_exp.sweep.shards import merge_shards, open_shards

    common = ["model=torch", f"model.path={cnn['ts']}", *PRE, "dataset=image_folder", "dataset.grayscale=false",
              f"dataset.path={cnn['folder']}", f"logging={level}", "chunk_size=6", "evaluation.num_images=null",
              "saliency=sliding_window", "saliency.window_size=[8,8]", "saliency.stride=[8,8]",
              "metrics.enabled=false", "query.max_results=3"]
    uris = {}
    for name in ("one", "sharded"):
        (tmp_path / name).mkdir()
        uris[name] = f"sqlite:///{tmp_path / name / 'mlflow.db'}"
    one, sharded = MlflowClient(uris["one"]), MlflowClient(uris["sharded"])
    calls = [0]
    predict_all = BatchedBlackbox.predict_all

    def counted(self, images):
        calls[0] += 1
        return predict_all(self, images)

    monkeypatch.setattr(BatchedBlackbox, "predict_all", counted)

    # one process
    run_stage("stage=train", *common, uri=uris["one"])
    reference = run_stage("stage=evaluation", *common, uri=uris["one"]).evaluation_run_id
    one_maps = run_stage("stage=saliency", *common, uri=uris["one"]).results["saliency_run_ids"]

    # the sweep's steps, in this process: summary opened, 2 shards (4 chunks of 6: two each), merged
    tracker = run_stage("stage=train", *common, uri=uris["sharded"]).tracker
    parent = tracker.start_run(tracker.experiment("Sweeps"), "sweep", {schema.RUN_TYPE: "sweep"})
    jobs = [([], make_cfg("stage=evaluation", *common, "shards=2", f"shard={k}", f"sweep_run_id={parent}",
                          uri=uris["sharded"])) for k in (0, 1)]
    groups = open_shards(jobs, parent, tracker, tmp_path / "upstream")
    for _, job in jobs:
        run(job, [], tmp_path)
    before = calls[0]
    assert merge_shards(groups, tracker, parent, tmp_path) == []
    assert calls[0] == before, "the merge read the shards' saved outputs, not the model"

    experiment = "cnn - Evaluation"
    mine, theirs = _by_image(one, experiment, "image"), _by_image(sharded, experiment, "image")
    assert len(mine) == 20 and set(mine) == set(theirs)
    for k, run_ in theirs.items():
        assert run_.data.metrics == mine[k].data.metrics, f"image {k}"
        assert run_.data.tags[schema.PREDICTED_CLASS] == mine[k].data.tags[schema.PREDICTED_CLASS]
        assert run_.data.tags[schema.SHARD] in ("0/2", "1/2")
    summary = groups[0].summary
    assert sharded.get_run(summary).info.status == "FINISHED"
    assert sharded.get_run(summary).data.metrics == one.get_run(reference).data.metrics
    assert schema.ACCURACY in one.get_run(reference).data.metrics

    def table(client, run_id: str) -> dict:
        path = client.download_artifacts(run_id, schema.CONFUSION_TABLE, str(tmp_path / run_id))
        return json.loads(Path(path).read_text())

    assert table(sharded, summary) == table(one, reference)

    # sharded saliency: what one process selects, split, bit-identical maps
    parts = [run_stage("stage=saliency", *common, "shards=2", f"shard={k}", uri=uris["sharded"])
             .results["saliency_run_ids"] for k in (0, 1)]
    assert sorted(len(p) for p in parts) == [1, 2]

    def image(client, run_id: str) -> str:
        return client.get_run(run_id).data.tags[schema.IMAGE_ID]

    a = {image(one, r): r for r in one_maps}
    b = {image(sharded, r): r for p in parts for r in p}
    assert set(a) == set(b) and len(b) == 3
    for k in a:
        x = np.load(one.download_artifacts(a[k], MAPS, str(tmp_path / "a" / k)))
        y = np.load(sharded.download_artifacts(b[k], MAPS, str(tmp_path / "b" / k)))
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), f"image {k}: maps differ"
        assert sharded.get_run(b[k]).data.metrics == one.get_run(a[k]).data.metrics

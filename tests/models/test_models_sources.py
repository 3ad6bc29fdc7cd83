"""ONNX Runtime, PyTorch and MAITE classifiers on colour images: the black box, the config, and the stages end to end
against a real SQLite store, compared with direct xaitk-saliency calls through the same black box."""

from __future__ import annotations

import json
import re
from pathlib import Path

import model_zoo
import numpy as np
import pytest

from xaitk_exp.errors import ConfigError, XaitkExpError

pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

PRE = ["model.preprocess.mean=[0.2,0.2,0.2]", "model.preprocess.std=[0.3,0.3,0.3]"]
FOLDER = ["dataset=image_folder", "dataset.grayscale=false", "dataset.shape=[32,32]"]
RISE = ["saliency=rise", "saliency.n=60", "saliency.s=4", "saliency.fill=0", "chunk_size=16",
        "metrics.mufidelity.subsets=8"]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """The trained CNN and its files (TorchScript, state_dict, ONNX), and image folders of colour digits."""
    root = tmp_path_factory.mktemp("zoo")
    cnn = model_zoo.train_cnn(epochs=3)
    weights = {k: v.detach().numpy() for k, v in cnn.state_dict().items()}
    images, labels = model_zoo.colour_digits(n=60, seed=1)
    return {
        "cnn": cnn,
        "ts": str(model_zoo.save_torchscript(cnn, root / "small_cnn.pt")),
        "sd": str(model_zoo.save_state_dict(cnn, root / "small_cnn_state.pt")),
        "onnx": str(model_zoo.cnn_onnx(weights, root / "small_cnn.onnx")),
        "onnx32": str(model_zoo.cnn_onnx(weights, root / "fixed32.onnx", size=32)),
        "folder": str(model_zoo.write_folder(root / "digits", images, labels)),
        "named": str(model_zoo.write_folder(root / "named", images[:30], labels[:30],
                                            ["zero", "one", "two", "three", "four", "five", "six", "seven",
                                             "eight", "nine"])),
        "flat": str(model_zoo.write_folder(root / "flat", images[:12], None)),
        "empty": str((root / "empty").mkdir() or root / "empty"),
        "images": images,
        "labels": labels,
        "root": root,
    }


def source_overrides(zoo, source: str) -> list[str]:
    if source == "onnx":
        return ["model=onnx", f"model.path={zoo['onnx']}", *PRE]
    if source == "torch":
        return ["model=torch", f"model.path={zoo['ts']}", *PRE]
    if source == "torch-class":
        return ["model=torch", "model._target_=model_zoo.SmallCNN", f"model.weights={zoo['sd']}",
                "model.name=SmallCNN", "allow_targets=[model_zoo.]", *PRE]
    if source == "maite":
        return ["model=maite", "model._target_=model_zoo.maite_cnn", f"+model.args.script_path={zoo['ts']}",
                "allow_targets=[model_zoo.]", *PRE]
    raise ValueError(source)


def image_model(make_cfg, *overrides):
    from xaitk_exp.models.sources import build_image_model
    from xaitk_exp.settings.nodes import to_dict

    cfg = make_cfg(*overrides)
    model = build_image_model(to_dict(cfg.model), list(cfg.allow_targets))
    model.check_images((32, 32, 3))
    return model


# ----- the black box ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["onnx", "torch", "torch-class", "maite"])
def test_every_source_scores_like_the_network_itself(zoo, make_cfg, source):
    """Preprocessing happens inside: images in [0, 1] in, the CNN's softmax out, same as calling torch directly."""
    from xaitk_exp.models.blackbox import blackbox_for

    model = image_model(make_cfg, *source_overrides(zoo, source))
    images = zoo["images"][:7]
    x = torch.from_numpy(((images - np.float32(0.2)) / np.float32(0.3)).transpose(0, 3, 1, 2).copy())
    with torch.inference_mode():
        expected = torch.softmax(zoo["cnn"](x), dim=1).numpy()
    bb = blackbox_for(model, chunk_size=3)
    probs = bb.predict(images)
    assert probs.shape == (7, 10)
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert bb.n_calls == 3  # 7 images in chunks of 3
    rows = list(bb.classify_images(iter(images)))  # a lazy iterator, as xaitk-saliency passes
    assert len(rows) == 7 and all(list(r) == list(range(10)) for r in rows)
    np.testing.assert_array_equal(np.array([[r[c] for c in range(10)] for r in rows]), probs)
    if source == "maite":
        assert model.class_names == [f"digit-{i}" for i in range(10)]  # from metadata index2label


@pytest.mark.parametrize("source", ["onnx", "torch", "torch-class"])
def test_the_runtime_reports_where_the_model_runs(zoo, make_cfg, source):
    """``device=auto`` takes a GPU where the runtime has one, else the CPU; ``runtime_device()`` asks the loaded
    session / module itself (benchmarks/check_gpu.py uses it to check ``device=cuda`` on a GPU machine)."""
    import onnxruntime
    import torch

    has_cuda = torch.cuda.is_available() if source != "onnx" else (
        "CUDAExecutionProvider" in onnxruntime.get_available_providers())
    assert image_model(make_cfg, *source_overrides(zoo, source), "model.device=cpu").runtime_device() == "cpu"
    auto = image_model(make_cfg, *source_overrides(zoo, source), "model.device=auto").runtime_device()
    assert auto.startswith("cuda") == has_cuda, auto


def test_layout_and_normalisation_apply_after_the_perturbation():
    from xaitk_exp.models.preprocess import Preprocess

    images = np.random.default_rng(0).uniform(size=(2, 4, 5, 3))
    pre = Preprocess.from_config({"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.1, 0.5], "layout": "NCHW"})
    out = pre(images)
    assert out.dtype == np.float32 and out.shape == (2, 3, 4, 5)
    np.testing.assert_allclose(out[1, 2], (images[1, :, :, 2] - 0.3) / 0.5, rtol=1e-6)
    assert Preprocess.from_config({"layout": "NHWC"})(images).shape == (2, 4, 5, 3)
    assert Preprocess()(images[..., 0]).shape == (2, 1, 4, 5)  # grayscale gets its channel axis


def test_a_model_that_returns_too_few_rows_is_refused(zoo, make_cfg):
    from xaitk_exp.models.blackbox import blackbox_for

    model = image_model(make_cfg, *source_overrides(zoo, "onnx"))
    runtime_scores = model._scores
    model._scores = lambda rt, batch: runtime_scores(rt, batch)[:-1]
    with pytest.raises(RuntimeError, match="for 5 images"):
        list(blackbox_for(model, chunk_size=5).classify_images(iter(zoo["images"][:5])))


def test_onnx_metadata_names_and_fixed_batch_of_one(zoo, make_cfg, tmp_path):
    weights = {k: v.detach().numpy() for k, v in zoo["cnn"].state_dict().items()}
    names = [f"d{i}" for i in range(10)]
    path = model_zoo.cnn_onnx(weights, tmp_path / "named.onnx", names=names)
    model = image_model(make_cfg, "model=onnx", f"model.path={path}", *PRE)
    assert model.class_names == names and model.display_name == "named"


@pytest.mark.parametrize("source", ["onnx", "torch", "maite"])
def test_maps_equal_direct_xaitk_calls(zoo, make_cfg, source):
    """A RISE stack and a sliding window called directly on the black box give the maps the stage's code gives."""
    from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.rise import RISEStack
    from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.slidingwindow import SlidingWindowStack

    from xaitk_exp.models.blackbox import blackbox_for
    from xaitk_exp.stages.saliency.image import ExplainSpec, ImageTask, iter_explained

    model = image_model(make_cfg, *source_overrides(zoo, source))
    image = zoo["images"][3]
    for saliency, direct in (
        ({"_target_": "xaitk_saliency.impls.gen_image_classifier_blackbox_sal.rise.RISEStack", "name": "rise",
          "n": 50, "s": 4, "p1": 0.5, "seed": 0, "threads": 0, "fill": 0},
         RISEStack(n=50, s=4, p1=0.5, seed=0, threads=0)),
        ({"_target_": "xaitk_saliency.impls.gen_image_classifier_blackbox_sal.slidingwindow.SlidingWindowStack",
          "name": "sliding_window", "window_size": [8, 8], "stride": [4, 4], "threads": 0, "fill": 0},
         SlidingWindowStack(window_size=(8, 8), stride=(4, 4), threads=0)),
    ):
        direct.fill = 0
        expected = direct(image, blackbox_for(model, 16))
        spec = ExplainSpec(saliency, (32, 32, 3), ("model_zoo.",), model, 16, [str(i) for i in range(10)])
        folder = Path(make_cfg().tracking.uri[len("sqlite:///"):]).parent / f"img-{source}-{saliency['name']}"
        evaluation = {"run_id": "", "experiment_id": "", "tags": {"Predicted_class": "3"}, "conf": None}
        task = ImageTask(3, image, evaluation, str(folder))
        (result,) = list(iter_explained(spec, [task]))
        maps = np.load(Path(result.folder, "saliency_map_np_arrays", "saliency_maps.npy"))
        assert maps.shape == (10, 32, 32)
        np.testing.assert_allclose(maps, expected, atol=1e-6)
        assert result.map_classes == [str(i) for i in range(10)]


# ----- the stages end to end ----------------------------------------------------------------------------------------
def _flavours(client, run_id: str) -> set[str]:
    import yaml

    text = Path(client.download_artifacts(run_id, "model/MLmodel")).read_text()
    return set(yaml.safe_load(text)["flavors"])


def _logged_model(client, run):
    models = client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'")
    return models[0] if models else None


def _exp_runs(client, name, flt=""):
    exp = client.get_experiment_by_name(name)
    assert exp is not None, f"missing experiment {name!r}"
    return client.search_runs([exp.experiment_id], filter_string=flt, max_results=1000)


@pytest.mark.parametrize("source", ["onnx", "torch-class", "maite"])
def test_pipeline_records_links_and_explains(zoo, run_stage, client, source):
    from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.rise import RISEStack

    from xaitk_exp.models.blackbox import blackbox_for

    ov = [*source_overrides(zoo, source), *FOLDER, f"dataset.path={zoo['folder']}", *RISE,
          "evaluation.num_images=4", "query.max_results=2"]
    if source == "maite":  # its metadata names the classes digit-<i>: map the folders onto them
        ov.append("dataset.class_map={" + ",".join(f"{i}:digit-{i}" for i in range(10)) + "}")
    ctx = run_stage(*ov)
    name = {"onnx": "small_cnn", "torch-class": "SmallCNN", "maite": "maite_cnn"}[source]
    (train,) = _exp_runs(client, f"{name} - Train")
    model = ctx.model
    assert train.info.status == "FINISHED"
    assert train.data.tags["Model_sha256"] == model.sha256 and train.data.params["sha256"] == model.sha256
    arts = {f.path for f in client.list_artifacts(train.info.run_id, "model")}
    assert "model/model_info.json" in arts
    fmt = {"onnx": "mlflow.onnx", "torch-class": "mlflow.pytorch/pt2", "maite": "none"}[source]
    assert train.data.tags["Model_format"] == fmt
    if source != "maite":  # an MLflow model of its flavour, and the run's logged model
        assert {"onnx": "onnx", "torch-class": "pytorch"}[source] in _flavours(client, train.info.run_id)
        assert _logged_model(client, train) is not None
    info = json.loads(Path(client.download_artifacts(train.info.run_id, "model/model_info.json")).read_text())
    assert info["n_classes"] == 10 and len(info["class_names"]) == 10
    images = _exp_runs(client, f"{name} - Evaluation", "tags.Run_type = 'image'")
    assert len(images) == 4
    for run in images:
        t, m = run.data.tags, run.data.metrics
        assert t["Train_run_id"] == train.info.run_id
        assert t["GT_class"] in [str(i) for i in range(10)] and "Predicted_label" in t
        assert {f"Class_{i}_conf" for i in range(10)} <= set(m)
    (summary,) = _exp_runs(client, f"{name} - Evaluation", "tags.Run_type = 'summary'")
    assert summary.data.metrics["Accuracy"] > 0.5  # the CNN learnt something
    sal = _exp_runs(client, f"{name} - Saliency Map Generation")
    assert len(sal) == 2 and all(r.info.status == "FINISHED" for r in sal)
    bb = blackbox_for(model, 16)
    for run in sal:
        k = int(run.data.tags["Image_id"])
        stored = np.load(client.download_artifacts(run.info.run_id, "saliency_map_np_arrays/saliency_maps.npy"))
        gen = RISEStack(n=60, s=4, p1=0.5, seed=0, threads=0)
        gen.fill = 0
        np.testing.assert_allclose(stored, gen(ctx.split.test_images[k], bb), atol=1e-6)
        assert run.data.tags["Map_classes"] == ",".join(str(i) for i in range(10))
        assert "Deletion_AUC" in run.data.metrics
    # a second run reuses everything; the same model is found for stage=saliency alone
    ctx2 = run_stage(*ov)
    assert ctx2.train_run_id == train.info.run_id
    assert len(_exp_runs(client, f"{name} - Saliency Map Generation")) == 2
    if source == "onnx":  # reproduction from the store alone: same file, same maps bit for bit
        ctx3 = run_stage("stage=reproduce", f"run_id={sal[0].info.run_id}", "allow_targets=[model_zoo.]")
        new = client.get_run(ctx3.results["reproduce_run_id"])
        assert new.data.tags["reproduced_match"] == "True", new.data.tags.get("reproduced_differs")


FLAVOUR_CASES = {  # source: (config key of its file, zoo file, format tag, MLflow flavour, experiment prefix)
    "onnx": ("path", "onnx", "mlflow.onnx", "onnx", "small_cnn"),
    "torch": ("path", "ts", "mlflow.pytorch/torchscript", "pytorch", "small_cnn"),
    "torch-class": ("weights", "sd", "mlflow.pytorch/pt2", "pytorch", "SmallCNN"),
}


@pytest.mark.parametrize("source", list(FLAVOUR_CASES))
def test_evaluation_runs_the_recorded_flavour_without_the_file(zoo, run_stage, client, make_cfg, tmp_path, source):
    """stage=train stores an MLflow model of the model's flavour (the run's logged model); evaluation with the
    train run's id loads it from the store after the config's file is gone, its confidences equal the file's, and
    the evaluation reproduces."""
    import shutil

    key, zoo_key, fmt, flavour, name = FLAVOUR_CASES[source]
    copy = tmp_path / Path(zoo[zoo_key]).name
    shutil.copyfile(zoo[zoo_key], copy)
    ov = [o.replace(zoo[zoo_key], str(copy)) for o in source_overrides(zoo, source)]
    ov += [*FOLDER, f"dataset.path={zoo['flat']}", "evaluation.num_images=5", "metrics.enabled=false"]
    file_model = image_model(make_cfg, *ov)
    ctx = run_stage(*ov, "stage=train")
    train = client.get_run(ctx.train_run_id)
    assert train.data.tags["Model_format"] == fmt and train.data.tags["Model_sha256"] == file_model.sha256
    assert flavour in _flavours(client, train.info.run_id)
    logged = _logged_model(client, train)
    assert logged is not None and str(logged.status).endswith("READY")
    copy.unlink()
    ctx2 = run_stage(*ov, "stage=evaluation", f"train_run_id={train.info.run_id}")
    assert ctx2.model.sha256 == file_model.sha256 and Path(ctx2.model.file).parent != copy.parent
    runs = _exp_runs(client, f"{name} - Evaluation", "tags.Run_type = 'image'")
    assert len(runs) >= 3
    for run in runs:
        k = int(run.data.tags["Image_id"])
        expected = file_model.predict_proba(ctx2.split.test_images[k : k + 1])[0]
        got = [run.data.metrics[f"Class_{c}_conf"] for c in range(10)]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    ctx3 = run_stage("stage=reproduce", f"run_id={ctx2.evaluation_run_id}", "allow_targets=[model_zoo.]")
    new = client.get_run(ctx3.results["reproduce_run_id"])
    assert new.data.tags["reproduced_match"] == "True", new.data.tags.get("reproduced_differs")


def test_a_train_run_recorded_as_a_file_still_evaluates_and_reproduces(zoo, run_stage, client):
    """A train run in the layout written before flavours (``model/<file>`` and ``model_info.json``, no MLmodel, no
    logged model, no ``Model_format`` tag): evaluation runs the config's file as before, and reproduces."""
    import shutil

    from mlflow.utils.file_utils import local_file_uri_to_path

    ov = [*source_overrides(zoo, "onnx"), *FOLDER, f"dataset.path={zoo['flat']}", "evaluation.num_images=3",
          "metrics.enabled=false"]
    ctx = run_stage(*ov, "stage=train")
    run = client.get_run(ctx.train_run_id)
    folder = Path(local_file_uri_to_path(run.info.artifact_uri), "model")
    info = json.loads((folder / "model_info.json").read_text())
    info.pop("format")
    shutil.rmtree(folder)
    folder.mkdir()
    shutil.copyfile(zoo["onnx"], folder / "small_cnn.onnx")
    (folder / "model_info.json").write_text(json.dumps(info))
    client.delete_tag(run.info.run_id, "Model_format")
    client.delete_logged_model(_logged_model(client, run).model_id)
    ctx2 = run_stage(*ov, "stage=evaluation")
    assert ctx2.train_run_id == run.info.run_id and ctx2.model.file == zoo["onnx"]
    ctx3 = run_stage("stage=reproduce", f"run_id={ctx2.evaluation_run_id}")
    new = client.get_run(ctx3.results["reproduce_run_id"])
    assert new.data.tags["reproduced_match"] == "True", new.data.tags.get("reproduced_differs")
    assert new.data.tags["Train_run_id"] == run.info.run_id


def test_folder_without_classes_and_class_map(zoo, run_stage, client):
    ov = [*source_overrides(zoo, "onnx"), *FOLDER, "saliency=sliding_window", "saliency.window_size=[8,8]",
          "saliency.stride=[8,8]", "metrics.enabled=false", "evaluation.num_images=3"]
    run_stage(*ov, f"dataset.path={zoo['flat']}", "dataset.name=flat")
    runs = _exp_runs(client, "small_cnn - Evaluation", "tags.Dataset = 'flat'")
    summary = [r for r in runs if r.data.tags["Run_type"] == "summary"][0]
    assert "Accuracy" not in summary.data.metrics
    assert all("GT_class" not in r.data.tags for r in runs)
    (sal,) = _exp_runs(client, "small_cnn - Saliency Map Generation", "tags.Dataset = 'flat'")
    assert "GT_class" not in sal.data.tags

    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    cmap = "{" + ",".join(f"{n}:'{i}'" for i, n in enumerate(names)) + "}"
    from xaitk_exp.errors import TrackingError

    with pytest.raises(TrackingError):  # another dataset config: the model must be recorded for it first
        run_stage(*ov, f"dataset.path={zoo['named']}", "dataset.name=named", f"dataset.class_map={cmap}",
                  "stage=evaluation")
    run_stage(*ov, f"dataset.path={zoo['named']}", "dataset.name=named", f"dataset.class_map={cmap}")
    runs = _exp_runs(client, "small_cnn - Evaluation", "tags.Dataset = 'named' and tags.Run_type = 'image'")
    assert {r.data.tags["GT_class"] for r in runs} <= {str(i) for i in range(10)}


def test_many_classes_keep_top_k_maps_and_metrics(zoo, run_stage, client, tmp_path):
    """25 classes: evaluation logs the 5 most confident classes; saliency stores 5 maps (predicted first), equal to
    those classes' maps among all 25; maps.top_k=0 keeps all."""
    from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.slidingwindow import SlidingWindowStack

    from xaitk_exp.models.blackbox import blackbox_for

    path = model_zoo.linear_onnx(tmp_path / "wide.onnx", 25, 32)
    ov = ["model=onnx", f"model.path={path}", *FOLDER, f"dataset.path={zoo['flat']}", "saliency=sliding_window",
          "saliency.window_size=[8,8]", "saliency.stride=[8,8]", "saliency.fill=0", "metrics.enabled=false",
          "evaluation.num_images=2"]
    ctx = run_stage(*ov)
    for run in _exp_runs(client, "wide - Evaluation", "tags.Run_type = 'image'"):
        conf = [k for k in run.data.metrics if k.startswith("Class_")]
        assert len(conf) == 5
        assert run.data.metrics[f"Class_{run.data.tags['Predicted_class']}_conf"] == run.data.metrics[
            "Predicted_class_conf"]
    (sal,) = _exp_runs(client, "wide - Saliency Map Generation")
    kept = [int(c) for c in sal.data.tags["Map_classes"].split(",")]
    assert len(kept) == 5 and str(kept[0]) == sal.data.tags["Predicted_class"]
    stored = np.load(client.download_artifacts(sal.info.run_id, "saliency_map_np_arrays/saliency_maps.npy"))
    gen = SlidingWindowStack(window_size=(8, 8), stride=(8, 8), threads=0)
    gen.fill = 0
    full = gen(ctx.split.test_images[int(sal.data.tags["Image_id"])], blackbox_for(ctx.model, 256))
    assert stored.shape == (5, 32, 32)
    np.testing.assert_array_equal(stored, full[kept])
    run_stage(*ov, "maps.top_k=0", "stage=saliency")
    runs = _exp_runs(client, "wide - Saliency Map Generation", "attributes.status = 'FINISHED'")
    assert sorted(len(r.data.tags["Map_classes"].split(",")) for r in runs) == [5, 25]


def test_maite_dataset_and_protocol(zoo, run_stage, client):
    """A MAITE dataset (dataset=maite) explained through a MAITE model, both through their protocols."""
    from maite.protocols import image_classification as ic

    ds = model_zoo.MaiteDigits(n=8)
    assert isinstance(ds, ic.Dataset)
    assert isinstance(model_zoo.maite_cnn(zoo["ts"]), ic.Model)
    ov = [*source_overrides(zoo, "onnx"), "dataset=maite", "dataset.dataset._target_=model_zoo.MaiteDigits",
          "+dataset.dataset.n=40", "allow_targets=[model_zoo.]", "saliency=sliding_window",
          "saliency.window_size=[8,8]", "saliency.stride=[8,8]", "metrics.enabled=false", "evaluation.num_images=5"]
    ctx = run_stage(*ov)
    assert ctx.split.name == "maite-digits" and ctx.split.image_shape == (32, 32, 3)
    (summary,) = _exp_runs(client, "small_cnn - Evaluation", "tags.Run_type = 'summary'")
    assert summary.data.metrics["Accuracy"] > 0.5
    (sal,) = _exp_runs(client, "small_cnn - Saliency Map Generation")
    assert sal.info.status == "FINISHED" and sal.data.tags["GT_class"] in [str(i) for i in range(10)]


# ----- bad input: one line, before any run --------------------------------------------------------------------------
def _bad_cases(zoo):
    corrupt = Path(zoo["root"], "corrupt.onnx")
    corrupt.write_bytes(b"not an onnx model at all")
    return [
        (["model=onnx", "model.path=/nowhere/model.onnx"], "model.path", "/nowhere/model.onnx", "existing file"),
        (["model=onnx", f"model.path={corrupt}"], "model.path", "corrupt.onnx", "ONNX Runtime can load"),
        (["model=torch", f"model.path={corrupt}"], "model.path", "corrupt.onnx", "TorchScript"),
        (["model=onnx", f"model.path={zoo['onnx']}", "model.class_names=[a,b,c]"], "model.class_names",
         "'a', 'b', 'c'", "10 outputs"),
        (["model=onnx", f"model.path={zoo['onnx']}", "model.outputs=scores"], "model.outputs", "scores",
         "logits, probabilities"),
        (["model=onnx", f"model.path={zoo['onnx']}", "model.preprocess.layout=CHW"], "model.preprocess.layout",
         "CHW", "NCHW, NHWC"),
        (["model=onnx", f"model.path={zoo['onnx32']}", "dataset.shape=[16,16]"], "dataset.shape", r"\[16, 16\]",
         "image size the model accepts"),
        (["model=onnx", f"model.path={zoo['onnx']}", f"dataset.path={zoo['empty']}"], "dataset.path", "empty",
         "sub-folders hold"),
        (["model=onnx", f"model.path={zoo['onnx']}", "maps.top_k=-1"], "maps.top_k", "-1", "auto, 0"),
        (["model=onnx", f"model.path={zoo['onnx']}", "model.device=tpu"], "model.device", "tpu", "cpu, cuda, auto"),
        (["model=torch", f"model.path={zoo['ts']}", "model.device=cuda"], "model.device", "cuda", "cpu or auto")
        if not torch.cuda.is_available() else
        (["model=torch", f"model.path={zoo['ts']}", "model.device=gpu"], "model.device", "gpu", "cpu, cuda, auto"),
        (["model=onnx", f"model.path={zoo['onnx']}", "metrics.sanity=true"], "metrics.sanity", "True", "retrains"),
        (["model=torch", "model._target_=model_zoo.SmallCNN", f"model.weights={zoo['onnx']}",
          "allow_targets=[model_zoo.]"], "model.weights", "small_cnn.onnx", "state_dict"),
        (["model=maite", "model._target_=model_zoo.nothing_here", "allow_targets=[model_zoo.]"], "model._target_",
         "model_zoo.nothing_here", "an importable class"),
        (["model=onnx", f"model.path={zoo['onnx']}", f"dataset.path={zoo['named']}"], "dataset.class_map", "None",
         "not among the model's classes"),
    ]


def test_bad_input_is_refused_in_one_line_before_any_run(zoo, make_cfg, client, tmp_path):
    from xaitk_exp.app import run

    for overrides, key, value, allowed in _bad_cases(zoo):
        cfg = make_cfg(*FOLDER, f"dataset.path={zoo['folder']}", *PRE, *overrides)
        with pytest.raises(XaitkExpError) as info:
            run(cfg, overrides, tmp_path)
        message = str(info.value)
        assert "\n" not in message, message
        assert re.search(rf"(^|\W){re.escape(key)}\W", message), f"key {key!r} not named: {message}"
        assert re.search(value, message), f"value {value!r} not named: {message}"
        assert re.search(allowed, message), f"{allowed!r} not said: {message}"
        assert isinstance(info.value, ConfigError) or "model" in message
    assert all(r.info.status != "RUNNING" for e in client.search_experiments() for r in
               client.search_runs([e.experiment_id]))
    assert sum(len(client.search_runs([e.experiment_id])) for e in client.search_experiments()) == 0


# ----- slow: processes ----------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("source", ["onnx", "torch-class"])  # in this order, in one process: see below
def test_maps_bit_identical_across_n_jobs(zoo, run_stage, client, source):
    """Workers load the recorded MLflow model. torch-class after onnx in one process: a worker kept from the ONNX
    case grows by over 300 MB loading the pt2 program, loky retires it and warns in its manager thread, which
    warnings-as-errors used to kill (the stage then waited forever): another worker must take the jobs."""
    ov = [*source_overrides(zoo, source), *FOLDER, f"dataset.path={zoo['folder']}", *RISE,
          "evaluation.num_images=4", "query.max_results=3", "metrics.enabled=false"]
    run_stage(*ov, "n_jobs=1")
    run_stage(*ov, "n_jobs=2", "force=true")
    name = {"onnx": "small_cnn", "torch-class": "SmallCNN"}[source]
    runs = _exp_runs(client, f"{name} - Saliency Map Generation", "attributes.status = 'FINISHED'")
    by_image: dict[str, list[np.ndarray]] = {}
    for run in runs:
        by_image.setdefault(run.data.tags["Image_id"], []).append(
            np.load(client.download_artifacts(run.info.run_id, "saliency_map_np_arrays/saliency_maps.npy")))
    assert len(by_image) == 3 and all(len(v) == 2 for v in by_image.values())
    for a, b in by_image.values():
        assert a.tobytes() == b.tobytes()


@pytest.mark.slow
def test_default_command_does_not_import_torch_or_onnxruntime(tmp_path):
    """Nor onnx, maite, or MLflow's onnx and pytorch flavours."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from xaitk_exp.app import compose_config, run\n"
        f"cfg = compose_config(['tracking.uri=sqlite:///{tmp_path}/m.db', 'progress=false', "
        "'evaluation.num_images=2'])\n"
        "run(cfg, [], '.')\n"
        "bad = [m for m in ('torch', 'onnxruntime', 'onnx', 'maite', 'mlflow.onnx', 'mlflow.pytorch') "
        "if m in sys.modules]\n"
        "assert not bad, bad\n"
        "print('CLEAN')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "CLEAN" in out.stdout, out.stderr[-2000:]


def test_a_changed_model_file_is_not_taken_for_the_recorded_one(zoo, run_stage, client, tmp_path):
    """Evaluation links to the train run that recorded the same SHA-256; after the file changes it refuses the old
    run, in one line, before any run opens."""
    import shutil

    from xaitk_exp.errors import TrackingError

    path = tmp_path / "net.onnx"
    shutil.copyfile(zoo["onnx"], path)
    ov = ["model=onnx", f"model.path={path}", *PRE, *FOLDER, f"dataset.path={zoo['flat']}"]
    ctx = run_stage(*ov, "stage=train")
    old_run = ctx.train_run_id
    weights = {k: v.detach().numpy() * 0.5 for k, v in zoo["cnn"].state_dict().items()}
    model_zoo.cnn_onnx(weights, path)  # same name, other weights
    with pytest.raises(TrackingError, match="recorded this model"):
        run_stage(*ov, "stage=evaluation")
    with pytest.raises(ConfigError, match=r"train_run_id=.* the file now has") as info:
        run_stage(*ov, "stage=evaluation", f"train_run_id={old_run}")
    assert "\n" not in str(info.value)
    assert not client.search_runs([client.get_experiment_by_name("net - Train").experiment_id],
                                  "attributes.status != 'FINISHED'")
    assert client.get_experiment_by_name("net - Evaluation") is None


@pytest.mark.slow
def test_a_worker_that_dies_fails_the_stage_in_one_line_and_leaves_no_run_open(zoo, run_stage, client, monkeypatch):
    """n_jobs=2 with a model that kills any worker process it runs in: the stage stops promptly with one line
    naming n_jobs=1 (no hang: an interval timer fails the test instead), the runs this process recorded stay
    FINISHED with their maps, none is left RUNNING; n_jobs=1 then completes the images."""
    import os
    import signal

    from xaitk_exp.errors import WorkerDied

    monkeypatch.setenv(model_zoo.HOME_PID, str(os.getpid()))
    ov = ["model=maite", "model._target_=model_zoo.dying_maite_cnn", f"+model.args.script_path={zoo['ts']}",
          "allow_targets=[model_zoo.]", *PRE, *FOLDER, f"dataset.path={zoo['folder']}",
          "dataset.class_map={" + ",".join(f"{i}:digit-{i}" for i in range(10)) + "}", "saliency=sliding_window",
          "saliency.window_size=[4,4]", "saliency.stride=[2,2]", "metrics.enabled=false",
          "evaluation.num_images=40", "query.max_results=40"]  # enough for the workers to start and take images

    def hung(signum, frame):
        raise TimeoutError("the saliency stage hung on a dead worker")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, 240, 10)  # again every 10 s: a wait in a finally block is left too
    try:
        for stage in ("train", "evaluation"):  # at full speed
            run_stage(*ov, f"stage={stage}")
        monkeypatch.setenv(model_zoo.SLOW_HOME, "1")  # the saliency stage, where the workers die: this process slowly
        with pytest.raises(WorkerDied) as info:
            run_stage(*ov, "n_jobs=2", "stage=saliency")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    message = str(info.value)
    assert "\n" not in message and "worker process died" in message and "n_jobs=1" in message, message
    runs = _exp_runs(client, "dying_maite_cnn - Saliency Map Generation")
    assert runs and all(r.info.status in ("FINISHED", "KILLED", "FAILED") for r in runs)
    for run in runs:
        if run.info.status == "FINISHED":  # what was recorded is all there
            client.download_artifacts(run.info.run_id, "saliency_map_np_arrays/saliency_maps.npy")
    kept = {r.info.run_id for r in runs if r.info.status == "FINISHED"}
    assert kept  # this process took images too, and recorded them
    monkeypatch.delenv(model_zoo.SLOW_HOME)
    run_stage(*ov, "n_jobs=1")  # reuses the runs recorded, makes the others
    done = _exp_runs(client, "dying_maite_cnn - Saliency Map Generation", "attributes.status = 'FINISHED'")
    images = _exp_runs(client, "dying_maite_cnn - Evaluation", "tags.Run_type = 'image'")
    assert len({r.data.tags["Image_id"] for r in done}) == len(images) and kept <= {r.info.run_id for r in done}

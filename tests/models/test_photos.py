"""Your own model on your own photos: every image evaluated, scores read the right way, one name per class, saliency
settings that follow the image's size and shape, and one-line errors naming the key at fault."""

from __future__ import annotations

import numpy as np
import pytest

import model_zoo
from xaitk_exp.errors import ConfigError

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

#: sizes the colour photos are written at (height, width): square and not
PHOTO_SHAPES = [(64, 64), (48, 160)]
NAMES = ["red", "blue"]


def _photos(tmp_path, shape, n=64, seed=0):
    images, labels = model_zoo.blob_photos(n, shape, seed)
    return model_zoo.write_folder(tmp_path / f"photos{shape[0]}x{shape[1]}", images, labels, NAMES)


def _folder(path, shape) -> list[str]:
    return ["dataset=image_folder", f"dataset.path={path}", "dataset.grayscale=false",
            f"dataset.shape=[{shape[0]},{shape[1]}]"]


def _runs(client, experiment: str, flt: str = "") -> list:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], flt) if exp else []


def softmax_onnx(path, n_classes: int, size: int, names: list[str] | None = None):
    """A linear classifier on ``[N, 3, size, size]`` images that ends in a Softmax: probabilities, not logits."""
    import json

    import onnx
    from onnx import helper

    model = onnx.load(str(model_zoo.linear_onnx(path, n_classes, size)))
    graph = model.graph
    graph.node.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1))
    graph.output.pop()
    graph.output.append(helper.make_tensor_value_info("probs", onnx.TensorProto.FLOAT, ["N", n_classes]))
    if names:
        helper.set_model_props(model, {"class_names": json.dumps(names)})
    onnx.save(model, str(path))
    return path


# ----- 1. a model not trained here sees every image ----------------------------------------------------------------
def test_a_model_not_trained_here_is_evaluated_on_every_image(run_stage, client, tmp_path):
    folder = _photos(tmp_path, (32, 32), n=20)
    onnx_path = softmax_onnx(tmp_path / "net.onnx", 2, 32, names=["180", "1"])
    base = ("model=onnx", f"model.path={onnx_path}", *_folder(folder, (32, 32)), "dataset.class_map={red: '180', blue: '1'}")
    run_stage(*base, "stage=train")
    ctx = run_stage(*base, "stage=evaluation")
    assert len(ctx.split.test_images) == 20 and len(ctx.split.train_images) == 0
    (summary,) = _runs(client, "net - Evaluation", "tags.Run_type = 'summary'")
    assert summary.data.metrics["Split_images"] == 20 and summary.data.metrics["Evaluated_images"] == 20
    assert len(_runs(client, "net - Evaluation", "tags.Run_type = 'image'")) == 20


@pytest.mark.parametrize("value", [0.99, 1.0, 0, -0.5, "a"])
def test_an_out_of_range_test_size_is_one_line_naming_the_key(make_cfg, tmp_path, value):
    from xaitk_exp.stages import Context

    folder = _photos(tmp_path, (16, 16), n=20)
    cfg = make_cfg("model=logistic_regression", *_folder(folder, (16, 16)), f"dataset.test_size={value}")
    with pytest.raises(ConfigError, match=r"^dataset\.test_size=.*(fraction|leaves at least one)") as err:
        _ = Context(cfg=cfg, tracker=None, output_dir=tmp_path).split
    assert "\n" not in str(err.value)


def test_a_model_not_trained_here_still_refuses_a_bad_test_size_and_a_train_split(make_cfg, tmp_path):
    from xaitk_exp.stages import Context

    folder = _photos(tmp_path, (16, 16), n=6)
    onnx_path = model_zoo.linear_onnx(tmp_path / "lin.onnx", 2, 16)
    base = ("model=onnx", f"model.path={onnx_path}", *_folder(folder, (16, 16)))
    with pytest.raises(ConfigError, match=r"^dataset\.test_size=1\.5"):
        _ = Context(cfg=make_cfg(*base, "dataset.test_size=1.5"), tracker=None, output_dir=tmp_path).split
    with pytest.raises(ConfigError, match=r"^evaluation\.split='train' is invalid: test: .*no train split"):
        _ = Context(cfg=make_cfg(*base, "evaluation.split=train"), tracker=None, output_dir=tmp_path).split


# ----- 4. outputs=auto ---------------------------------------------------------------------------------------------
def _model(make_cfg, path, *overrides):
    from xaitk_exp.models.sources import build_image_model
    from xaitk_exp.settings.nodes import to_dict

    cfg = make_cfg("model=onnx", f"model.path={path}", *overrides)
    return build_image_model(to_dict(cfg.model))


def test_outputs_auto_reads_softmax_as_probabilities_and_logits_as_logits(make_cfg, tmp_path, capsys):
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(5, 16, 16, 3)).astype(np.float32)
    soft = _model(make_cfg, softmax_onnx(tmp_path / "soft.onnx", 3, 16))
    assert soft.outputs_setting == "auto"
    soft.check_images((16, 16, 3), samples=images)
    assert soft.outputs == "probabilities" and soft.info()["outputs"] == "probabilities"
    np.testing.assert_allclose(soft.predict_proba(images), soft.scores(images), rtol=0, atol=0)
    lin = _model(make_cfg, model_zoo.linear_onnx(tmp_path / "lin.onnx", 3, 16))
    lin.check_images((16, 16, 3), samples=images)
    assert lin.outputs == "logits"
    assert np.allclose(lin.predict_proba(images).sum(axis=1), 1) and not np.allclose(lin.scores(images).sum(axis=1), 1)
    assert capsys.readouterr().err == ""


def test_an_explicit_outputs_the_scores_contradict_gets_a_one_line_warning(make_cfg, tmp_path, capsys):
    images = np.random.default_rng(1).uniform(size=(4, 16, 16, 3)).astype(np.float32)
    soft = _model(make_cfg, softmax_onnx(tmp_path / "soft.onnx", 3, 16), "model.outputs=logits")
    soft.check_images((16, 16, 3), samples=images)
    err = capsys.readouterr().err.strip()
    assert soft.outputs == "logits"  # the user's word stands
    assert len(err.splitlines()) == 1 and "model.outputs=logits" in err and "look like probabilities" in err


def test_outputs_auto_is_recorded_as_a_param(run_stage, client, tmp_path):
    folder = _photos(tmp_path, (16, 16), n=6)
    onnx_path = softmax_onnx(tmp_path / "sm.onnx", 2, 16)
    run_stage("model=onnx", f"model.path={onnx_path}", *_folder(folder, (16, 16)), "stage=train",
              "dataset.class_map={red: '0', blue: '1'}")
    (train,) = _runs(client, "sm - Train")
    assert train.data.params["outputs"] == "probabilities" and train.data.params["outputs_setting"] == "auto"


# ----- 6. one-line errors naming the key at fault ------------------------------------------------------------------
@pytest.mark.parametrize(("overrides", "key"), [
    (("model.preprocess.mean=[0.5,0.5]",), "model.preprocess.mean"),
    (("model.preprocess.mean=[0.5,0.5]", "model.preprocess.std=[0.2,0.2,0.2]"), "model.preprocess.mean"),
    (("model.preprocess.mean=[0.5,0.5,0.5]", "model.preprocess.std=[0.2,0.2]"), "model.preprocess.std"),
])
def test_a_preprocess_list_of_the_wrong_length_is_blamed_on_its_key(make_cfg, tmp_path, overrides, key):
    model = _model(make_cfg, model_zoo.linear_onnx(tmp_path / "lin.onnx", 2, 16), *overrides)
    with pytest.raises(ConfigError) as err:
        model.check_images((16, 16, 3))
    text = str(err.value)
    assert text.startswith(f"{key}=") and "3" in text and "dataset.shape" not in text and "\n" not in text


# ----- 3. one name per class ---------------------------------------------------------------------------------------
def test_evaluation_and_saliency_name_the_same_class_and_the_query_takes_the_label(run_stage, client, tmp_path):
    """Class names that are numbers ('180' and '1', in that order): the label a user reads is what the picture, the
    description and the query say; the index stays in Predicted_class."""
    folder = _photos(tmp_path, (32, 32), n=12)
    onnx_path = softmax_onnx(tmp_path / "pets.onnx", 2, 32, names=["180", "1"])
    base = ("model=onnx", f"model.path={onnx_path}", *_folder(folder, (32, 32)),
            "dataset.class_map={red: '180', blue: '1'}", "saliency=rise", "saliency.n=40", "metrics.enabled=false")
    run_stage(*base, "stage=train")
    run_stage(*base, "stage=evaluation")
    evals = _runs(client, "pets - Evaluation", "tags.Run_type = 'image'")
    by_label = {r.data.tags["Predicted_label"] for r in evals}
    label = sorted(by_label)[0]
    index = str(["180", "1"].index(label))
    ctx = run_stage(*base, "stage=saliency", f"query.predicted_class={label}", "query.max_results=50")
    expected = [r for r in evals if r.data.tags["Predicted_label"] == label]
    runs = [client.get_run(r) for r in ctx.results["saliency_run_ids"]]
    assert len(runs) == len(expected) > 0
    for run in runs:
        t = run.data.tags
        assert t["Predicted_class"] == index and t["Predicted_label"] == label  # same tags as the evaluation run
        assert f"predicted **{label}**" in t["mlflow.note.content"]
        assert t["GT_label"] in NAMES or t["GT_label"] in ("180", "1")
    # the index, where the value names no class, still selects
    ctx = run_stage(*base, "stage=saliency", f"query.predicted_class={index}" if index not in ("180", "1")
                    else "query.predicted_class=0", "query.max_results=50")
    assert ctx.results["saliency_run_ids"]


# ----- 2. saliency settings that follow the image ------------------------------------------------------------------
def test_auto_sizes_keep_the_digit_settings_and_bound_the_work_on_photos():
    from xaitk_exp.settings.saliency import auto_sizes, resolve_auto

    digits = auto_sizes((8, 8))
    assert digits["window_size"] == [2, 2] and digits["stride"] == [1, 1] and digits["s"] == 4
    assert digits["radius"] == [1.5, 1.5]
    for hw in [(64, 64), (224, 224), (96, 384), (48, 160)]:
        sizes = auto_sizes(hw)
        positions = np.prod([(n - k) // s + 1 for n, k, s in zip(hw, sizes["window_size"], sizes["stride"])])
        assert 50 <= positions <= 300, (hw, sizes)
        for n, k in zip(hw, sizes["window_size"]):
            assert n / 8 <= k <= n / 4  # each side's own fraction: a non-square image gets a non-square window
    node = {"_target_": "x.SlidingWindowStack", "window_size": [5, 7], "stride": "auto", "fill": "auto"}
    assert resolve_auto(node, (40, 40, 3)) == {**node, "stride": [2, 3], "fill": "image mean colour"}
    assert resolve_auto(node, (40, 40))["fill"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("shape", PHOTO_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_every_shipped_algorithm_beats_the_random_order_on_colour_photos(run_stage, client, tmp_path, shape):
    """A colour classifier (logistic regression) trained on photos whose only evidence is a small coloured disc;
    each shipped algorithm, with its shipped (auto) settings, explains the same test photos."""
    from xaitk_exp.tasks import task_named
    from xaitk_exp.settings.saliency import auto_sizes

    folder = _photos(tmp_path, shape, n=48)
    common = ("model=logistic_regression", *_folder(folder, shape), "evaluation.num_images=12",
              "query.max_results=6", "metrics.mufidelity.subsets=16")
    keys = ("Deletion_AUC", "Deletion_AUC_random", "Insertion_AUC", "Insertion_AUC_random")
    means: dict[str, dict[str, float]] = {}
    for name in task_named("classification").saliency_options():
        ctx = run_stage(f"saliency={name}", *common)
        runs = [client.get_run(r) for r in ctx.results["saliency_run_ids"]]
        assert len(runs) == 6
        means[name] = {k: float(np.median([r.data.metrics[k] for r in runs])) for k in keys}
        if name == "sliding_window":  # the sizes it ran with follow the image, and are recorded
            params = runs[0].data.params
            sizes = auto_sizes(shape)
            assert params["window_size"] == str(tuple(sizes["window_size"])).replace(" ", "") or \
                params["window_size"] in (str(sizes["window_size"]), str(tuple(sizes["window_size"])))
            assert "window_size" in params["auto_settings"] and params["fill"] == "image mean colour"
    table = "\n".join(
        f"{n:26s} deletion {m['Deletion_AUC']:.3f} (random {m['Deletion_AUC_random']:.3f})  "
        f"insertion {m['Insertion_AUC']:.3f} (random {m['Insertion_AUC_random']:.3f})"
        for n, m in means.items()
    )
    print(f"\n{shape}\n{table}")  # shown with -rP
    worse = [n for n, m in means.items()
             if not (m["Deletion_AUC"] < m["Deletion_AUC_random"] and m["Insertion_AUC"] > m["Insertion_AUC_random"])]
    assert not worse, f"{shape}: algorithms no better than the random order: {worse}\n{table}"

"""Model sources are a registry: every shipped source is registered, and a new one added in this file alone (a numpy
linear classifier in an ``.npz`` file, with its own recorder) is recorded, evaluated and loaded back from the store
by the stages unchanged, against a real SQLite store."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xaitk_exp.errors import ConfigError
from xaitk_exp.models import registry
from xaitk_exp.models.image_model import ImageModel, existing_file, file_sha256
from xaitk_exp.models.registry import ModelSource

NPZ_FORMAT = "npz/weights"


# ----- the new source: everything it needs, in one place ------------------------------------------------------------
class NpzLinear(ImageModel):
    """``model.path``: an ``.npz`` file with ``W`` [H*W*C, Cl] and ``b`` [Cl]; scores are ``flat(image) @ W + b``."""

    source = "npz"

    def __init__(self, node: Mapping[str, Any], extra_allowed: Sequence[str] = ()) -> None:
        self.path = existing_file(node, "path", "a .npz file with arrays W and b")
        super().__init__(node, extra_allowed)
        self.sha256 = file_sha256(self.path)

    @property
    def file(self) -> str:
        return str(self.path)

    def _load_runtime(self) -> Any:
        with np.load(self.path) as f:
            return np.asarray(f["W"]), np.asarray(f["b"])

    def _scores(self, runtime: Any, batch: np.ndarray) -> np.ndarray:
        w, b = runtime
        return batch.reshape(len(batch), -1).astype(np.float64) @ w + b


def save_npz(model: Any, folder: Path, image_shape: Sequence[int]) -> str:
    """An MLflow-style folder: an MLmodel file naming the flavour, and the weights beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model.file, folder / "weights.npz")
    (folder / "MLmodel").write_text("flavors:\n  npz_linear:\n    data: weights.npz\n")
    return NPZ_FORMAT


def load_npz(folder: Path, flavour: Mapping[str, Any], shared: dict[str, Any], extra: Sequence[str]) -> Any:
    return NpzLinear({**shared, "source": "npz", "path": str(folder / str(flavour["data"]))}, extra)


NPZ = ModelSource(
    name="npz",
    load=NpzLinear,
    framework="numpy",
    digest=lambda node: file_sha256(node["path"]) if Path(str(node.get("path"))).is_file() else None,
    record=save_npz,
    flavour="npz_linear",
    load_recorded=load_npz,
    formats=(NPZ_FORMAT,),
)


@pytest.fixture
def npz_source() -> Iterator[ModelSource]:
    registry.register(NPZ)
    yield NPZ
    registry.unregister(NPZ.name)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A logistic regression fitted on every digit, its coefficients saved as the source's file (logits out)."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    digits = load_digits()
    fit = LogisticRegression(max_iter=300).fit(digits.images.reshape(len(digits.images), -1) / 16.0, digits.target)
    path = tmp_path_factory.mktemp("npz") / "linear_digits.npz"
    np.savez(path, W=fit.coef_.T, b=fit.intercept_)
    return path


# ----- the shipped sources ------------------------------------------------------------------------------------------
def test_every_shipped_source_is_registered_once_with_its_framework_and_extra():
    by_name = {s.name: s for s in registry.sources()}
    assert set(by_name) >= {"estimator", "pretrained", "onnx", "torch", "maite"}
    assert (by_name["onnx"].framework, by_name["onnx"].extra) == ("onnxruntime", None)
    assert (by_name["torch"].framework, by_name["torch"].extra) == ("torch", "torch")
    assert (by_name["maite"].framework, by_name["maite"].extra) == ("maite", "maite")
    assert by_name["estimator"].trained_here and not by_name["pretrained"].trained_here
    assert registry.stored_formats() == ("mlflow.onnx", "mlflow.pytorch/torchscript", "mlflow.pytorch/pt2")
    extras = Path(__file__).resolve().parents[2].joinpath("pyproject.toml").read_text()
    for source in by_name.values():  # every extra a source names is one pyproject.toml declares
        assert source.extra is None or f"\n{source.extra} = [" in extras, source.name


@pytest.mark.parametrize(("node", "name"), [
    ({"_target_": "sklearn.svm.SVC"}, "estimator"),
    ({"uri": "models:/m/1"}, "pretrained"),
    ({"source": "onnx", "path": "m.onnx"}, "onnx"),
    ({"source": "torch", "_target_": "x.Net", "weights": "w.pt"}, "torch"),
    ({"source": "maite", "_target_": "x.factory"}, "maite"),
])
def test_a_model_node_selects_its_source(node, name):
    assert registry.source_for(node).name == name


def test_an_unknown_source_is_refused_in_one_line_naming_the_registered_ones():
    with pytest.raises(ConfigError) as err:
        registry.source_for({"source": "tflite", "path": "m.tflite"})
    message = str(err.value)
    assert "model.source" in message and "tflite" in message and "onnx" in message and "\n" not in message


# ----- a new source, through train and evaluation -------------------------------------------------------------------
NPZ_RUN = ["model=onnx", "model.source=npz", "model.name=linear_digits", "evaluation.num_images=5",
           "saliency=sliding_window"]


def test_a_source_registered_here_runs_through_train_and_evaluation(npz_source, weights, run_stage, client):
    from xaitk_exp import schema

    run_stage("stage=train", f"model.path={weights}", *NPZ_RUN)
    train_exp = client.get_experiment_by_name("linear_digits - Train")
    train = client.search_runs([train_exp.experiment_id])[0]
    assert train.data.tags[schema.MODEL_FORMAT] == NPZ_FORMAT
    assert train.data.tags[schema.MODEL_SHA256] == file_sha256(weights)
    assert train_exp.tags["framework"] == "numpy" and train_exp.tags["version"] == np.__version__
    assert "MLmodel" in {Path(a.path).name for a in client.list_artifacts(train.info.run_id, schema.IMAGE_MODEL_DIR)}

    # a new job whose config file is gone: the recorded copy is loaded back through the source's load_recorded
    moved = weights.with_name("moved.npz")
    shutil.copyfile(weights, moved)
    ctx = run_stage("stage=evaluation", f"model.path={moved}", f"train_run_id={train.info.run_id}", *NPZ_RUN)
    assert isinstance(ctx.model, NpzLinear) and ctx.model.path.name == "weights.npz"  # the stored copy
    exp = client.get_experiment_by_name("linear_digits - Evaluation")
    runs = client.search_runs([exp.experiment_id])
    summary = next(r for r in runs if r.data.tags[schema.RUN_TYPE] == "summary")
    images = sorted((r for r in runs if r.data.tags[schema.RUN_TYPE] == "image"),
                    key=lambda r: int(r.data.tags[schema.IMAGE_ID]))
    assert len(images) == 5 and summary.data.tags[schema.TRAIN_RUN_ID] == train.info.run_id
    assert summary.data.metrics[schema.ACCURACY] > 0.9  # the fit saw every digit
    direct = NpzLinear({"path": str(weights)})
    direct.check_images(tuple(ctx.split.image_shape))
    probs = direct.predict_proba(ctx.split.test_images[:5])
    for k, run in enumerate(images):
        assert run.data.tags[schema.PREDICTED_CLASS] == str(int(np.argmax(probs[k])))
        assert run.data.metrics[schema.PREDICTED_CLASS_CONF] == pytest.approx(float(probs[k].max()), rel=1e-6)


def test_without_its_registration_the_source_is_refused_before_any_run(weights, run_stage, client):
    with pytest.raises(ConfigError, match="model.source"):
        run_stage("stage=train", f"model.path={weights}", *NPZ_RUN)
    assert client.get_experiment_by_name("linear_digits - Train") is None

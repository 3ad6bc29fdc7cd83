"""Every option of every config group composes, and what it names can be built."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from xaitk_exp.cli import group_options, precheck_overrides
from xaitk_exp.security.targets import instantiate
from xaitk_exp.settings.nodes import estimator_node
from xaitk_exp.tasks import task_named

SALIENCY = task_named("classification").saliency_options()  # detectors': tests/stages/test_detection_saliency.py


def _trained_here(option: str) -> bool:
    """The option's model source (from the registry) is one the train stage fits: a scikit-learn estimator."""
    from pathlib import Path

    import yaml

    from xaitk_exp.models.registry import source_for

    node = yaml.safe_load((Path(__file__).resolve().parents[2] / "conf" / "model" / f"{option}.yaml").read_text())
    return source_for(node).trained_here


MODELS = [m for m in group_options("model") if _trained_here(m)]  # estimators


def test_groups_list_the_shipped_options():
    assert set(group_options("logging")) == {"high", "mid", "low"}
    assert {"digits", "mnist", "image_folder"} <= set(group_options("dataset"))
    assert {"mlp", "logistic_regression", "random_forest", "svc", "pretrained"} <= set(group_options("model"))
    assert {"sliding_window", "rise", "mc_rise"} <= set(SALIENCY)
    occlusion = [s for s in SALIENCY if s.startswith("occlusion_")]
    assert len(occlusion) >= 2


def test_defaults_follow_the_seed_notebook(make_cfg):
    cfg = make_cfg()
    assert cfg.dataset.name == "digits" and cfg.logging.level == "mid" and cfg.stage == "all"
    assert cfg.model._target_ == "sklearn.neural_network.MLPClassifier"
    assert list(cfg.model.hidden_layer_sizes) == [50]
    assert (cfg.model.solver, cfg.model.max_iter, cfg.model.random_state) == ("sgd", 10, 1)
    assert (cfg.model.learning_rate_init, cfg.model.alpha) == (0.1, 1e-4)
    from xaitk_exp.settings.nodes import to_dict
    from xaitk_exp.settings.saliency import resolve_auto

    sizes = resolve_auto(to_dict(cfg.saliency), (8, 8))  # auto: on 8x8 digits the sizes they always had
    assert (cfg.saliency.window_size, sizes["window_size"], sizes["stride"]) == ("auto", [2, 2], [1, 1])
    assert cfg.evaluation.num_images == "auto" and cfg.query.max_results == 1


@pytest.mark.parametrize("name", MODELS)
def test_every_model_builds_a_probabilistic_classifier(make_cfg, name):
    cfg = make_cfg(f"model={name}")
    model = instantiate(estimator_node(cfg.model), "model")  # without name and register, as the stage does
    assert hasattr(model, "predict_proba")
    if "random_state" in cfg.model and name != "mlp":
        assert model.random_state == cfg.seed


def test_mlp_gets_plain_lists_not_listconfig(make_cfg):
    model = instantiate(estimator_node(make_cfg().model), "model")
    assert type(model.hidden_layer_sizes) is list


@pytest.fixture(scope="module")
def fitted_mlp():
    from sklearn.neural_network import MLPClassifier

    from xaitk_exp.data import Digits

    split = Digits().load()
    X = split.train_images.reshape(len(split.train_images), -1)
    model = MLPClassifier(hidden_layer_sizes=[20], max_iter=30, random_state=0).fit(X, split.train_labels)
    return model, split


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("name", SALIENCY)
def test_every_saliency_option_builds_and_maps_a_digit(make_cfg, fitted_mlp, name):
    from xaitk_exp.models.blackbox import SklearnBlackbox
    from xaitk_exp.stages.saliency.algorithm import Algorithm, class_maps

    overrides = [f"saliency={name}"]
    if "n" in make_cfg(*overrides).saliency:
        overrides.append("saliency.n=50")
    cfg = make_cfg(*overrides)
    model, split = fitted_mlp
    algo = Algorithm(cfg.saliency, split.image_shape)
    maps = class_maps(algo.compute(split.test_images[0], SklearnBlackbox(model)))
    assert maps.shape == (10, 8, 8)
    assert np.isfinite(maps).all() and np.abs(maps).max() <= 1.0 + 1e-9
    recorded = algo.config()
    assert recorded["algorithm"] == name and "fill" in recorded


@pytest.mark.parametrize("level", ["high", "mid", "low"])
def test_every_logging_level_builds_its_tracker(make_cfg, store, level):
    from xaitk_exp.tracking.factory import make_tracker

    cfg = make_cfg(f"logging={level}")
    tracker = make_tracker(cfg.logging.level, store)
    assert tracker.level == level
    exp_id = tracker.experiment("Probe")
    assert tracker.experiment("Probe") == exp_id


def test_digits_split_is_seeded_and_stratified(make_cfg):
    a = instantiate(make_cfg().dataset, "dataset").load()
    b = instantiate(make_cfg().dataset, "dataset").load()
    c = instantiate(make_cfg("seed=3").dataset, "dataset").load()
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert a.test_images.shape[1:] == (8, 8) and 0.0 <= a.test_images.min() and a.test_images.max() <= 1.0
    assert len(a.test_images) == 450 and sorted(set(a.test_labels.tolist())) == list(range(10))


def test_mnist_loader_reads_the_openml_cache(make_cfg, tmp_path):
    from openml_cache import write_openml_cache

    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(80, 16))
    y = np.array([str(i % 4) for i in range(80)])
    write_openml_cache(tmp_path / "cache", "mnist_784", X, y)
    cfg = make_cfg("dataset=mnist", f"dataset.data_home={tmp_path / 'cache'}", "dataset.shape=[4,4]", "dataset.test_size=0.25")
    split = instantiate(cfg.dataset, "dataset").load()
    assert split.train_images.shape == (60, 4, 4) and split.test_images.shape == (20, 4, 4)
    assert split.class_names == ["0", "1", "2", "3"]
    row = int(np.flatnonzero((X.reshape(80, 4, 4) / 255.0 == split.test_images[0]).all(axis=(1, 2)))[0])
    assert split.class_names[split.test_labels[0]] == y[row]


def _write_folder(root, classes=("cat", "dog"), per_class=6, size=(10, 12), mode="L"):
    rng = np.random.default_rng(1)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / c / f"{i}.png")


@pytest.mark.parametrize("grayscale", [True, False])
def test_image_folder_loader(make_cfg, tmp_path, grayscale):
    _write_folder(tmp_path / "pets", mode="L" if grayscale else "RGB")
    cfg = make_cfg(
        "dataset=image_folder", f"dataset.path={tmp_path / 'pets'}", "dataset.shape=[6,5]",
        f"dataset.grayscale={str(grayscale).lower()}",
    )
    split = instantiate(cfg.dataset, "dataset").load()
    expected = (6, 5) if grayscale else (6, 5, 3)
    assert split.test_images.shape[1:] == expected
    assert split.name == "pets" and split.class_names == ["cat", "dog"]
    assert len(split.test_paths) == len(split.test_images) == 3
    assert all(p.split("/")[0] in ("cat", "dog") and p.endswith(".png") for p in split.test_paths)


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["saliency=nope"], "saliency='nope' is invalid: one of"),
        (["-m", "saliency=rise,nope"], "saliency='nope'"),
        (["model=xgboost"], "model='xgboost' is invalid"),
        (["logging=verbose"], "logging='verbose' is invalid: one of high, low, mid"),
        (["dataset=cifar"], "dataset='cifar'"),
    ],
)
def test_unknown_group_option_gets_one_line(argv, fragment):
    message = precheck_overrides(argv)
    assert message is not None and fragment in message and "\n" not in message


def test_known_options_pass_the_precheck():
    assert precheck_overrides(["saliency=rise", "saliency.n=10", "-m", "model=mlp,svc", "logging=low"]) is None


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["saliency.windowsize=3"], "Could not override 'saliency.windowsize'"),
        (["evaluation.num_image=4"], "Key 'num_image' is not in struct"),
        (["model.hidden_layer_sizes=[50"], "[50"),
    ],
)
def test_unknown_key_or_bad_syntax_gets_one_line(argv, fragment):
    from xaitk_exp.overrides import precheck_keys

    message = precheck_keys(argv)
    assert message is not None and fragment in message and "\n" not in message


def test_good_overrides_and_flag_values_pass_the_key_check():
    from xaitk_exp.overrides import precheck_keys

    assert precheck_keys(["saliency=rise", "saliency.n=10", "--cfg", "job", "+model.tol=0.1"]) is None
    assert precheck_keys(["-m", "saliency=rise,mc_rise", "saliency.nope=1"]) is None  # sweeps: Hydra's to check


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_sqlite_store_journal_mode_is_a_property_of_the_file(make_cfg, tmp_path, journal):
    """``tracking.sqlite_journal`` holds for every later connection (the MLflow UI, a colleague's notebook)."""
    import sqlite3

    from xaitk_exp.app import run

    run(make_cfg("stage=train", "model=logistic_regression", f"tracking.sqlite_journal={journal}"), [], tmp_path)
    con = sqlite3.connect(tmp_path / "mlflow.db")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == journal
    assert con.execute("select count(*) from runs where status = 'FINISHED'").fetchone()[0] == 1
    con.close()


def test_a_wal_store_goes_back_to_delete_or_says_why_not(make_cfg, tmp_path, capsys):
    import sqlite3

    from xaitk_exp.app import run

    db = tmp_path / "mlflow.db"
    con = sqlite3.connect(db, isolation_level=None)  # a store in WAL mode, being read meanwhile
    assert con.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    con.execute("BEGIN")
    con.execute("select count(*) from sqlite_master").fetchone()
    cfg = make_cfg("stage=train", "model=logistic_regression", "tracking.sqlite_journal=delete")
    run(cfg, [], tmp_path)  # the mode cannot change under the reader: it stays, the user is told, the run is kept
    assert "tracking.sqlite_journal=delete not applied" in capsys.readouterr().err
    con.execute("COMMIT")
    assert con.execute("select count(*) from runs where status = 'FINISHED'").fetchone()[0] == 1
    con.close()
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("PRAGMA journal_mode=WAL").connection.close()
    run(make_cfg("stage=train", "model=logistic_regression", "tracking.sqlite_journal=delete",
                 uri=f"sqlite:///{other}"), [], tmp_path)
    con = sqlite3.connect(other)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    con.close()

"""A run from a shared server must not run code here: models stay skops and are loaded only when the types their
MLmodel asks to trust are scikit-learn's own classes; artifact paths stay inside the run; credentials in a tracking
URI reach no param, tag, artifact or console line; stored configs build only allow-listed classes."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import yaml
from conftest import run_cli

from xaitk_exp.errors import UnsafeConfigError
from xaitk_exp.security.redact import redact_overrides, redact_uri
from xaitk_exp.security.targets import check_targets, instantiate
from xaitk_exp.security.trust import is_trusted_type
from xaitk_exp.teamserver import postgres_missing_reason, team_server
from xaitk_exp.tracking.limits import safe_artifact_path

SGD = "sklearn.neural_network._stochastic_optimizers.SGDOptimizer"


def _local(artifact_uri: str) -> Path:
    return Path(urlsplit(artifact_uri).path)


# ----- models stay skops --------------------------------------------------------------------------------------
@pytest.mark.parametrize("level", ["high", "mid", "low"])
def test_seed_mlp_is_stored_as_skops_with_its_optimizer_trusted(run_stage, client, level):
    ctx = run_stage("stage=train", f"logging={level}")
    run = client.get_run(ctx.train_run_id)
    folder = _local(run.info.artifact_uri) / "sklearn-model"
    flavor = yaml.safe_load((folder / "MLmodel").read_text())["flavors"]["sklearn"]
    assert flavor["serialization_format"] == "skops"
    assert flavor["skops_trusted_types"] == [SGD]
    assert (folder / flavor["pickled_model"]).suffix == ".skops"
    everything = list(_local(run.info.artifact_uri).rglob("*"))
    assert not [p for p in everything if p.suffix in (".pkl", ".pickle", ".joblib", ".cloudpickle")]


@pytest.mark.parametrize(
    ("name", "trusted"),
    [
        (SGD, True),
        ("sklearn.tree._tree.Tree", True),
        ("sklearn.neural_network.MLPClassifier", True),
        ("builtins.eval", False),
        ("builtins.exec", False),
        ("numpy.load", False),
        ("os.system", False),
        ("sklearn.datasets.fetch_openml", False),  # a scikit-learn function, not a class
        ("sklearn_evil.Payload", False),
        ("sklearn.no_such_module.Cls", False),
        ("sklearn", False),
    ],
)
def test_trusted_types_are_scikit_learn_classes_only(name, trusted):
    assert is_trusted_type(name) is trusted


@pytest.fixture
def trained(run_stage, client):
    """A finished train run (seed MLP) and its model folder in the temporary store."""
    ctx = run_stage("stage=train")
    run = client.get_run(ctx.train_run_id)
    return run.info.run_id, _local(run.info.artifact_uri) / "sklearn-model"


def _edit_mlmodel(folder: Path, change) -> None:
    meta = yaml.safe_load((folder / "MLmodel").read_text())
    change(meta["flavors"]["sklearn"])
    (folder / "MLmodel").write_text(yaml.safe_dump(meta))


CRAFTED = [
    ("trusts-builtins-eval", lambda f: f.__setitem__("skops_trusted_types", [SGD, "builtins.eval"]), "builtins.eval"),
    ("trusts-os-system", lambda f: f.__setitem__("skops_trusted_types", ["os.system"]), "os.system"),
    ("trusts-numpy-function", lambda f: f.__setitem__("skops_trusted_types", [SGD, "numpy.load"]), "numpy.load"),
    ("cloudpickle", lambda f: f.__setitem__("serialization_format", "cloudpickle"), "allow_pickle"),
    ("pickle", lambda f: f.__setitem__("serialization_format", "pickle"), "allow_pickle"),
    ("no-format", lambda f: f.pop("serialization_format"), "allow_pickle"),
    ("ships-code", lambda f: f.__setitem__("code", "code"), "ships code"),
    ("model-file-outside", lambda f: f.__setitem__("pickled_model", "../../../elsewhere.skops"), "inside the model"),
]


CASES = [(*c, "train_run_id") for c in CRAFTED] + [(*CRAFTED[0], "pretrained"), (*CRAFTED[3], "pretrained")]


@pytest.mark.parametrize(("change", "says", "how"), [c[1:] for c in CASES], ids=[f"{c[0]}-{c[3]}" for c in CASES])
@pytest.mark.with_upstream
def test_crafted_stored_model_is_refused(run_stage, client, trained, change, says, how):
    run_id, folder = trained
    run_stage("stage=evaluation", "evaluation.num_images=2", f"train_run_id={run_id}")  # untouched: it loads
    before = len(client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=5000))
    _edit_mlmodel(folder, change)
    args = ([f"train_run_id={run_id}"] if how == "train_run_id"
            else ["model=pretrained", f"model.uri=runs:/{run_id}/sklearn-model"])
    with pytest.raises(UnsafeConfigError) as info:
        run_stage("stage=evaluation", "evaluation.num_images=2", "force=true", *args)
    message = str(info.value)
    assert "\n" not in message and "model.uri=" in message and says in message, message
    after = len(client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=5000))
    assert after == before, "a refused model still opened runs"


def test_pickled_model_loads_only_when_the_user_asks(run_stage, client, trained, tmp_path):
    """A real cloudpickle model in the store: refused by default, loaded with model.allow_pickle=true."""
    import mlflow.sklearn

    run_id, _ = trained
    model = mlflow.sklearn.load_model(f"runs:/{run_id}/sklearn-model")
    saved = tmp_path / "pickled"
    mlflow.sklearn.save_model(model, str(saved), serialization_format="cloudpickle")
    client.log_artifacts(run_id, str(saved), "pickled-model")
    uri = f"runs:/{run_id}/pickled-model"
    with pytest.raises(UnsafeConfigError, match=r"stored as 'cloudpickle'.*model\.allow_pickle=true"):
        run_stage("stage=evaluation", "evaluation.num_images=2", "model=pretrained", f"model.uri={uri}")
    ctx = run_stage("stage=evaluation", "evaluation.num_images=2", "model=pretrained", f"model.uri={uri}",
                    "model.allow_pickle=true")
    assert client.get_run(ctx.evaluation_run_id).info.status == "FINISHED"


# ----- artifact paths -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "safe"),
    [
        ("config/config.yaml", "config/config.yaml"),
        ("../../escape.txt", "escape.txt"),
        ("/etc/passwd", "etc/passwd"),
        ("a/../../b.txt", "a/b.txt"),
        ("..\\..\\win.txt", "win.txt"),
        ("odd name#?%.png", "odd_name___.png"),
        ("..", None),
        ("", None),
    ],
)
def test_safe_artifact_path(path, safe):
    assert safe_artifact_path(path) == safe


@pytest.mark.parametrize("level", ["high", "mid", "low"])
def test_artifact_names_cannot_leave_the_run_folder(tmp_path, store, level):
    from xaitk_exp.tracking.factory import make_tracker

    root = tmp_path / "store"
    tracker = make_tracker(level, store, str(root / "mlartifacts"))
    exp = tracker.experiment("../../Escape attempt")
    odd = tmp_path / "src" / "..odd name#?.png"
    odd.parent.mkdir()
    odd.write_bytes(b"png")
    with tracker.run(exp, "traversal") as run_id:
        tracker.log_text(run_id, "t", "../../../outside.txt")
        tracker.log_dict(run_id, {"a": 1}, "/abs/../../outside.json")
        tracker.log_artifact(run_id, str(odd), "../../up")
        tracker.log_artifacts(run_id, str(odd.parent), "../..")
    run_dir = _local(tracker.get_run(run_id).info.artifact_uri)
    assert run_dir.is_relative_to(root / "mlartifacts")
    store_files = ("mlflow.db", "mlflow.db.lock", "mlflow.db-wal", "mlflow.db-shm")  # the database, its WAL, its lock
    stray = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_relative_to(run_dir)
             and not p.is_relative_to(odd.parent) and p.name not in store_files]
    assert stray == []
    names = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    assert "outside.txt" in names and "abs/outside.json" in names and "up/..odd_name__.png" in names
    assert all(re.fullmatch(r"[A-Za-z0-9._/-]+", n) for n in names), names


def test_image_folder_with_odd_file_names(run_stage, client, tmp_path):
    from PIL import Image

    data = tmp_path / "odd images"
    rng = np.random.default_rng(0)
    names = ["..hidden.png", "a b#?%.png", "ü.png", "-rf.png", "x;rm -rf.png"]
    for cls in ("cat ../", "dog"):
        folder = data / cls.replace("/", "")
        folder.mkdir(parents=True)
        for name in names:
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(folder / name, format="PNG")
    ctx = run_stage("dataset=image_folder", f"dataset.path={data}", "dataset.shape=[8,8]", "evaluation.num_images=4")
    artifact_root = tmp_path / "mlartifacts"
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)
    assert runs and all(r.info.status == "FINISHED" for r in runs)
    paths = {r.data.tags["Image_path"] for r in runs if "Image_path" in r.data.tags}
    assert paths and paths <= {f"{c.replace('/', '')}/{n}" for c in ("cat ../", "dog") for n in names}
    run_dirs = [_local(r.info.artifact_uri) for r in runs]
    assert all(d.is_relative_to(artifact_root) for d in run_dirs)
    files = [p for p in artifact_root.rglob("*") if p.is_file()]
    models = list(artifact_root.glob("*/models/m-*"))  # MLflow 3 logged models live beside the experiment's runs
    assert files and all(any(p.is_relative_to(d) for d in run_dirs + models) for p in files)
    # mlflow.log_image names its files itself: images/<key, '/' as '~'>+step+<n>+timestamp+<ms>+<uuid>[+compressed]
    image = re.compile(r".*/images/saliency~[A-Za-z0-9_.-]+\+step\+\d+\+timestamp\+\d+\+[0-9a-f-]+(\+compressed)?\.(png|webp)")
    assert all(re.fullmatch(r"[A-Za-z0-9._/-]+", str(p.relative_to(artifact_root))) or image.fullmatch(str(p))
               for p in files)
    assert ctx.results["saliency_run_ids"]


# ----- credentials in a tracking URI ---------------------------------------------------------------------------
SECRET = "s3cr3t-Pa55"


def test_redaction_helpers():
    assert redact_uri(f"http://alice:{SECRET}@host:5000/p") == "http://alice:***@host:5000/p"
    assert redact_uri(f"https://{SECRET}@host") == "https://***@host"
    assert redact_uri(f"postgresql://mlflow:{SECRET}@db/mlflow") == "postgresql://mlflow:***@db/mlflow"
    assert redact_overrides([f"tracking.uri=http://u:{SECRET}@h:1", "seed=1"]) == ["tracking.uri=http://u:***@h:1",
                                                                                  "seed=1"]


@pytest.mark.slow
def test_unanswering_server_error_hides_credentials(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        url = f"http://alice:{SECRET}@127.0.0.1:{sock.getsockname()[1]}"
        proc = run_cli(["stage=train", "progress=false", f"tracking.uri={url}", "tracking.http.timeout=1",
                        "tracking.http.max_retries=0"], cwd=tmp_path, timeout=300)
    assert proc.returncode == 2
    assert "xaitk-exp: error: tracking.uri" in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(postgres_missing_reason() is not None, reason=str(postgres_missing_reason()))
def test_credentials_never_reach_the_record(tmp_path):
    from mlflow import MlflowClient

    with team_server(workers=1) as url:
        with_creds = url.replace("http://", f"http://alice:{SECRET}@")
        single = run_cli(["progress=false", f"tracking.uri={with_creds}", "evaluation.num_images=3"], cwd=tmp_path)
        assert single.returncode == 0, single.stderr[-2000:]
        sweep = run_cli(["-m", "progress=false", f"tracking.uri={with_creds}", "evaluation.num_images=3",
                         "stage=saliency", "saliency=sliding_window,rise"], cwd=tmp_path)
        assert sweep.returncode == 0, sweep.stderr[-2000:]
        client = MlflowClient(url)
        exps = client.search_experiments()
        runs = client.search_runs([e.experiment_id for e in exps], max_results=5000)
        assert len(runs) > 5
        leaks = []
        for run in runs:
            for kind, values in (("param", run.data.params), ("tag", run.data.tags)):
                leaks += [f"{run.info.run_name} {kind} {k}" for k, v in values.items() if SECRET in str(v) + k]
            local = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "dl" / run.info.run_id)))
            for path in local.rglob("*"):
                if path.is_file() and path.suffix in (".yaml", ".json", ".txt", ".csv") and SECRET in path.read_text():
                    leaks.append(f"{run.info.run_name} artifact {path.relative_to(local)}")
        leaks += [f"experiment tag {k}" for e in exps for k, v in e.tags.items() if SECRET in str(v)]
        assert leaks == [], "\n".join(leaks)
        config = yaml.safe_load(next((tmp_path / "dl").rglob("config.yaml")).read_text())
        assert config["tracking"]["uri"] == url  # the user info moved into MLFLOW_TRACKING_USERNAME/PASSWORD
    assert SECRET not in single.stdout + single.stderr
    # each job's console line names its overrides (the tracking URI among them): scrubbed there too
    launched = [line for line in (sweep.stdout + sweep.stderr).splitlines() if re.search(r"\[sweep\] #\d+ ", line)]
    assert len(launched) == 2, sweep.stdout + sweep.stderr
    # the override as Hydra escapes it (``http\://127.0.0.1\:<port>``), its user info gone
    assert re.search(r"tracking\.uri=http\\?://127\.0\.0\.1", launched[0]), launched[0]
    assert not [line for line in launched if SECRET in line or "alice" in line]
    assert SECRET not in sweep.stdout + sweep.stderr
    logs = [p for p in (tmp_path / "outputs").rglob("*.log")]
    assert not [p for p in logs if SECRET in p.read_text()]


# ----- instantiation from stored configs goes through the allow-list ------------------------------------------
UNSAFE = [
    ({"_target_": "os.system", "command": "touch {marker}"}, "_target_='os.system'"),
    ({"model": {"_target_": "builtins.eval", "_args_": ["1"]}}, "model._target_='builtins.eval'"),
    ({"saliency": {"perturber": {"_target_": "subprocess.Popen", "args": ["touch", "{marker}"]}}},
     "saliency.perturber._target_='subprocess.Popen'"),
    ({"steps": [{"_target_": "sklearn.svm.SVC"}, {"_target_": "shutil.rmtree", "path": "{marker}"}]},
     r"steps\[1\]._target_='shutil.rmtree'"),
    ({"_target_": "sklearnx.Evil"}, "_target_='sklearnx.Evil'"),
]


@pytest.mark.parametrize(("node", "names"), [u[:2] for u in UNSAFE], ids=[u[1].split("=")[1] for u in UNSAFE])
def test_stored_config_targets_outside_the_allow_list_are_refused(tmp_path, node, names):
    marker = tmp_path / "marker"
    node = yaml.safe_load(yaml.safe_dump(node).replace("{marker}", str(marker)))
    with pytest.raises(UnsafeConfigError, match=names):
        check_targets(node)
    with pytest.raises(UnsafeConfigError):
        instantiate(node, "")
    assert not marker.exists()


def test_allow_list_accepts_the_shipped_classes_and_explicit_extras():
    rise = "xaitk_saliency.impls.gen_image_classifier_blackbox_sal.rise.RISEStack"
    check_targets({"model": {"_target_": "sklearn.svm.SVC"}, "saliency": {"_target_": rise}})
    check_targets({"_target_": "json.JSONDecoder"}, extra_allowed=["json."])
    with pytest.raises(UnsafeConfigError, match="allow_targets"):
        check_targets({"_target_": "json.JSONDecoder"})


@pytest.mark.with_upstream
def test_a_tampered_stored_config_is_refused(run_stage, client, tmp_path):
    ctx = run_stage("stage=train")
    path = Path(client.download_artifacts(ctx.train_run_id, "config/config.yaml", str(tmp_path)))
    stored = yaml.safe_load(path.read_text())
    check_targets(stored, stored.get("allow_targets") or [])  # as recorded: fine
    stored["model"]["_target_"] = "os.system"
    with pytest.raises(UnsafeConfigError, match=r"model\._target_='os\.system'"):
        check_targets(stored, stored.get("allow_targets") or [])


def test_allowed_prefix_admits_classes_only():
    from xaitk_exp.errors import UnsafeConfigError
    from xaitk_exp.security.targets import check_targets

    check_targets({"_target_": "sklearn.svm.SVC"})
    with pytest.raises(UnsafeConfigError, match="fetch_openml.*not a class"):
        check_targets({"model": {"_target_": "sklearn.datasets.fetch_openml", "name": "mnist_784"}})

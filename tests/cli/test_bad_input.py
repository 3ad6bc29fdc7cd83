"""Every bad input is refused with one line naming the key, the value and what is allowed: before any run is
created, so nothing is left RUNNING, no partial artifact is written and no empty run appears."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from xaitk_exp.app import compose_config, run
from xaitk_exp.cli import GROUPS, precheck_overrides
from xaitk_exp.errors import XaitkExpError

MISSING_RUN = "0123456789abcdef0123456789abcdef"


def compose_cfg(uri: str, *overrides: str):
    return compose_config([f"tracking.uri={uri}", "progress=false", *overrides])


def write_png(path: Path, size: tuple[int, int], value: int = 128) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    Image.fromarray(rng.integers(0, 255, size=(size[1], size[0]), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """One store shared by the module: a finished train, evaluation and saliency, plus a FAILED train run, and
    the image folders the data cases point at."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("bad-input")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    ctx = run(compose_cfg(uri), [], root)
    client = MlflowClient(uri)
    train_exp = client.get_experiment_by_name("MLPClassifier - Train").experiment_id
    failed = client.create_run(train_exp, run_name="train_info")
    client.set_terminated(failed.info.run_id, "FAILED")
    folders = root / "folders"
    (folders / "empty" / "a").mkdir(parents=True)
    (folders / "empty" / "b").mkdir(parents=True)
    for cls in "ab":
        for i in range(4):
            write_png(folders / "corrupt" / cls / f"{i}.png", (8, 8))
            write_png(folders / "mixed" / cls / f"{i}.png", (8, 8) if i else (9, 7))
            write_png(folders / "small" / cls / f"{i}.png", (4, 4))
    (folders / "corrupt" / "b" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a picture")
    return {
        "uri": uri,
        "root": root,
        "client": client,
        "train": ctx.train_run_id,
        "evaluation": ctx.evaluation_run_id,
        "saliency": ctx.results["saliency_run_ids"][0],
        "failed": failed.info.run_id,
        "folders": folders,
    }


def snapshot(base) -> tuple[list[tuple[str, str]], list[str]]:
    """Every run with its status, and every artifact file under the store's folder."""
    client = base["client"]
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = sorted((r.info.run_id, r.info.status) for r in client.search_runs(exps, max_results=5000))
    files = sorted(str(p.relative_to(base["root"])) for p in (base["root"] / "mlartifacts").rglob("*"))
    return runs, files


def _sub(base, text: str) -> str:
    return (
        text.replace("{folders}", str(base["folders"]))
        .replace("{train}", base["train"])
        .replace("{evaluation}", base["evaluation"])
        .replace("{saliency}", base["saliency"])
        .replace("{failed}", base["failed"])
    )


# (id, overrides, the key the message must name, a value it must name, words about what is allowed)
CASES = [
    # wrong types
    ("num-images-text", ["evaluation.num_images=abc"], "evaluation.num_images", "abc", "integer"),
    ("max-results-float", ["query.max_results=1.5"], "query.max_results", "1.5", "integer"),
    ("seed-text", ["seed=abc"], "seed", "abc", "integer"),
    ("force-text", ["force=maybe"], "force", "maybe", "true or false"),
    ("min-conf-text", ["query.min_conf=high"], "query.min_conf", "high", r"\[0, 1\]"),
    ("split-unknown", ["evaluation.split=validation"], "evaluation.split", "validation", "train, test"),
    ("window-text", ["saliency.window_size=abc"], "saliency.window_size", "abc", "positive integers"),
    ("p1-text", ["saliency=rise", "saliency.p1=high"], "saliency.p1", "high", r"\[0, 1\]"),
    ("model-param-type", ["model.hidden_layer_sizes=abc"], "model.hidden_layer_sizes", "abc", "array-like"),
    ("model-param-value", ["model.solver=newton"], "model.solver", "newton", "adam"),
    # window_size / stride zero or negative, window larger than the image (digits are 8x8)
    ("window-zero", ["saliency.window_size=[0,2]"], "saliency.window_size", r"\[0, 2\]", "positive integers"),
    ("window-negative", ["saliency.window_size=[-1,2]"], "saliency.window_size", r"\[-1, 2\]", "positive"),
    ("stride-zero", ["saliency.stride=[0,1]"], "saliency.stride", r"\[0, 1\]", "positive integers"),
    ("stride-negative", ["saliency.stride=[1,-2]"], "saliency.stride", r"\[1, -2\]", "positive"),
    ("window-too-large", ["stage=saliency", "saliency.window_size=[9,9]"], "saliency.window_size", r"\[9, 9\]",
     r"image size \[8, 8\]"),
    ("window-too-large-all", ["force=true", "saliency.window_size=[9,9]"], "saliency.window_size", r"\[9, 9\]",
     r"image size \[8, 8\]"),
    ("grid-too-large", ["stage=saliency", "saliency=occlusion_random_grid", "saliency.perturber.s=[9,2]"],
     "saliency.perturber.s", r"\[9, 2\]", "image size"),
    # p1 outside [0, 1], n = 0
    ("p1-above", ["saliency=rise", "saliency.p1=1.5"], "saliency.p1", "1.5", r"\[0, 1\]"),
    ("p1-below", ["saliency=rise", "saliency.p1=-0.1"], "saliency.p1", "-0.1", r"\[0, 1\]"),
    ("p1-nested", ["saliency=occlusion_random_grid", "saliency.perturber.p1=2.0"], "saliency.perturber.p1", "2.0",
     r"\[0, 1\]"),
    ("n-zero", ["saliency=rise", "saliency.n=0"], "saliency.n", "0", "positive integer"),
    ("n-zero-nested", ["saliency=occlusion_random_grid", "saliency.perturber.n=0"], "saliency.perturber.n", "0",
     "positive integer"),
    ("sqlite-journal", ["stage=train", "tracking.sqlite_journal=memory"], "tracking.sqlite_journal", "memory",
     "wal or delete"),
    # queries
    ("filter-malformed", ["stage=saliency", "query.filter='metrics.Predicted_class_conf >>> 2'"], "query.filter",
     ">>> 2", "MLflow filter"),
    ("filter-unknown-entity", ["stage=saliency", "query.filter='colour.red = 1'"], "query.filter", "colour.red",
     "MLflow filter"),
    ("order-malformed", ["stage=saliency", "query.order_by='metrics.x; drop'"], "query.order_by", "metrics.x; drop",
     "ASC|DESC"),
    ("query-matches-nothing", ["stage=saliency", "query.predicted_class=nope"], "query", "nope", "loosen"),
    # referenced runs
    ("update-missing", ["stage=saliency", f"update_run_id={MISSING_RUN}"], "update_run_id", MISSING_RUN,
     "Saliency Map Generation"),
    ("update-other-experiment", ["stage=saliency", "update_run_id={evaluation}"], "update_run_id", "{evaluation}",
     "Saliency Map Generation"),
    ("train-run-failed", ["stage=evaluation", "train_run_id={failed}"], "train_run_id", "{failed}",
     "FINISHED run .this one is FAILED"),
    ("train-run-missing", ["stage=evaluation", f"train_run_id={MISSING_RUN}"], "train_run_id", MISSING_RUN,
     "MLPClassifier - Train"),
    ("train-run-other-experiment", ["stage=evaluation", "train_run_id={evaluation}"], "train_run_id",
     "{evaluation}", "MLPClassifier - Train"),
    ("evaluation-run-missing", ["stage=saliency", f"evaluation_run_id={MISSING_RUN}"], "evaluation_run_id",
     MISSING_RUN, "Evaluation"),
    ("pretrained-run-missing", ["stage=evaluation", "model=pretrained", f"model.uri=runs:/{MISSING_RUN}/sklearn-model"],
     "model.uri", MISSING_RUN, "existing"),
    ("pretrained-model-missing", ["stage=evaluation", "model=pretrained", "model.uri=models:/nope/1"], "model.uri",
     "models:/nope/1", "existing"),
    ("pretrained-path-missing", ["stage=evaluation", "model=pretrained", "model.uri=runs:/{train}/no-such-folder"],
     "model.uri", "no-such-folder", "existing"),
    # image folders
    ("folder-missing", ["stage=train", "dataset=image_folder", "dataset.path={folders}/nowhere"], "dataset.path",
     "nowhere", "existing folder"),
    ("folder-empty", ["stage=train", "dataset=image_folder", "dataset.path={folders}/empty"], "dataset.path",
     "empty", "sub-folders hold"),
    ("folder-corrupt-image", ["stage=train", "dataset=image_folder", "dataset.path={folders}/corrupt"],
     "dataset.path", "b/2.png", "remove or fix"),
    ("folder-mixed-sizes", ["stage=train", "dataset=image_folder", "dataset.path={folders}/mixed",
                            "dataset.resize=false"], "dataset.resize", "False", "images of one size"),
    ("shape-does-not-fit", ["stage=evaluation", "dataset=image_folder", "dataset.path={folders}/small",
                            "dataset.shape=[4,4]", "train_run_id={train}"], "dataset", r"\[4, 4\]", "expects 64"),
    ("shape-does-not-fit-saliency", ["stage=saliency", "dataset=image_folder", "dataset.path={folders}/small",
                                     "dataset.shape=[4,4]", "evaluation_run_id={evaluation}"], "dataset",
     r"\[4, 4\]", "expects 64"),
]


@pytest.mark.parametrize(("overrides", "key", "value", "allowed"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_in_one_line_before_any_run(base, tmp_path, overrides, key, value, allowed):
    before = snapshot(base)
    cfg = compose_cfg(base["uri"], *[_sub(base, o) for o in overrides])
    with pytest.raises(XaitkExpError) as info:
        run(cfg, overrides, tmp_path)
    message = str(info.value)
    assert "\n" not in message, message
    assert re.search(rf"(^|\W){re.escape(key)}\W", message), f"key {key!r} not named: {message}"
    assert re.search(_sub(base, value), message), f"value {value!r} not named: {message}"
    assert re.search(allowed, message), f"what is allowed ({allowed!r}) not said: {message}"
    after = snapshot(base)
    assert after == before, "a refused input left a run or an artifact behind"
    assert all(status != "RUNNING" for _, status in after[0])


@pytest.mark.parametrize("group", GROUPS)
def test_unknown_option_in_any_group(group):
    message = precheck_overrides([f"{group}=no_such_option"])
    assert message is not None and "\n" not in message
    assert message.startswith(f"{group}='no_such_option' is invalid: one of ")
    # the message lists the real options, and a comma-separated sweep is checked option by option
    assert "no_such_option" in precheck_overrides([f"{group}={_an_option(group)},no_such_option"])
    assert precheck_overrides([f"{group}={_an_option(group)}"]) is None


def _an_option(group: str) -> str:
    from xaitk_exp.cli import group_options

    return group_options(group)[0]


@pytest.mark.parametrize(
    "uri",
    ["ftp://127.0.0.1/store", "htp://127.0.0.1:5000", "/just/a/path", "mlruns"],
    ids=["ftp", "typo", "bare-path", "relative"],
)
def test_unknown_tracking_uri_scheme(tmp_path, uri):
    cfg = compose_cfg(uri)
    with pytest.raises(XaitkExpError, match=r"^tracking\.uri='.*' is invalid: a URI with scheme sqlite, ") as info:
        run(cfg, [], tmp_path)
    assert "\n" not in str(info.value)
    assert not any(tmp_path.rglob("*.db")) and not (tmp_path / "mlruns").exists()


# ----- the installed command: one line on stderr, exit 2, nothing RUNNING ---------------------------------------
CLI_CASES = [
    ("unknown-group-option", ["saliency=no_such_saliency"], r"saliency='no_such_saliency' is invalid: one of "),
    ("window-zero", ["saliency.window_size=[0,2]"], r"saliency\.window_size=\[0, 2\] is invalid: two positive"),
    ("n-jobs-text", ["n_jobs=abc"], r"n_jobs='abc' is invalid: an integer$"),
    ("unknown-scheme", ["tracking.uri=ftp://127.0.0.1/x"], r"tracking\.uri='ftp://127\.0\.0\.1/x' is invalid"),
    ("folder-missing", ["dataset=image_folder", "dataset.path=nowhere"], r"dataset\.path='nowhere' is invalid"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("args", "pattern"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_prints_one_error_line_and_exits_2(tmp_path, args, pattern):
    proc = run_cli(["progress=false", *args], cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("xaitk-exp: error: ")]
    assert len(errors) == 1, proc.stderr
    assert re.search(pattern, errors[0]), errors[0]
    assert "Traceback" not in proc.stderr
    db = tmp_path / "outputs" / "mlflow.db"
    if db.exists():
        from mlflow import MlflowClient

        client = MlflowClient(f"sqlite:///{db}")
        exps = [e.experiment_id for e in client.search_experiments()]
        assert client.search_runs(exps) == []

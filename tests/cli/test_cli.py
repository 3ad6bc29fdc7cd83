"""The installed command in a subprocess, typed as the README shows it."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, copy_store, exe, run_cli

pytestmark = pytest.mark.slow


def _client(cwd: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{cwd / 'outputs' / 'mlflow.db'}")


def _readme_line(prefix: str) -> str:
    lines = [ln.split("  #")[0].strip() for ln in (ROOT / "README.md").read_text().splitlines()]
    lines = [ln.removeprefix(".venv/bin/") for ln in lines]  # the README names the command in the project's venv
    return next(ln for ln in lines if ln.startswith(prefix))


def test_default_pipeline_as_a_user_runs_it(tmp_path):
    proc = run_cli([], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    client = _client(tmp_path)
    names = {e.name for e in client.search_experiments()} - {"Default"}
    assert names == {"MLPClassifier - Train", "MLPClassifier - Evaluation", "MLPClassifier - Saliency Map Generation"}
    sal = client.get_experiment_by_name("MLPClassifier - Saliency Map Generation")
    (run,) = client.search_runs([sal.experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["Saliency_algorithm"] == "sliding_window"
    ev = client.get_experiment_by_name("MLPClassifier - Evaluation")
    assert len(client.search_runs([ev.experiment_id], "tags.Run_type = 'image'")) == 20
    saved = list((tmp_path / "outputs" / "runs").glob("*/*/.hydra/config.yaml"))
    assert len(saved) == 1
    assert "mlflow ui --backend-store-uri" in proc.stdout
    assert "evaluation runs" in proc.stderr  # the progress bar


def test_readme_seed_query_line_works_in_a_shell(tmp_path, upstream_template):
    # the default train run and evaluation (20 images, one a '4' above 0.9) that the default pipeline test makes
    # with the command: a copy of the session's store, in the default store's place
    (tmp_path / "outputs").mkdir()
    copy_store(upstream_template, tmp_path / "outputs")
    line = _readme_line("xaitk-exp stage=saliency 'query.filter=")
    words = shlex.split(line)
    assert words[2] == "query.filter=\"metrics.Predicted_class_conf >= 0.9 and tags.Predicted_class = '4'\""
    command = shlex.join(exe()) + line[len("xaitk-exp"):]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # the default store, as for a user
    proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    client = _client(tmp_path)
    sal = client.get_experiment_by_name("MLPClassifier - Saliency Map Generation")
    (run,) = client.search_runs([sal.experiment_id])
    assert run.data.tags["Predicted_class"] == "4" and run.data.metrics["Predicted_class_conf"] >= 0.9


@pytest.mark.parametrize(
    "args, expect",
    [
        (["--help"], "saliency: "),
        (["--cfg", "job"], "hidden_layer_sizes"),
        (["--info"], "Config search path"),
        (["saliency=rise", "saliency.n=2000", "--cfg", "job"], "'n': 2000"),
    ],
)
def test_hydra_flags(tmp_path, args, expect):
    proc = run_cli(args, tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert expect in proc.stdout
    assert not (tmp_path / "outputs" / "mlflow.db").exists()


def test_python_dash_m_is_the_same_command(tmp_path):
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "xaitk_exp", "model=svc", "--cfg", "job"], cwd=tmp_path, capture_output=True,
        text=True, timeout=120,
    )
    assert proc.returncode == 0 and "sklearn.svm.SVC" in proc.stdout


def test_unknown_option_is_one_line_and_nonzero(tmp_path):
    proc = run_cli(["saliency=nope"], tmp_path, timeout=120)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "saliency='nope'" in lines[0] and "sliding_window" in lines[0]


def test_rerun_from_hydra_saved_config_gives_the_same_maps(tmp_path):
    first = run_cli(["saliency=rise", "saliency.n=300", "seed=5", "query.max_results=2"], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    (saved,) = list((tmp_path / "outputs" / "runs").glob("*/*/.hydra"))
    second = run_cli(["--config-path", str(saved), "--config-name", "config", "force=true"], tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    client = _client(tmp_path)
    sal = client.get_experiment_by_name("MLPClassifier - Saliency Map Generation")
    runs = client.search_runs([sal.experiment_id], order_by=["attributes.start_time ASC"])
    assert len(runs) == 4
    by_image: dict[str, list[np.ndarray]] = {}
    for run in runs:
        path = client.download_artifacts(run.info.run_id, "saliency_map_np_arrays/saliency_maps.npy", str(tmp_path))
        by_image.setdefault(run.data.tags["Image_id"], []).append(np.load(path))
    assert len(by_image) == 2
    for maps in by_image.values():
        assert len(maps) == 2 and np.array_equal(maps[0], maps[1])

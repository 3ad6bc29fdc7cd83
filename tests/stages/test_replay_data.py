"""A stored config is data: a teammate's planted run whose config reads this process's environment (or runs a
resolver) is refused in one line by ``stage=reproduce`` and by a rerun from a ``.hydra`` folder; the secret reaches
no tag, description, param or artifact, and no run is left RUNNING."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from conftest import run_cli
from omegaconf import OmegaConf

from xaitk_exp.errors import UnsafeConfigError

SECRET = "pw-of-the-reproducer-7f3a9c"
PLANTS = {
    "env": "${oc.env:PLANTED_PASSWORD,none}",
    "decode": "${oc.decode:${oc.env:PLANTED_PASSWORD}}",
    "nested": "digits-${oc.env:PLANTED_PASSWORD}",
    "custom": "${planted_marker:x}",
    "reference": "${tracking.uri}",
}


def _plant(client, tmp_path: Path, value: str, key: str = "dataset") -> str:
    """A train run, as a READ user could forge it, whose stored config carries ``value`` under ``<key>.name``."""
    from xaitk_exp.stages.provenance import package_versions

    exp = client.get_experiment_by_name("MLPClassifier - Train")
    exp_id = exp.experiment_id if exp else client.create_experiment(
        "MLPClassifier - Train", artifact_location=(tmp_path / "planted").as_uri())
    run = client.create_run(exp_id, tags={"xaitk_exp.stage": "train"})
    base = yaml.safe_load((Path(__file__).parents[2] / "conf" / "config.yaml").read_text())
    base.pop("defaults"), base.pop("hydra")
    base.update(
        dataset={"_target_": "xaitk_exp.data.Digits", "name": "digits", "test_size": 0.25, "seed": 0},
        model={"_target_": "sklearn.neural_network.MLPClassifier", "hidden_layer_sizes": [5], "max_iter": 2},
        saliency={"_target_": "xaitk_saliency.impls.gen_image_classifier_blackbox_sal.rise.RISEStack",
                  "name": "rise", "n": 10, "s": 2, "p1": 0.5, "seed": 0},
        logging={"level": "low"},
    )
    base = OmegaConf.to_container(OmegaConf.create(base), resolve=True)  # recorded configs are resolved
    base[key]["name"] = value
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(base))
    client.log_artifact(run.info.run_id, str(config), "config")
    client.log_text(run.info.run_id, json.dumps(package_versions()), "config/environment.json")
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def _everything_recorded(client, root: Path) -> str:
    """Every tag, param and artifact file of every run in the store, as one text."""
    exps = [e.experiment_id for e in client.search_experiments()]
    parts = []
    for run in client.search_runs(exps, max_results=10000):
        parts += [json.dumps(run.data.tags), json.dumps(run.data.params), run.info.run_name or ""]
    parts += [p.read_text(errors="replace") for p in root.rglob("*") if p.is_file() and p.suffix != ".db"]
    return "\n".join(parts)


def _running(client) -> list:
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, "attributes.status = 'RUNNING'")


@pytest.mark.parametrize("plant", list(PLANTS), ids=list(PLANTS))
def test_reproduce_refuses_interpolations_in_a_stored_config(run_stage, client, tmp_path, monkeypatch, plant):
    monkeypatch.setenv("PLANTED_PASSWORD", SECRET)
    marker = tmp_path / "resolver-ran"
    OmegaConf.register_new_resolver("planted_marker", lambda _: marker.touch() or "x", replace=True)
    try:
        run_id = _plant(client, tmp_path, PLANTS[plant])
        with pytest.raises(UnsafeConfigError) as info:
            run_stage("stage=reproduce", f"run_id={run_id}")
    finally:
        OmegaConf.clear_resolver("planted_marker")
    message = str(info.value)
    assert message.startswith(f"run {run_id}: the stored config/config.yaml is refused: dataset.name=")
    assert "interpolations and resolvers are refused, not resolved" in message and "\n" not in message
    assert SECRET not in message and not marker.exists()
    assert SECRET not in _everything_recorded(client, tmp_path)
    assert _running(client) == []
    exps = [e.experiment_id for e in client.search_experiments()]
    assert client.search_runs(exps, f"tags.reproduced_from = '{run_id}'") == []


@pytest.mark.slow
def test_cli_reproduce_of_a_planted_password_reader_is_one_line(client, store, tmp_path):
    run_id = _plant(client, tmp_path, PLANTS["env"])
    result = run_cli(["stage=reproduce", f"run_id={run_id}", f"tracking.uri={store}"], tmp_path,
                     env={"PLANTED_PASSWORD": SECRET, "MLFLOW_TRACKING_PASSWORD": SECRET})
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("xaitk-exp: error: run "), result.stderr
    assert "dataset.name='${oc.env:PLANTED_PASSWORD,none}' holds an interpolation" in lines[0]
    assert SECRET not in result.stdout + result.stderr
    assert SECRET not in _everything_recorded(client, tmp_path)
    assert _running(client) == []


@pytest.mark.slow
def test_rerun_from_a_planted_hydra_folder_runs_no_resolver(tmp_path):
    """A ``.hydra`` folder someone else edited: its resolvers are refused in one line, its secret goes nowhere."""
    folder = tmp_path / "shared" / ".hydra"
    folder.mkdir(parents=True)
    composed = run_cli(["--cfg", "job", "stage=train"], tmp_path, timeout=120)
    assert composed.returncode == 0, composed.stderr[-2000:]
    cfg = yaml.safe_load(composed.stdout)
    cfg["dataset"]["name"] = "${oc.env:PLANTED_PASSWORD}"
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    result = run_cli(["--config-path", str(folder), "--config-name", "config", "progress=false"], tmp_path,
                     env={"PLANTED_PASSWORD": SECRET})
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert f"the config read from {folder}: dataset.name='${{oc.env:PLANTED_PASSWORD}}' calls a resolver" in lines[0]
    assert SECRET not in result.stdout + result.stderr
    recorded = [p for p in (tmp_path / "outputs").rglob("*") if p.is_file() and p.suffix != ".db"] \
        if (tmp_path / "outputs").exists() else []
    assert not [p for p in recorded if SECRET in p.read_text(errors="replace")]
    assert not (tmp_path / "outputs" / "mlflow.db").exists()  # refused before the store opened
    assert os.environ.get("PLANTED_PASSWORD") != SECRET

"""Sweeps: real multiruns of the installed command (parallel joblib, submitit_local, in-process basic launcher)
on a fresh SQLite store; the summary helpers; parallel saliency inside a job."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from conftest import experiment_runs, local_client, run_cli, sweep_table

from xaitk_exp.errors import ConfigError
from xaitk_exp.sweep.summary import rank_rows

SMALL = ["progress=false", "evaluation.num_images=2"]
MAPS = "saliency_map_np_arrays/saliency_maps.npy"


def sweep_parents(runs: list) -> list:
    """The sweeps' parent runs among ``runs``."""
    return [r for r in runs if r.data.tags.get("Run_type") == "sweep"]


@pytest.mark.slow
def test_parallel_saliency_sweep_on_fresh_store_then_relaunch_skips_finished_jobs(tmp_path: Path) -> None:
    args = ["-m", "saliency=rise,mc_rise", "saliency.n=200",  # as typed: the default has no n (cli precheck_sweep)
            "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
            "sweep.metric=Predicted_class_conf", *SMALL]
    first = run_cli(args, tmp_path, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "duplicate column" not in first.stderr and "database is locked" not in first.stderr
    # the console: the parent's link, the shared upstream, one line per job, the ranking, the end, the UI command
    lines = first.stdout.splitlines()
    assert len(lines) == 7, first.stdout
    assert sum(line.startswith("[sweep] #") for line in lines) == 2 and "View run" not in first.stdout
    assert "Launching" not in first.stdout and "evaluation runs:" not in first.stderr, "no launcher lines, no bars"
    client = local_client(tmp_path)

    train = experiment_runs(client, "MLPClassifier - Train")
    summaries = [r for r in experiment_runs(client, "MLPClassifier - Evaluation") if r.data.tags.get("Run_type") == "summary"]
    saliency_exp = experiment_runs(client, "MLPClassifier - Saliency Map Generation")
    parents = sweep_parents(saliency_exp)
    maps = [r for r in saliency_exp if r not in parents]
    assert len(train) == 1 and len(summaries) == 1, "jobs sharing an upstream must train and evaluate once"
    assert len(parents) == 1 and len(maps) == 2
    parent = parents[0]
    assert {r.info.status for r in [*train, *summaries, *maps, parent]} == {"FINISHED"}
    assert sorted(r.data.tags["Saliency_algorithm"] for r in maps) == ["mc_rise", "rise"]
    assert [r.data.params["n"] for r in maps] == ["200", "200"], "saliency.n=200 reached both jobs"
    for run in [*train, *summaries, *maps]:
        assert run.data.tags["Sweep_run_id"] == parent.info.run_id
    for run in maps:  # same experiment as the parent: nested under it
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"sweep_summary.json", "sweep_summary.csv", "sweep_montage.png"} <= artifacts
    rows = sweep_table(client, parent.info.run_id, tmp_path / "s1")
    assert [r["status"] for r in rows] == ["FINISHED", "FINISHED"]
    assert sorted(r["algorithm"] for r in rows) == ["mc_rise", "rise"]
    assert all("saliency=" in r["overrides"] and float(r["runtime_s"]) > 0 for r in rows)
    assert [r["rank"] for r in rows] == ["1", "2"]
    conf = [float(r["saliency.Predicted_class_conf"]) for r in rows]
    assert conf == sorted(conf, reverse=True)
    assert parent.data.metrics["jobs_finished"] == 2.0
    from PIL import Image

    with Image.open(client.download_artifacts(parent.info.run_id, "sweep_montage.png", str(tmp_path / "m"))) as im:
        assert im.size[0] > 3 * 96, "one column for the image and one per algorithm"

    # relaunch, joblib again: every job's runs exist, so the callback looks them up in its own process
    second = run_cli(args, tmp_path, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "all 2 job(s) have FINISHED runs with the same config: looking them up here" in second.stdout
    outputs = [p.read_text() for p in (tmp_path / "outputs" / "multirun").rglob("output.txt")]
    assert sum(text.count("reusing 1 FINISHED run(s)") for text in outputs) == 2, "each job's own lines, in its folder"
    saliency_exp = experiment_runs(client, "MLPClassifier - Saliency Map Generation")
    assert len(sweep_parents(saliency_exp)) == 2
    assert len([r for r in saliency_exp if r.data.tags.get("Run_type") != "sweep"]) == 2, "nothing recomputed"
    assert len(experiment_runs(client, "MLPClassifier - Train")) == 1
    new_parent = next(r for r in sweep_parents(saliency_exp) if r.info.run_id != parent.info.run_id)
    assert new_parent.info.status == "FINISHED"
    rows = sweep_table(client, new_parent.info.run_id, tmp_path / "s2")
    assert [r["status"] for r in rows] == ["REUSED", "REUSED"]
    assert {r["saliency_run_ids"] for r in rows} == {r.info.run_id for r in maps}


@pytest.mark.slow
def test_hyperparameter_sweep_trains_once_per_combination_and_lists_a_failed_job(tmp_path: Path) -> None:
    args = ["-m", "stage=train", "model.hidden_layer_sizes=[20],[30]", "model.learning_rate_init=0.01,0.1",
            "model.max_iter=3", *SMALL]
    result = run_cli(args, tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    client = local_client(tmp_path)
    runs = experiment_runs(client, "MLPClassifier - Train")
    parent = sweep_parents(runs)[0]
    train = [r for r in runs if r is not parent]
    combos = {(r.data.params["hidden_layer_sizes"], r.data.params["learning_rate_init"]) for r in train}
    assert len(train) == 4 and len(combos) == 4
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in train)

    again = ["-m", "stage=train", "model.hidden_layer_sizes=[20]", "model.learning_rate_init=0.01",
             "model.max_iter=3,-1"]
    failing = run_cli([*again, *SMALL], tmp_path, timeout=300)
    assert failing.returncode != 0
    parent = next(r for r in sweep_parents(experiment_runs(client, "MLPClassifier - Train")) if r.info.run_id != parent.info.run_id)
    assert parent.info.status == "FAILED"
    assert "1 of 2 job(s) failed" in parent.data.tags["error"]
    rows = {r["overrides"]: r for r in sweep_table(client, parent.info.run_id, tmp_path / "s")}
    bad = next(r for k, r in rows.items() if "max_iter=-1" in k)
    good = next(r for k, r in rows.items() if "max_iter=3" in k)
    assert bad["status"] == "FAILED" and "max_iter" in bad["error"]
    assert good["status"] == "REUSED" and good["error"] == ""


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("submitit") is None, reason="submitit (extra 'slurm') not installed")
def test_submitit_local_sweep(tmp_path: Path) -> None:
    args = ["-m", "hydra/launcher=submitit_local", "stage=train", "model.learning_rate_init=0.05,0.2",
            "model.max_iter=3", *SMALL]
    result = run_cli(args, tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = experiment_runs(local_client(tmp_path), "MLPClassifier - Train")
    parent = sweep_parents(runs)[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["Sweep_launcher"] == "LocalLauncher"
    assert len([r for r in runs if r.data.tags.get("Sweep_run_id") == parent.info.run_id]) == 2


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
                    reason="hydra-submitit-launcher (extra 'slurm') not installed")
def test_slurm_launcher_overlay_composes() -> None:
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="xaitk_exp.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.cpus_per_task == 4 and launcher.timeout_min == 120
    assert cfg.hydra.callbacks.sweep._target_ == "xaitk_exp.sweep.callback.SweepCallback"


def test_rank_rows_by_direction_with_unranked_jobs_last() -> None:
    rows = [
        {"job": 0, "status": "FINISHED", "saliency.Deletion_AUC": 0.4},
        {"job": 1, "status": "FAILED", "error": "boom"},
        {"job": 2, "status": "FINISHED", "saliency.Deletion_AUC": 0.1},
        {"job": 3, "status": "REUSED", "saliency.Deletion_AUC": 0.3},
    ]
    assert [r["job"] for r in rank_rows([dict(r) for r in rows], "saliency.Deletion_AUC", "max")] == [0, 3, 2, 1]
    ranked = rank_rows([dict(r) for r in rows], "Deletion_AUC", "min")
    assert [r["job"] for r in ranked] == [2, 3, 0, 1]
    assert [r.get("rank") for r in ranked] == [1, 2, 3, None]
    assert rank_rows([dict(r) for r in rows], None) == rows
    with pytest.raises(ConfigError, match=r"sweep.metric='Accuracy' is invalid: a summary column: .*Deletion_AUC"):
        rank_rows([dict(r) for r in rows], "Accuracy")
    with pytest.raises(ConfigError, match="sweep.mode='best' is invalid: one of auto, max, min"):
        rank_rows([dict(r) for r in rows], "Deletion_AUC", "best")


@pytest.mark.slow
def test_parallel_saliency_in_a_job_is_bit_identical(run_stage, client, tmp_path: Path) -> None:
    base = ["saliency=rise", "saliency.n=200", "evaluation.num_images=4", "query.max_results=4"]
    run_stage(*base)
    run_stage(*base, "stage=saliency", "n_jobs=2", "force=true")
    exp = client.get_experiment_by_name("MLPClassifier - Saliency Map Generation")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    assert len(runs) == 8
    by_image: dict[str, list[np.ndarray]] = {}
    records: dict[str, list[tuple]] = {}
    for i, run in enumerate(runs):
        path = client.download_artifacts(run.info.run_id, MAPS, str(tmp_path / str(i)))
        by_image.setdefault(run.data.tags["Image_id"], []).append(np.load(path))
        files = sorted(a.path for a in client.list_artifacts(run.info.run_id)) + sorted(
            a.path for a in client.list_artifacts(run.info.run_id, "saliency_map_np_arrays"))
        records.setdefault(run.data.tags["Image_id"], []).append(
            (run.info.status, run.data.metrics, run.data.params, run.data.tags["Predicted_class_index"], files))
    assert len(by_image) == 4
    for serial, parallel in by_image.values():
        assert serial.tobytes() == parallel.tobytes()
    # the quality metrics, made in the workers too, are the same numbers; every file is there
    for serial, parallel in records.values():
        assert serial == parallel
        assert serial[0] == "FINISHED" and "Deletion_AUC" in serial[1]
        assert "Image_saliency_maps.png" in serial[4] and "Deletion_insertion_curves.png" in serial[4]


def test_a_saliency_sweep_without_a_metric_ranks_by_the_maps_faithfulness() -> None:
    from xaitk_exp.sweep.summary import default_metric

    rows = [{"job": 0, "evaluation.Accuracy": 0.9, "saliency.Deletion_AUC": 0.3, "saliency.Insertion_AUC": 0.7},
            {"job": 1, "evaluation.Accuracy": 0.9, "saliency.Deletion_AUC": 0.1, "saliency.Insertion_AUC": 0.6},
            {"job": 2, "status": "FAILED"}]
    metric = default_metric(rows)
    assert metric == "saliency.Deletion_AUC"
    ranked = rank_rows(rows, metric)
    assert [r["job"] for r in ranked] == [1, 0, 2] and ranked[0]["ranked_by"] == "saliency.Deletion_AUC (min)"
    assert default_metric([{"job": 0, "evaluation.Accuracy": 0.9}]) is None, "a training sweep: no default"

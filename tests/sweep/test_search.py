"""Optuna searches (``hydra/sweeper=optuna``): the space and objective checks, then real studies of the installed
command on a fresh SQLite store, continued by a relaunch; a saliency search on a fixed model."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import experiment_runs, local_client, run_cli, sweep_table

from xaitk_exp.errors import ConfigError
from xaitk_exp.sweep.space import check_objectives, directions, objectives, parse_space

OPTUNA = ["-m", "hydra/sweeper=optuna", "progress=false"]


# ----- the space and the objective (no study) ------------------------------------------------------------------------
def test_space_from_hydra_sweep_syntax_and_params() -> None:
    fixed, space = parse_space(
        ["stage=evaluation", "model.learning_rate_init=tag(log, interval(0.001, 0.5))", "saliency.s=range(2,8,2)",
         "saliency=rise,mc_rise", "++saliency.p1=interval(0.2,0.8)"],
        {"model.alpha": "tag(int, interval(1, 5))", "saliency": {"s": "choice(9)"}, "seed": "3"}, None)
    assert fixed == ["seed=3", "stage=evaluation"]
    by_key = {p.key: p for p in space}
    lr = by_key["model.learning_rate_init"]
    assert (lr.kind, lr.low, lr.high, lr.log) == ("float", 0.001, 0.5, True)
    assert (by_key["saliency.s"].kind, by_key["saliency.s"].low, by_key["saliency.s"].high) == ("int", 2, 6)
    assert by_key["saliency"].choices == ["rise", "mc_rise"]
    assert by_key["model.alpha"].kind == "int" and by_key["saliency.p1"].override(0.5) == "++saliency.p1=0.5"
    assert lr.override(0.01) == "model.learning_rate_init=0.01"


@pytest.mark.parametrize("override, message", [
    ("model.alpha=interval(0.5, 0.5)", r"model.alpha='interval\(0.5, 0.5\)' is invalid: a non-empty interval"),
    ("model.alpha=tag(log, interval(0, 1))", "low > 0 on a log scale"),
    ("saliency.n=range(10, 5)", "a non-empty range"),
    ("model.alpha=tag(grid, interval(0, 1))", "tags log and int only"),
])
def test_bad_space_is_one_error(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_space([override], None, None)


def test_objectives_and_directions() -> None:
    from omegaconf import OmegaConf

    assert objectives({"objective": "Deletion_AUC"}) == ["saliency.Deletion_AUC"]
    assert objectives({"objective": ["Accuracy", "saliency.MuFidelity"]}) == ["evaluation.Accuracy",
                                                                              "saliency.MuFidelity"]
    assert directions(["saliency.Deletion_AUC", "evaluation.Accuracy", "train.Train loss"], None) == [
        "minimize", "maximize", "minimize"]
    assert directions(["evaluation.Accuracy"], "min") == ["minimize"]
    with pytest.raises(ConfigError, match="hydra.sweeper.direction"):
        directions(["saliency.Complexity"], None)
    with pytest.raises(ConfigError, match="sweep.objective=None"):
        objectives({"objective": None, "metric": None})
    job = OmegaConf.create({"stage": "train", "metrics": {"enabled": True}})
    with pytest.raises(ConfigError, match=r"sweep.objective='saliency.Deletion_AUC' is invalid: a metric that "
                                          r"stage=train logs: train.Train accuracy, train.Train loss"):
        check_objectives(["saliency.Deletion_AUC"], job)
    check_objectives(["evaluation.Accuracy"], OmegaConf.create({"stage": "all", "metrics": {"enabled": True}}))


def test_default_storage_is_beside_the_tracking_store(tmp_path: Path) -> None:
    from xaitk_exp.app import compose_config
    from xaitk_exp.sweep.study import resolve_storage

    cfg = compose_config([f"tracking.uri=sqlite:///{tmp_path}/db/mlflow.db"])
    assert resolve_storage(cfg, None) == f"sqlite:///{tmp_path}/db/optuna.db"
    assert resolve_storage(cfg, "sqlite:///elsewhere.db") == "sqlite:///elsewhere.db"
    cfg = compose_config(["tracking.uri=postgresql://team@127.0.0.1:5432/mlflow"])
    assert resolve_storage(cfg, None) == ("postgresql+psycopg://team@127.0.0.1:5432/mlflow"
                                          "?options=-csearch_path%3Doptuna"), "own schema: both keep alembic_version"


# ----- real studies ----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_bad_spaces_fail_with_one_line_before_any_trial(tmp_path: Path) -> None:
    cases = {
        "model.no_such_key=interval(0.1, 0.2)": "model.no_such_key",
        "model.learning_rate_init=interval(0.2, 0.1)": "a non-empty interval",
    }
    for override, needle in cases.items():
        result = run_cli([*OPTUNA, override, "sweep.objective=evaluation.Accuracy"], tmp_path, timeout=120)
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert result.returncode == 2 and len(lines) == 1 and needle in lines[0], result.stderr[-2000:]
    result = run_cli([*OPTUNA, "stage=train", "model.learning_rate_init=interval(0.01, 0.1)",
                      "sweep.objective=saliency.Deletion_AUC"], tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip() == ("xaitk-exp: error: sweep.objective='saliency.Deletion_AUC' is invalid: a metric "
                                     "that stage=train logs: train.Train accuracy, train.Train loss")
    client = local_client(tmp_path)  # nothing was started
    assert not (tmp_path / "outputs" / "mlflow.db").exists() or not experiment_runs(client, "MLPClassifier - Train")


@pytest.mark.slow
def test_model_search_runs_end_to_end_and_a_relaunch_continues_the_study(tmp_path: Path) -> None:
    args = [*OPTUNA, "evaluation.num_images=3", "model.max_iter=3",
            "model.learning_rate_init=tag(log, interval(0.001, 0.5))", "sweep.objective=evaluation.Accuracy",
            "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2", "hydra.sweeper.study_name=lr",
            "hydra.sweeper.sampler.seed=1"]
    first = run_cli([*args, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], tmp_path, timeout=400)
    assert first.returncode == 0, first.stderr[-3000:]
    client = local_client(tmp_path)
    # an objective on the evaluation: the trials run no saliency stage, the parent sits in the evaluation experiment
    assert experiment_runs(client, "MLPClassifier - Saliency Map Generation") == []
    evaluation = experiment_runs(client, "MLPClassifier - Evaluation")
    parents = [r for r in evaluation if r.data.tags.get("Run_type") == "sweep"]
    assert len(parents) == 1
    parent = parents[0]
    pid = parent.info.run_id
    assert parent.info.status == "FINISHED" and parent.data.tags["Sweep_study"] == "lr"
    summaries = [r for r in evaluation if r.data.tags.get("Run_type") == "summary"]
    train = experiment_runs(client, "MLPClassifier - Train")
    for runs in (summaries, train):
        assert sorted(r.data.tags["Trial_number"] for r in runs) == ["0", "1", "2", "3"]
        assert all(r.data.tags["Sweep_run_id"] == pid for r in runs)
    # each trial's runs carry its number in their names: four summaries, four names
    assert sorted(r.info.run_name for r in summaries) == [f"trial-{n}_Evaluation_test_summary" for n in range(4)]
    assert sorted(r.info.run_name for r in train) == [f"trial-{n}_train_info" for n in range(4)]
    assert all(r.data.tags["mlflow.parentRunId"] == pid for r in summaries)
    images = [r for r in evaluation if r.data.tags.get("Run_type") == "image"]
    assert len(images) == 12 and not any("mlflow.parentRunId" in r.data.tags for r in images)
    assert first.stdout.count("[search] trial ") == 4 and "[sweep] #" not in first.stdout
    accuracies = {r.data.tags["Trial_number"]: r.data.metrics["Accuracy"] for r in summaries}
    best = parent.data.tags["Best_trial"]
    assert parent.data.metrics["Best_value"] == max(accuracies.values()) == accuracies[best]
    best_lr = next(r for r in train if r.data.tags["Trial_number"] == best).data.params["learning_rate_init"]
    assert float(parent.data.tags["Best.model.learning_rate_init"]) == pytest.approx(float(best_lr))
    artifacts = {a.path for a in client.list_artifacts(pid)} | {a.path for a in client.list_artifacts(pid, "study")}
    assert {"sweep_summary.csv", "sweep_summary.json", "study/optimization_history.png",
            "study/param_importances.png"} <= artifacts
    rows = sweep_table(client, pid, tmp_path / "t1")
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4"] and rows[0]["trial"] == best
    assert all(r["status"] == "FINISHED" and r["evaluation.Accuracy"] for r in rows)
    assert (tmp_path / "outputs" / "optuna.db").exists()

    again = run_cli(args, tmp_path, timeout=400)  # the same command: the study goes on, in the same parent run
    assert again.returncode == 0, again.stderr[-3000:]
    assert "continuing (4 trials so far)" in again.stdout
    evaluation = experiment_runs(client, "MLPClassifier - Evaluation")
    parents = [r for r in evaluation if r.data.tags.get("Run_type") == "sweep"]
    assert [p.info.run_id for p in parents] == [pid] and parents[0].info.status == "FINISHED"
    assert parents[0].data.metrics["trials"] == 8.0
    rows = sweep_table(client, pid, tmp_path / "t2")
    assert sorted(int(r["trial"]) for r in rows) == list(range(8))
    new = {r.data.tags["Trial_number"] for r in evaluation if r.data.tags.get("Run_type") == "summary"}
    reused = {r["trial"] for r in rows if r["status"] == "REUSED"}
    assert {"4", "5", "6", "7"} <= new | reused
    with sqlite3.connect(tmp_path / "outputs" / "optuna.db") as db:
        assert db.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0] == 8


@pytest.mark.slow
def test_saliency_search_on_a_fixed_model_trains_and_evaluates_once(tmp_path: Path) -> None:
    args = [*OPTUNA, "saliency=rise", "evaluation.num_images=2", "saliency.n=range(20, 61, 20)",
            "saliency.s=range(2, 5)", "saliency.p1=interval(0.2, 0.8)", "sweep.objective=Deletion_AUC",
            "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=3", "hydra.sweeper.sampler.seed=0"]
    result = run_cli(args, tmp_path, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    client = local_client(tmp_path)
    assert len(experiment_runs(client, "MLPClassifier - Train")) == 1, "the fixed model is trained once"
    evaluations = [r for r in experiment_runs(client, "MLPClassifier - Evaluation") if r.data.tags.get("Run_type") == "summary"]
    assert len(evaluations) == 1
    saliency = experiment_runs(client, "MLPClassifier - Saliency Map Generation")
    parent = next(r for r in saliency if r.data.tags.get("Run_type") == "sweep")
    maps = [r for r in saliency if r is not parent]
    assert sorted(r.data.tags["Trial_number"] for r in maps) == ["0", "1", "2"]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in maps)
    assert parent.data.tags["Sweep_direction"] == "minimize"
    assert parent.data.metrics["Best_value"] == min(r.data.metrics["Deletion_AUC"] for r in maps)
    assert {"Best.saliency.n", "Best.saliency.s", "Best.saliency.p1"} <= set(parent.data.tags)


@pytest.mark.slow
def test_failed_trials_do_not_stop_a_study_with_two_objectives(tmp_path: Path) -> None:
    args = [*OPTUNA, "stage=train", "model.max_iter=choice(-1, 2, 3)",
            "sweep.objective=[train.Train accuracy,train.Train loss]", "hydra.sweeper.n_trials=3",
            "hydra.sweeper.n_jobs=3", "hydra.sweeper.sampler._target_=optuna.samplers.BruteForceSampler"]
    result = run_cli(args, tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[search] trial" in result.stderr and "FAILED" in result.stderr
    client = local_client(tmp_path)
    runs = experiment_runs(client, "MLPClassifier - Train")
    parent = next(r for r in runs if r.data.tags.get("Run_type") == "sweep")
    assert parent.info.status == "FINISHED", "a failed trial is a FAIL trial, not a failed study"
    assert parent.data.metrics["trials_failed"] == 1.0 and parent.data.metrics["trials_complete"] == 2.0
    assert parent.data.tags["Sweep_direction"] == "maximize,minimize"
    assert {"Best_value.train.Train accuracy", "Best_value.train.Train loss"} <= set(parent.data.metrics)
    assert "study/pareto_front.png" in {a.path for a in client.list_artifacts(parent.info.run_id, "study")}
    rows = {r["param.model.max_iter"]: r for r in sweep_table(client, parent.info.run_id, tmp_path / "t")}
    assert rows["-1"]["status"] == "FAILED" and "max_iter" in rows["-1"]["error"]
    assert {r.info.status for r in runs} <= {"FINISHED", "FAILED"}, "no run left RUNNING"

    every = run_cli([*OPTUNA, "stage=train", "model.max_iter=choice(-1, -2)", "sweep.objective=train.Train accuracy",
                     "hydra.sweeper.n_trials=2"], tmp_path, timeout=300)
    assert every.returncode == 1, "a launch whose trials all failed exits non-zero"
    parents = [r for r in experiment_runs(client, "MLPClassifier - Train") if r.data.tags.get("Run_type") == "sweep"]
    assert sorted(p.info.status for p in parents) == ["FAILED", "FINISHED"]

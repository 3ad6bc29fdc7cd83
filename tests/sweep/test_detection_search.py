"""An Optuna search over a detection saliency setting (D-RISE's ``saliency.p1``) on a fixed MAITE detector: every
trial in MLflow, each trial's value the mean of its detections' quality metric."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import experiment_runs, local_client, run_cli

from xaitk_exp import schema
from xaitk_exp.detection.toy import write_coco_folder

MAITE = ["model=maite", "model._target_=xaitk_exp.detection.toy.MaiteShapesDetector"]


@pytest.mark.slow
def test_a_detection_saliency_search_records_every_trial(tmp_path: Path) -> None:
    coco, _ = write_coco_folder(tmp_path / "shapes", n_images=3, size=(64, 64), n_objects=2, seed=3)
    args = ["-m", "hydra/sweeper=optuna", "progress=false", *MAITE, "dataset=coco", f"dataset.annotations={coco}",
            "saliency=drise", "saliency.n=50", "chunk_size=16", "metrics.step=256", "query.max_results=1",
            "saliency.p1=interval(0.2, 0.8)", "sweep.objective=Deletion_AUC", "hydra.sweeper.n_trials=3",
            "hydra.sweeper.n_jobs=3", "hydra.sweeper.sampler.seed=0"]
    result = run_cli(args, tmp_path, timeout=500)
    assert result.returncode == 0, result.stderr[-3000:]
    client = local_client(tmp_path)
    assert len(experiment_runs(client, "MaiteShapesDetector - Train")) == 1, "the fixed model is recorded once"
    evaluations = [r for r in experiment_runs(client, "MaiteShapesDetector - Evaluation")
                   if r.data.tags.get(schema.RUN_TYPE) == "summary"]
    assert len(evaluations) == 1
    saliency = experiment_runs(client, f"MaiteShapesDetector - {schema.SALIENCY}")
    parent = next(r for r in saliency if r.data.tags.get(schema.RUN_TYPE) == "sweep")
    maps = [r for r in saliency if r is not parent]
    assert all(r.info.status == "FINISHED" for r in saliency)
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in maps)
    trials: dict[str, list] = {}
    for run in maps:  # each trial: the best image's two detections
        trials.setdefault(run.data.tags["Trial_number"], []).append(run)
    assert sorted(trials) == ["0", "1", "2"]
    assert all(sorted(r.data.tags[schema.DETECTION] for r in runs) == ["0", "1"] for runs in trials.values())
    p1 = {t: {r.data.params["p1"] for r in runs} for t, runs in trials.items()}
    assert all(len(v) == 1 for v in p1.values()) and len({next(iter(v)) for v in p1.values()}) == 3
    # a trial's value: the mean over all its detections (not one detection per image)
    value = {t: sum(r.data.metrics["Deletion_AUC"] for r in runs) / len(runs) for t, runs in trials.items()}
    assert parent.data.tags["Sweep_direction"] == "minimize"
    assert parent.data.metrics["Best_value"] == pytest.approx(min(value.values()), abs=1e-12)
    assert "Best.saliency.p1" in parent.data.tags
    with sqlite3.connect(tmp_path / "outputs" / "optuna.db") as db:
        stored = dict(db.execute("select t.number, v.value from trials t join trial_values v "
                                 "on t.trial_id = v.trial_id where t.state = 'COMPLETE'").fetchall())
    assert {str(k): v for k, v in stored.items()} == pytest.approx(value, abs=1e-12)

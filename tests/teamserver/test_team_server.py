"""A real team server: a private PostgreSQL plus ``mlflow server`` with proxied artifacts. The pipeline and a
4-job parallel sweep run against it; every run and artifact must arrive, and both servers must stop."""

from __future__ import annotations

import os
import socket
import time

import numpy as np
import pytest
from conftest import run_cli

from xaitk_exp.teamserver import postgres_missing_reason, team_server

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(postgres_missing_reason() is not None, reason=str(postgres_missing_reason())),
]

ALGORITHMS = ("sliding_window", "rise", "occlusion_random_grid", "occlusion_sliding_radial")
SALIENCY_EXP = "MLPClassifier - Saliency Map Generation"


@pytest.fixture(scope="module")
def server():
    with team_server(workers=2) as url:
        yield url
    # stopped: nothing answers on the port any more, and PostgreSQL is gone
    assert not _answers(url)


def _answers(url: str) -> bool:
    host, port = url.rsplit("//", 1)[1].split(":")
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((host, int(port))) == 0


@pytest.fixture(scope="module")
def pipeline(server, tmp_path_factory):
    """The default pipeline, in process, against the server."""
    from xaitk_exp.app import compose_config, run

    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                                           "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")}
    cfg = compose_config([f"tracking.uri={server}", "progress=false", "evaluation.num_images=8",
                          "query.max_results=1"])
    try:
        ctx = run(cfg, [], tmp_path_factory.mktemp("pipeline"))
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return ctx


def _client(url):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=url)


def _all_runs(client):
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, max_results=5000)


def test_pipeline_records_everything_on_the_team_server(server, pipeline, tmp_path):
    import mlflow.sklearn

    client = _client(server)
    names = {e.name for e in client.search_experiments()}
    assert {"MLPClassifier - Train", "MLPClassifier - Evaluation", SALIENCY_EXP} <= names
    runs = _all_runs(client)
    assert runs and all(r.info.status == "FINISHED" for r in runs), {r.info.run_name: r.info.status for r in runs}
    evaluation = [r for r in runs if r.data.tags.get("Run_type") == "image"]
    assert len(evaluation) == 8
    # artifacts go through the server's proxy, and come back byte for byte usable
    train = client.get_run(pipeline.train_run_id)
    assert train.info.artifact_uri.startswith("mlflow-artifacts:/")
    model = mlflow.sklearn.load_model(client.download_artifacts(train.info.run_id, "sklearn-model", str(tmp_path)))
    X = pipeline.split.test_images.reshape(len(pipeline.split.test_images), -1)
    assert np.array_equal(model.predict_proba(X), pipeline.model.predict_proba(X))
    for run_id in pipeline.results["saliency_run_ids"]:
        maps = np.load(client.download_artifacts(run_id, "saliency_map_np_arrays/saliency_maps.npy", str(tmp_path)))
        assert maps.shape == (10, 8, 8)
        assert {f.path for f in client.list_artifacts(run_id)} >= {"saliency_map_np_arrays", "Image_saliency_maps.png"}
    # the artifacts live in the server's destination folder, the runs in PostgreSQL
    assert any(server.artifacts.rglob("model.skops"))
    assert _count_in_postgres(server, "SELECT count(*) FROM runs") == len(runs)


def _count_in_postgres(server, sql: str) -> int:
    import psycopg

    host_port = server.backend_uri.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.split(":")
    password = (server.workdir / "pgpassword").read_text().strip()
    with psycopg.connect(host=host, port=int(port), user="mlflow", password=password, dbname="mlflow") as conn:
        return int(conn.execute(sql).fetchone()[0])


def test_parallel_sweep_against_the_team_server(server, pipeline, tmp_path):
    per_job = 2
    started = int(time.time() * 1000)
    proc = run_cli(
        [
            "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4",
            f"tracking.uri={server}", "stage=saliency", "progress=false", "evaluation.num_images=8",
            f"query.max_results={per_job}", f"saliency={','.join(ALGORITHMS)}",
        ],
        cwd=tmp_path,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = _client(server)
    exp = client.get_experiment_by_name(SALIENCY_EXP)
    for algo in ALGORITHMS:
        # the images each job explained: new runs, plus a run of the same work recorded before (the pipeline
        # fixture already explained the top image with the default algorithm: that run is reused, not redone)
        runs = client.search_runs(
            [exp.experiment_id], f"tags.Saliency_algorithm = '{algo}' and attributes.run_name LIKE 'ImageID-%' "
            f"and tags.Evaluation_summary_run_id = '{pipeline.evaluation_run_id}'",
        )
        names = [r.info.run_name for r in runs]
        assert len({r.data.tags["Image_id"] for r in runs}) == per_job == len(runs), (algo, names)
        assert sum(r.info.start_time >= started for r in runs) == (per_job - 1 if algo == "sliding_window" else per_job)
        for run in runs:
            assert run.info.status == "FINISHED"
            assert run.data.params["algorithm"] == algo
            assert run.data.tags["Evaluation_summary_run_id"] == pipeline.evaluation_run_id
            local = client.download_artifacts(run.info.run_id, "", str(tmp_path / run.info.run_id))
            maps = np.load(os.path.join(local, "saliency_map_np_arrays", "saliency_maps.npy"))
            assert maps.shape[-3:] == (10, 8, 8) and np.isfinite(maps).all()
            assert os.path.getsize(os.path.join(local, "Image_saliency_maps.png")) > 1000
    assert all(r.info.status != "RUNNING" for r in _all_runs(client))


def test_a_detector_is_recorded_and_explained_on_the_team_server(server, tmp_path):
    """task=detection against the team server: the per-image runs, the mAP summary and one saliency run per
    detection reach PostgreSQL, and their artifacts (detections table, map) come back through the server's proxy."""
    import json
    from pathlib import Path

    from xaitk_exp import schema
    from xaitk_exp.app import compose_config, run
    from xaitk_exp.detection import toy

    path, _ = toy.write_coco_folder(tmp_path / "shapes", n_images=3, size=(64, 64), n_objects=2, seed=3)
    cfg = compose_config([f"tracking.uri={server}", "progress=false", "dataset=coco", f"dataset.annotations={path}",
                          "model=maite", "model._target_=xaitk_exp.detection.toy.MaiteShapesDetector",
                          "saliency=drise", "saliency.n=50", "metrics.enabled=false", "query.max_results=1"])
    ctx = run(cfg, [], tmp_path / "run")
    client = _client(server)
    evaluation = client.get_experiment_by_name("MaiteShapesDetector - Evaluation")
    images = client.search_runs([evaluation.experiment_id], f"tags.{schema.RUN_TYPE} = 'image'")
    assert len(images) == 3 and all(r.info.status == "FINISHED" for r in images)
    summary = client.get_run(ctx.evaluation_run_id)
    assert summary.data.metrics[schema.MAP_50] == 1.0
    table = json.loads(Path(client.download_artifacts(images[0].info.run_id, schema.DETECTIONS_TABLE,
                                                      str(tmp_path))).read_text())
    assert len(table) == int(images[0].data.metrics[schema.DETECTIONS])
    runs = [client.get_run(i) for i in ctx.results["saliency_run_ids"]]
    assert len(runs) == 2 and {r.data.tags[schema.DETECTION] for r in runs} == {"0", "1"}
    for run_ in runs:
        maps = np.load(client.download_artifacts(run_.info.run_id, f"{schema.NPY_DIR}/{schema.MAPS_NPY}",
                                                 str(tmp_path)))
        assert maps.shape == (1, 64, 64) and run_.info.status == "FINISHED"
    assert _count_in_postgres(server, "SELECT count(*) FROM runs WHERE name LIKE 'ImageID-%_det-%'") == 2

"""A sharded detection saliency sweep (``-m stage=saliency shards=2 'shard=range(0,2)'``) records the runs one process
records: the same (Image_id, Detection) runs, bit-identical maps, the same metrics, each run tagged with its shard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xaitk_exp import schema
from xaitk_exp.detection.toy import write_coco_folder

MAITE = ["model=maite", "model._target_=xaitk_exp.detection.toy.MaiteShapesDetector"]
SALIENCY_EXP = f"MaiteShapesDetector - {schema.SALIENCY}"
EVALUATION_EXP = f"MaiteShapesDetector - {schema.EVALUATION}"


def _records(client) -> dict[tuple[str, str], tuple]:
    """(Image_id, Detection) -> the run's status, name, metrics, params, shard tag and map bytes."""
    exp = client.get_experiment_by_name(SALIENCY_EXP)
    out = {}
    for run in client.search_runs([exp.experiment_id], f"tags.{schema.DETECTION} != ''", max_results=1000):
        tags = run.data.tags  # (the sweep's own run, in the same experiment, explains nothing)
        saved = np.load(client.download_artifacts(run.info.run_id, f"{schema.NPY_DIR}/{schema.MAPS_NPY}"))
        key = (tags[schema.IMAGE_ID], tags[schema.DETECTION])
        assert key not in out, key  # two shards never write the same detection's run
        out[key] = (run.info.status, run.info.run_name, tags[schema.BOX], tags[schema.PREDICTED_LABEL],
                    run.data.metrics, run.data.params, tags.get(schema.SHARD), saved.tobytes())
    return out


def _summary_metrics(client) -> dict[str, float]:
    exp = client.get_experiment_by_name(EVALUATION_EXP)
    runs = client.search_runs([exp.experiment_id], f"tags.{schema.RUN_TYPE} = 'summary'", max_results=10)
    assert len(runs) == 1
    return runs[0].data.metrics


@pytest.mark.slow
def test_a_sharded_detection_saliency_sweep_equals_one_process(tmp_path: Path):
    from conftest import local_client, run_cli
    from mlflow import MlflowClient

    from xaitk_exp.app import compose_config, run

    coco, _ = write_coco_folder(tmp_path / "shapes", n_images=3, size=(64, 64), n_objects=2, seed=3)
    args = ["progress=false", *MAITE, "dataset=coco", f"dataset.annotations={coco}", "saliency=drise",
            "saliency.n=50", "chunk_size=16", "metrics.step=256", "query.max_results=3"]
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    uris = {single: f"sqlite:///{single / 'mlflow.db'}", sharded: f"sqlite:///{sharded / 'outputs' / 'mlflow.db'}"}
    for folder in (single, sharded):
        (folder / "outputs").mkdir(parents=True)
        for stage in ("train", "evaluation"):
            run(compose_config([f"tracking.uri={uris[folder]}", f"stage={stage}", *args]), [], folder)
    run(compose_config([f"tracking.uri={uris[single]}", "stage=saliency", *args]), [], single)
    out = run_cli(["-m", "stage=saliency", "shards=2", "shard=range(0,2)", "hydra/launcher=joblib",
                   "hydra.launcher.n_jobs=2", *args], sharded, timeout=500)
    assert out.returncode == 0, out.stderr[-3000:]
    want, got = _records(MlflowClient(uris[single])), _records(local_client(sharded))
    assert len(want) == 6 and sorted(got) == sorted(want)  # three images, two detections each
    for key, (status, name, box, label, metrics, params, shard, saved) in got.items():
        assert (status, name, box, label, metrics, params, saved) == want[key][:6] + want[key][7:], key
        assert want[key][6] is None and shard == got[(key[0], "0")][6]  # an image's detections: one shard
    assert sorted(shard for (_, j), (*_, shard, _) in got.items() if j == "0") == ["0/2", "0/2", "1/2"]
    # the evaluation summary is what one process leaves
    assert _summary_metrics(local_client(sharded)).keys() == _summary_metrics(MlflowClient(uris[single])).keys()

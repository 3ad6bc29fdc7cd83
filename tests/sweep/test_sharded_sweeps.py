"""A sharded evaluation through real multiruns of the installed command (joblib launcher, fresh SQLite stores): one
record equal to a single process's, a missing shard named in one line, and a relaunch that writes only what is
missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import experiment_runs, local_client, run_cli

from xaitk_exp import schema

SMALL = ["progress=false", "evaluation.num_images=7", "chunk_size=3"]  # 3 chunks: shard 0 gets two, shard 1 one
SHARDED = ["-m", "stage=evaluation", "shards=2", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *SMALL]
EVALUATION = "MLPClassifier - Evaluation"


def _split(runs: list) -> tuple[list, list, list]:
    kinds = {"summary": [], "image": [], "sweep": []}
    for run in runs:
        kinds[run.data.tags.get(schema.RUN_TYPE, "")].append(run)
    return kinds["summary"], kinds["image"], kinds["sweep"]


def _confusion(client, run_id: str, tmp: Path) -> dict:
    return json.loads(Path(client.download_artifacts(run_id, "confusion_matrix.json", str(tmp))).read_text())


@pytest.mark.slow
def test_sharded_evaluation_is_one_record_equal_to_one_process_and_relaunch_fills_a_missing_shard(tmp_path: Path):
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    single.mkdir()
    sharded.mkdir()
    from mlflow import MlflowClient

    from xaitk_exp.app import compose_config, run

    uri = f"sqlite:///{single / 'mlflow.db'}"  # the reference: one process, in this test's process
    for stage in ("train", "evaluation"):
        run(compose_config([f"tracking.uri={uri}", f"stage={stage}", *SMALL]), [], single)

    # only shard 0 of 2 runs: the merge finds shard 1's images missing, the summary and the parent end FAILED
    partial = run_cli([*SHARDED, "shard=0"], sharded, timeout=400)
    assert partial.returncode != 0
    client = local_client(sharded)
    summaries, images, parents = _split(experiment_runs(client, EVALUATION))
    assert len(summaries) == 1 and summaries[0].info.status == "FAILED"
    assert sorted(int(r.data.tags[schema.IMAGE_ID]) for r in images) == [0, 1, 2, 6]
    assert parents[0].info.status == "FAILED"
    error = parents[0].data.tags["error"]
    assert "3 of 7 images have no FINISHED run, from shard(s) 1/2" in error and "\n" not in error
    assert "shard(s) 1/2" in partial.stderr + partial.stdout

    # the same sweep over both shards: the summary reopened, shard 0 writes nothing, shard 1 its three images
    full = run_cli([*SHARDED, "shard=range(0,2)"], sharded, timeout=400)
    assert full.returncode == 0, full.stderr[-3000:]
    outputs = "".join(p.read_text() for p in (sharded / "outputs" / "multirun").rglob("output.txt"))
    assert "shard 0/2: 0 of 7 image runs written, 4 reused" in outputs
    assert "shard 1/2: 3 of 7 image runs written" in outputs
    assert "merged from 2 shards" in full.stdout and "(saved outputs)" in full.stdout, "no model run in the merge"
    summaries, images, parents = _split(experiment_runs(client, EVALUATION))
    assert len(summaries) == 1, "the UI and the seed's queries see one evaluation"
    summary = summaries[0]
    assert summary.info.status == "FINISHED" and summary.data.tags[schema.SHARDS] == "2"
    assert sorted(int(r.data.tags[schema.IMAGE_ID]) for r in images) == list(range(7)), "one run per image"
    assert {r.info.status for r in images} == {"FINISHED"}
    parent = next(p for p in parents if p.info.status == "FINISHED")
    assert summary.data.tags[schema.PARENT_RUN_ID] == parent.info.run_id
    assert parent.data.tags[schema.SWEEP_EVALUATION_RUN_ID] == summary.info.run_id
    for run in images:
        k = int(run.data.tags[schema.IMAGE_ID])
        assert run.data.tags[schema.SHARD] == ("0/2" if k in (0, 1, 2, 6) else "1/2")
        assert run.data.tags[schema.EVALUATION_SUMMARY_RUN_ID] == summary.info.run_id
    assert {r.data.tags[schema.SWEEP_RUN_ID] for r in images if r.data.tags[schema.SHARD] == "1/2"} == {
        parent.info.run_id}

    # equal to the single process's record: summary metrics, confusion matrix, every image run's metrics and tags
    reference = MlflowClient(uri)
    ref_summaries, ref_images, _ = _split(experiment_runs(reference, EVALUATION))
    assert ref_summaries[0].data.metrics == summary.data.metrics
    assert {f"evaluation.{k}": v for k, v in summary.data.metrics.items()}.items() <= parent.data.metrics.items()
    assert _confusion(reference, ref_summaries[0].info.run_id, tmp_path / "c1") == _confusion(
        client, summary.info.run_id, tmp_path / "c2")
    compared = (schema.PREDICTED_CLASS, schema.GT_CLASS, schema.IMAGE_ID, schema.DATASPLIT)
    mine = {r.data.tags[schema.IMAGE_ID]: r for r in ref_images}
    for run in images:
        ref = mine[run.data.tags[schema.IMAGE_ID]]
        assert run.data.metrics == ref.data.metrics and run.info.run_name == ref.info.run_name
        assert {k: run.data.tags[k] for k in compared} == {k: ref.data.tags[k] for k in compared}


@pytest.mark.slow
def test_the_documented_local_command_runs(tmp_path: Path) -> None:
    """docs/cluster.md's command for one machine, as written (2 shards, 10 images, joblib)."""
    import shlex

    from conftest import ROOT

    doc = (ROOT / "docs" / "cluster.md").read_text()
    line = next(ln for ln in doc.splitlines() if ln.startswith(".venv/bin/xaitk-exp -m") and "joblib" in ln)
    args = shlex.split(line)[1:]
    assert "shards=2" in args and "shard=range(0,2)" in args
    done = run_cli([*args, "progress=false"], tmp_path, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "merged from 2 shards" in done.stdout and "(saved outputs)" in done.stdout
    assert "(not ranked: the jobs are shards of one record" in done.stdout and "ranked by" not in done.stdout
    summaries, images, parents = _split(experiment_runs(local_client(tmp_path), EVALUATION))
    assert len(summaries) == 1 and summaries[0].info.status == "FINISHED" and len(images) == 10
    assert sorted(r.data.tags[schema.SHARD] for r in images) == ["0/2"] * 5 + ["1/2"] * 5  # chunk_size=5
    assert parents[0].info.status == "FINISHED"

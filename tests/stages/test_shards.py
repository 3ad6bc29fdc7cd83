"""shards=N shard=k: the split of a stage's images, the settings' one-line errors, and a sharded saliency stage whose
maps are bit-identical to a single process's (in-process, real SQLite store). The sharded evaluation through a real
multirun is in tests/sweep/test_sharded_sweeps.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xaitk_exp import schema
from xaitk_exp.errors import ConfigError
from xaitk_exp.stages.shards import evaluation_share, shard_of, share

MAPS = f"{schema.NPY_DIR}/{schema.MAPS_NPY}"


@pytest.mark.parametrize(("n", "chunk", "shards"), [(7, 3, 2), (20, 256, 4), (1000, 64, 3), (5, 1, 5), (2, 4, 3)])
def test_evaluation_shares_cover_every_image_once_in_whole_chunks(n: int, chunk: int, shards: int) -> None:
    parts = [evaluation_share(n, chunk, k, shards) for k in range(shards)]
    flat = sorted(i for p in parts for i in p)
    assert flat == list(range(n)), "every image in exactly one shard"
    for k, part in enumerate(parts):
        assert all(shard_of(i, chunk, shards) == k for i in part)
        # a shard holds whole chunks (the last one may be cut at n): it predicts them as one process does
        for j in {i // chunk for i in part}:
            assert set(range(j * chunk, min((j + 1) * chunk, n))) <= set(part)


def test_share_of_a_selection_is_deterministic_and_disjoint() -> None:
    selected = [f"run{i}" for i in range(11)]
    parts = [share(selected, k, 4) for k in range(4)]
    assert sorted(x for p in parts for x in p) == sorted(selected)
    assert parts[1] == ["run1", "run5", "run9"] and share(selected, 0, 1) == selected


@pytest.mark.parametrize(
    ("overrides", "key", "value"),
    [(["shards=0"], "shards", "0"), (["shards=2", "shard=2"], "shard", "2"), (["shard=-1"], "shard", "-1"),
     (["shards=2", "shard=x"], "shard", "x")],
)
def test_bad_shard_settings_are_one_line_errors_naming_the_key(make_cfg, overrides, key, value) -> None:
    from xaitk_exp.settings.validate import validate

    with pytest.raises(ConfigError) as info:
        validate(make_cfg(*overrides))
    text = str(info.value)
    assert "\n" not in text and key in text and value in text


@pytest.mark.with_upstream
def test_sharded_saliency_maps_are_bit_identical_to_one_process(run_stage, client, tmp_path: Path) -> None:
    common = ["stage=saliency", "query.max_results=3", "metrics.enabled=false"]
    one = run_stage(*common).results["saliency_run_ids"]
    shards = [run_stage(*common, "shards=2", f"shard={k}", "force=true").results["saliency_run_ids"] for k in (0, 1)]
    assert [len(s) for s in shards] == [2, 1]

    def image(run_id: str) -> str:
        return client.get_run(run_id).data.tags[schema.IMAGE_ID]

    mine = {image(r): r for r in one}
    theirs = {image(r): r for part in shards for r in part}
    assert set(mine) == set(theirs) and len(theirs) == 3, "the shards explain what one process selects, once each"
    for k, part in enumerate(shards):
        for run_id in part:
            assert client.get_run(run_id).data.tags[schema.SHARD] == f"{k}/2"
    for k, run_id in mine.items():
        a = np.load(client.download_artifacts(run_id, MAPS, str(tmp_path / "a" / k)))
        b = np.load(client.download_artifacts(theirs[k], MAPS, str(tmp_path / "b" / k)))
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), f"image {k}: maps differ"
    # stage=reproduce on a shard's run: replayed by one process, the same maps
    replay = run_stage("stage=reproduce", f"run_id={shards[1][0]}").results["reproduce_run_id"]
    assert client.get_run(replay).data.tags["reproduced_match"] == "True"


def test_a_shard_outside_a_sweep_says_how_to_run_it(run_stage) -> None:
    from xaitk_exp.errors import TrackingError

    run_stage("stage=train")
    with pytest.raises(TrackingError, match=r"no evaluation summary opened .* -m stage=evaluation 'shard=range"):
        run_stage("stage=evaluation", "shards=2", "shard=1", "evaluation.num_images=3")


SMALL = ["stage=evaluation", "evaluation.num_images=7", "chunk_size=3"]


def _sharded_evaluation(make_cfg, tracker, tmp_path: Path, calls: list[int]) -> tuple[str, int]:
    """The sweep's three steps in this process, as the callback runs them: open the summary, run both shards, merge.
    Returns the summary run id and the model calls the merge made."""
    from xaitk_exp.app import run
    from xaitk_exp.sweep.shards import merge_shards, open_shards

    parent = tracker.start_run(tracker.experiment("Sweeps"), "sweep", {schema.RUN_TYPE: "sweep"})
    jobs = [([], make_cfg(*SMALL, "shards=2", f"shard={k}", "force=true", f"sweep_run_id={parent}")) for k in (0, 1)]
    groups = open_shards(jobs, parent, tracker, tmp_path / "upstream")
    assert len(groups) == 1 and groups[0].summary
    for _, job in jobs:
        run(job, [], tmp_path)
    before = calls[0]
    assert before > 0, "the shards ran the model"
    assert merge_shards(groups, tracker, parent, tmp_path) == []
    return groups[0].summary, calls[0] - before


@pytest.mark.slow
def test_the_merge_builds_the_summary_from_the_shards_outputs_without_running_the_model(
        run_stage, make_cfg, client, tmp_path: Path, monkeypatch) -> None:
    """A real scikit-learn model and store; the black box's model calls are counted (the calls still happen)."""
    from xaitk_exp.models.blackbox import BatchedBlackbox
    from xaitk_exp.tasks.classification import Classification

    run_stage("stage=train")
    reference = run_stage(*SMALL).evaluation_run_id  # one process
    calls = [0]
    predict_all = BatchedBlackbox.predict_all

    def counted(self, images):
        calls[0] += 1
        return predict_all(self, images)

    monkeypatch.setattr(BatchedBlackbox, "predict_all", counted)
    tracker = run_stage("stage=train").tracker  # (reused train run) a tracker on the same store

    def record(run_id: str) -> tuple[dict, dict]:
        table = json.loads(Path(client.download_artifacts(run_id, schema.CONFUSION_TABLE, str(tmp_path / run_id)))
                           .read_text())
        return client.get_run(run_id).data.metrics, table

    summary, merge_calls = _sharded_evaluation(make_cfg, tracker, tmp_path, calls)
    assert merge_calls == 0, "the merge read the shards' saved outputs"
    saved = sorted(f.path for f in client.list_artifacts(summary, schema.SHARD_OUTPUTS_DIR))
    assert saved == [f"{schema.SHARD_OUTPUTS_DIR}/shard-{k}-of-2.npz" for k in (0, 1)]
    assert client.get_run(summary).info.status == "FINISHED"
    assert schema.ACCURACY in record(reference)[0]
    assert record(summary) == record(reference), "the summary equals one process's"
    # a task without the hook: the shards save nothing, the merge runs the model again, same summary
    monkeypatch.delattr(Classification, "evaluation_from_outputs")
    summary, merge_calls = _sharded_evaluation(make_cfg, tracker, tmp_path, calls)
    assert merge_calls > 0 and not client.list_artifacts(summary, schema.SHARD_OUTPUTS_DIR)
    assert record(summary) == record(reference)

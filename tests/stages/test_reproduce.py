"""Reproduction by run id: round trips that match bit for bit, a tampered original that does not, and stored
configs naming classes outside the allow-list, refused before anything is built."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import run_cli
from omegaconf import OmegaConf

from xaitk_exp.errors import ConfigError, TrackingError, UnsafeConfigError

PIPELINE = ["saliency=rise", "saliency.n=200", "evaluation.num_images=2"]
MAPS = "saliency_map_np_arrays/saliency_maps.npy"


def _only(runs: list) -> object:
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0]


def _reproductions(client, run_id: str) -> list:
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, f"tags.reproduced_from = '{run_id}'")


def test_reproduce_train_and_evaluation_runs_match(run_stage, client) -> None:
    run_stage("stage=train", "model.max_iter=3")
    ctx = run_stage("stage=evaluation", "evaluation.num_images=3", "model.max_iter=3")
    for original in (ctx.train_run_id, ctx.evaluation_run_id):
        out = run_stage("stage=reproduce", f"run_id={original}")
        new = client.get_run(out.results["reproduce_run_id"])
        assert new.info.run_id != original and new.info.status == "FINISHED"
        assert new.data.tags["reproduced_from"] == original
        assert new.data.tags["reproduced_match"] == "True", new.data.tags.get("reproduced_differs")
        assert new.data.metrics["reproduced_match"] == 1.0
        assert new.data.tags["config_hash"] == client.get_run(original).data.tags["config_hash"]
    assert new.data.tags["Train_run_id"] == ctx.train_run_id, "an evaluation reruns on the recorded model"


def test_reproduce_reports_a_difference(run_stage, client, tmp_path: Path) -> None:
    ctx = run_stage(*PIPELINE)
    original = ctx.results["saliency_run_ids"][0]
    # tamper with the stored maps of the original run: the reproduction must notice
    local = Path(client.download_artifacts(original, MAPS, str(tmp_path / "orig")))
    maps = np.load(local)
    maps.flat[0] += 1e-6
    np.save(local, maps)
    client.log_artifact(original, str(local), "saliency_map_np_arrays")
    out = run_stage("stage=reproduce", f"run_id={original}")
    new = client.get_run(out.results["reproduce_run_id"])
    assert new.data.tags["reproduced_match"] == "False"
    assert "saliency_maps.npy: not bit-identical" in new.data.tags["reproduced_differs"]
    diff_file = client.download_artifacts(new.info.run_id, "reproduce/diff.json", str(tmp_path))
    diff = json.loads(Path(diff_file).read_text())
    assert diff["match"] is False and diff["original_run_id"] == original
    assert any("saliency_maps.npy" in d for d in diff["differences"])


def _edited_saliency_run(run_stage, client) -> tuple[str, str]:
    """A saliency run edited with ``update_run_id`` to show another image than its stored query selects:
    (run id, the image it holds now)."""
    four = [*PIPELINE[:-1], "evaluation.num_images=4"]
    ctx = run_stage(*four)
    run_id = ctx.results["saliency_run_ids"][0]
    first = client.get_run(run_id).data.tags["Image_id"]
    other = next(str(k) for k in range(4) if str(k) != first)
    run_stage("stage=saliency", *four, f"query.filter=\"tags.Image_id = '{other}'\"",
              f"update_run_id={run_id}")
    edited = client.get_run(run_id)
    assert edited.data.tags["Image_id"] == other and edited.data.tags["Modified_run"] == "True"
    return run_id, other


def test_reproduce_an_edited_run_replays_the_image_it_holds(run_stage, client, capsys) -> None:
    run_id, image = _edited_saliency_run(run_stage, client)
    capsys.readouterr()
    out = run_stage("stage=reproduce", f"run_id={run_id}")
    assert f"saliency run {run_id} -> " in capsys.readouterr().out
    new = client.get_run(out.results["reproduce_run_id"])
    assert new.data.tags["Image_id"] == image and new.info.status == "FINISHED"
    assert new.data.tags["reproduced_match"] == "True", new.data.tags.get("reproduced_differs")


def test_a_reproduction_that_fails_ends_failed(run_stage, client) -> None:
    """An edited run recorded without ``work_hash`` (an older store) is replayed by its stored query, which selects
    another image: the stage stops, and the run it wrote ends FAILED, never FINISHED without a verdict."""
    run_id, _ = _edited_saliency_run(run_stage, client)
    client.delete_tag(run_id, "work_hash")
    with pytest.raises(TrackingError, match="no longer selects image"):
        run_stage("stage=reproduce", f"run_id={run_id}")
    (replayed,) = _reproductions(client, run_id)
    assert replayed.info.status == "FAILED" and "reproduction failed" in replayed.data.tags["error"]
    assert "reproduced_match" not in replayed.data.tags


def _forged_run(client, tmp_path: Path, target: str) -> tuple[str, Path]:
    """A train run whose stored config builds ``target``: it would create a folder if it were ever built."""
    from xaitk_exp.stages.provenance import package_versions

    canary = tmp_path / "canary-was-built"
    exp = client.create_experiment("MLPClassifier - Train", artifact_location=(tmp_path / "forged").as_uri())
    run = client.create_run(exp, tags={"xaitk_exp.stage": "train"})
    with open(Path(__file__).parents[2] / "conf" / "config.yaml") as fh:
        base = yaml.safe_load(fh)
    base.pop("defaults"), base.pop("hydra")
    base.update(
        dataset={"_target_": "xaitk_exp.data.Digits", "name": "digits", "test_size": 0.25, "seed": 0},
        model={"_target_": target, "name": str(canary)},
        saliency={"_target_": "xaitk_saliency.impls.gen_image_classifier_blackbox_sal.rise.RISEStack",
                  "name": "rise", "n": 10, "s": 2, "p1": 0.5, "seed": 0},
        logging={"level": "low"},
    )
    base = OmegaConf.to_container(OmegaConf.create(base), resolve=True)  # as recorded: resolved
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(base))
    client.log_artifact(run.info.run_id, str(config), "config")
    client.log_text(run.info.run_id, json.dumps(package_versions()), "config/environment.json")
    client.set_terminated(run.info.run_id)
    return run.info.run_id, canary


def test_reproduce_refuses_a_stored_class_outside_the_allow_list(run_stage, client, tmp_path: Path) -> None:
    run_id, canary = _forged_run(client, tmp_path, "os.makedirs")
    with pytest.raises(UnsafeConfigError, match=r"model._target_='os.makedirs' is not allowed: only classes from "
                                                r"sklearn, xaitk_saliency, xaitk_exp"):
        run_stage("stage=reproduce", f"run_id={run_id}")
    # the stored allow_targets is not trusted; only this command's is
    with pytest.raises(UnsafeConfigError):
        run_stage("stage=reproduce", f"run_id={run_id}", "allow_targets=[sklearn.]")
    assert not canary.exists()
    assert _reproductions(client, run_id) == []


def test_reproduce_needs_a_run_id(run_stage) -> None:
    with pytest.raises(ConfigError, match=r"run_id=None is invalid: the id of a run recorded by xaitk-exp"):
        run_stage("stage=reproduce")


@pytest.mark.slow
def test_cli_reproduce_round_trip_is_bit_identical(run_stage, client, store: str, tmp_path: Path) -> None:
    ctx = run_stage(*PIPELINE)
    original = ctx.results["saliency_run_ids"][0]
    result = run_cli(["stage=reproduce", f"run_id={original}", f"tracking.uri={store}", "progress=false"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"saliency run {original} -> " in result.stdout and ": MATCH" in result.stdout
    new = _only(_reproductions(client, original))
    assert new.data.tags["reproduced_match"] == "True" and new.info.status == "FINISHED"
    assert new.data.tags["Image_id"] == client.get_run(original).data.tags["Image_id"]
    for artifact in (MAPS, "saliency_map_np_arrays/image.npy"):
        a = np.load(client.download_artifacts(original, artifact, str(tmp_path / "a")))
        b = np.load(client.download_artifacts(new.info.run_id, artifact, str(tmp_path / "b")))
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    assert client.get_run(original).data.metrics == {
        k: v for k, v in new.data.metrics.items() if not k.startswith("reproduced_")
    }


@pytest.mark.slow
def test_cli_refuses_an_unsafe_stored_config(client, store: str, tmp_path: Path) -> None:
    run_id, canary = _forged_run(client, tmp_path, "subprocess.Popen")
    result = run_cli(["stage=reproduce", f"run_id={run_id}", f"tracking.uri={store}"], tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("xaitk-exp: error:")]
    assert len(lines) == 1 and "model._target_='subprocess.Popen' is not allowed" in lines[0]
    assert "Traceback" not in result.stderr
    assert _reproductions(client, run_id) == [] and not canary.exists()

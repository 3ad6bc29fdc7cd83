"""Nothing writes to the composed config once it is checked: a job whose config is read-only after validation runs
every stage, and what a stage fixes later (the train run the saliency stage builds on) travels in the typed
settings and reaches the run's recorded config as before."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from omegaconf import DictConfig, OmegaConf

from xaitk_exp.app import run
from xaitk_exp.settings.validate import validate


def _frozen(cfg: DictConfig) -> DictConfig:
    validate(cfg)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def _config_of(client, run_id: str, tmp_path: Path) -> dict:
    local = client.download_artifacts(run_id, "config/config.yaml", str(tmp_path / run_id))
    return yaml.safe_load(Path(local).read_text())


@pytest.mark.with_upstream
def test_a_config_frozen_after_validation_runs_every_stage(make_cfg, client, tmp_path):
    train = client.search_runs([client.get_experiment_by_name("MLPClassifier - Train").experiment_id])[0]

    # saliency alone: the stage pins its evaluation's train run (it used to write cfg.train_run_id)
    cfg = _frozen(make_cfg("stage=saliency"))
    before = OmegaConf.to_yaml(cfg)
    ctx = run(cfg, [], tmp_path)
    assert OmegaConf.to_yaml(cfg) == before and cfg.train_run_id is None
    assert ctx.settings.train_run_id == train.info.run_id
    (saliency_id,) = ctx.results["saliency_run_ids"]
    recorded = _config_of(client, saliency_id, tmp_path)
    assert recorded["train_run_id"] == train.info.run_id  # the record says which model it explained, as before
    assert client.get_run(saliency_id).data.tags["Train_run_id"] == train.info.run_id

    # every stage again, forced: train, evaluation (3 images) and saliency write nothing into the config
    cfg = _frozen(make_cfg("stage=all", "force=true", "evaluation.num_images=3"))
    ctx = run(cfg, [], tmp_path)
    assert ctx.train_run_id != train.info.run_id and len(ctx.results["saliency_run_ids"]) == 1
    assert _config_of(client, ctx.results["saliency_run_ids"][0], tmp_path)["train_run_id"] is None

    # the replay builds a config of its own from the stored one
    cfg = _frozen(make_cfg("stage=reproduce", f"run_id={saliency_id}"))
    run(cfg, [], tmp_path)
    replayed = client.search_runs(
        [client.get_run(saliency_id).info.experiment_id], f"tags.reproduced_from = '{saliency_id}'"
    )
    assert len(replayed) == 1 and replayed[0].info.status == "FINISHED"

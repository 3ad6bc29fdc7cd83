"""``xaitk-exp --help`` is ours: what the tool does, its stages, every config group with its options."""

from __future__ import annotations

import pytest
from conftest import run_cli

from xaitk_exp.cli import GROUPS, group_options

STAGES = ("all", "train", "evaluation", "saliency", "reproduce")


def test_the_help_config_is_selected():
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="xaitk_exp.conf", version_base="1.3"):
        cfg = compose(config_name="config", return_hydra_config=True)
    assert cfg.hydra.help.app_name == "xaitk-exp"
    assert "$APP_CONFIG_GROUPS" in cfg.hydra.help.template


@pytest.mark.slow
def test_help_opens_with_our_text_and_lists_stages_groups_and_options(tmp_path):
    proc = run_cli(["--help"], tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert out.startswith("xaitk-exp: train a scikit-learn classifier (or load an ONNX, PyTorch or MAITE one)"), out[:300]
    assert "powered by Hydra" not in out and "== Config ==" not in out  # Hydra's banner and config dump
    for stage in STAGES:
        assert f"\n{stage} " in out, stage
    for group in GROUPS:
        assert f"{group}: {', '.join(group_options(group))}" in out, group
    assert "red (positive) = evidence for the class" in out
    assert "xaitk-exp --cfg job" in out and "--hydra-help" in out
    assert not (tmp_path / "outputs").exists()

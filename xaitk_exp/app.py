"""What the entry point, the sweep and the tests call: compose a config, run a job, report its runs.

Heavy libraries (mlflow, xaitk-saliency, scikit-learn) are imported only once a stage starts, so ``--help`` and
``--cfg job`` stay fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

if TYPE_CHECKING:
    from xaitk_exp.stages.context import Context

CONFIG_PACKAGE = "xaitk_exp.conf"


def run(cfg: DictConfig, overrides: list[str] | None = None, output_dir: str | Path | None = None) -> Context:
    """Check ``cfg`` into typed settings (once: stages read ``ctx.settings``), open the tracker for its logging
    level and run ``cfg.stage``. Returns the stage context."""
    from xaitk_exp.lazy import import_skops
    from xaitk_exp.models.sources import is_image_model
    from xaitk_exp.security.stored import check_folder_config
    from xaitk_exp.settings.validate import validate
    from xaitk_exp.stages import STAGES, Context
    from xaitk_exp.stages.describe import print_ui_hint
    from xaitk_exp.tracking.access import check_access
    from xaitk_exp.tracking.factory import make_tracker
    from xaitk_exp.tracking.stale import close_dead_runs
    from xaitk_exp.tracking.stores import resolve_tracking

    check_folder_config(cfg)  # a rerun from a .hydra folder: its resolvers are refused before anything reads them
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # reused runs: no download bars
    settings = validate(cfg)  # the one check of the config: a ConfigError here leaves nothing behind
    os.environ.update(settings.tracking.http.environment())  # bounds for a tracking server that does not answer
    uri, artifact_root = resolve_tracking(settings.tracking)
    if not is_image_model(cfg.model):  # a scikit-learn model, stored with skops: import it before mlflow (lazy.py)
        import_skops()
    tracker = make_tracker(settings.logging.level, uri, artifact_root, settings.tracking.sqlite_journal)
    ctx = Context(cfg=cfg, tracker=tracker, output_dir=Path(output_dir or "."), overrides=list(overrides or []))
    ctx.settings = settings  # stages read these, checked once
    check_access(cfg, settings.stage, tracker)  # 401/403 of an authenticating server: one line, before any run opens
    close_dead_runs(ctx.tracker)  # runs a dead process of this host left RUNNING: closed KILLED, in one line
    if settings.stage == "reproduce":
        from xaitk_exp.stages.reproduce import run_reproduce

        run_reproduce(ctx)
        return ctx
    STAGES[settings.stage](ctx)
    print_ui_hint(uri)
    return ctx


def http_settings(cfg: DictConfig) -> None:
    """Bound how long an unreachable tracking server can stall a job (MLflow retries for minutes by default)."""
    from xaitk_exp.settings.config import tracking_settings

    os.environ.update(tracking_settings(cfg).http.environment())


def compose_config(overrides: list[str]) -> DictConfig:
    """The shipped config composed with ``overrides`` as ``xaitk-exp`` composes it, minus Hydra's own node.

    For running stages in-process, ``run(compose_config([...]))``: tests, benchmarks and notebooks use it.
    """
    from hydra import compose, initialize_config_module
    from omegaconf import open_dict

    with initialize_config_module(config_module=CONFIG_PACKAGE, version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


def job_result(ctx: Any) -> dict[str, Any]:
    """What a job hands back to its sweep (kept small: it crosses process boundaries)."""
    return {
        "train_run_id": ctx.train_run_id,
        "evaluation_run_id": ctx.evaluation_run_id,
        "saliency_run_ids": list(ctx.results.get("saliency_run_ids") or []),
        "reproduce_run_id": ctx.results.get("reproduce_run_id"),
    }

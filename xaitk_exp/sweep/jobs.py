"""What a sweep knows before its jobs run: each job's composed config, and the upstream runs they share."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from xaitk_exp import schema
from xaitk_exp.sweep.records import SWEEP_KEY

STAGE_EXPERIMENTS = schema.EXPERIMENT_SUFFIXES
#: the experiment holding a stage's last runs: the sweep's parent goes there so MLflow nests them under it
FINAL_EXPERIMENT = {"all": schema.SALIENCY, "saliency": schema.SALIENCY,
                    "evaluation": schema.EVALUATION, "train": schema.TRAIN}
#: the stages a job's stage runs before its own, run once per distinct config before the jobs start (stage=saliency
#: only looks its upstream up, so nothing is prepared for it)
UPSTREAM = {"all": ("train", "evaluation"), "evaluation": ("train",)}


# ----- before the jobs ---------------------------------------------------------------------------------------------
def model_class(cfg: DictConfig) -> str | None:
    target = OmegaConf.select(cfg, "model._target_", default=None)
    return str(target).rsplit(".", 1)[-1] if target and not OmegaConf.select(cfg, "model.uri") else None


def job_configs(config: DictConfig) -> list[tuple[list[str], DictConfig]]:
    """Every job's overrides and composed config, as Hydra's basic sweeper will build them ([] for other sweepers)."""
    if not str(config.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return []
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    loader = GlobalHydra.instance().config_loader()
    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(params + list(config.hydra.overrides.task))
    out = []
    for batch in BasicSweeper.split_arguments(parsed, None):
        for overrides in batch:
            job = loader.load_sweep_config(config, list(overrides))
            with read_write(job), open_dict(job):
                del job["hydra"]
            out.append((list(overrides), job))
    return out


def prepare_upstream(jobs: list[tuple[list[str], DictConfig]], parent: str, output_dir: Path) -> None:
    """Run once each upstream (train, evaluation) that two or more jobs share; the jobs then reuse it."""
    from xaitk_exp.stages import Context

    groups: dict[tuple, list[tuple[list[str], DictConfig]]] = {}
    for overrides, job in jobs:
        upstream = UPSTREAM.get(str(job.stage))
        if upstream is None:
            continue
        key = (upstream, Context(cfg=job, tracker=None, output_dir=output_dir).hash_for(upstream[-1]),
               str(job.get("train_run_id")), str(job.get("evaluation_run_id")), str(job.tracking.get("uri")))
        groups.setdefault(key, []).append((overrides, job))
    for (upstream, *_), members in groups.items():
        if len(members) < 2:
            continue
        overrides, job = next(((o, j) for o, j in members if _valid(j)), members[0])
        print(f"[sweep] {len(members)} jobs share one {' + '.join(upstream)} upstream: running it once first")
        from xaitk_exp.app import run
        from xaitk_exp.stages import STAGES

        with open_dict(job):
            job.stage, job[SWEEP_KEY] = upstream[0], parent
        try:
            ctx = run(job, [*overrides, f"stage={upstream[0]}"], output_dir)
            for stage in upstream[1:]:  # same context: the model stays in memory
                STAGES[stage](ctx)
        except Exception as exc:  # each job then meets (and records) the error itself
            print(f"xaitk-exp: warning: shared upstream failed ({type(exc).__name__}: {exc})", file=sys.stderr)


def _valid(job: DictConfig) -> bool:
    from xaitk_exp.errors import XaitkExpError
    from xaitk_exp.settings.validate import validate

    try:
        validate(job)
    except XaitkExpError:
        return False
    return True



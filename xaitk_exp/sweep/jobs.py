"""What a sweep knows before its jobs run: each job's composed config, and the upstream runs they share."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from xaitk_exp import schema
from xaitk_exp.errors import ConfigError
from xaitk_exp.sweep.records import SWEEP_KEY

if TYPE_CHECKING:
    from xaitk_exp.tracking.tracker import Tracker

STAGE_EXPERIMENTS = schema.EXPERIMENT_SUFFIXES
#: the experiment holding a stage's last runs: the sweep's parent goes there so MLflow nests them under it
FINAL_EXPERIMENT = {"all": schema.SALIENCY, "saliency": schema.SALIENCY,
                    "evaluation": schema.EVALUATION, "train": schema.TRAIN}
#: the stages a job's stage runs before its own, run once per distinct config before the jobs start (stage=saliency
#: only looks its upstream up, so nothing is prepared for it)
UPSTREAM = {"all": ("train", "evaluation"), "evaluation": ("train",)}


# ----- before the jobs ---------------------------------------------------------------------------------------------
def model_class(cfg: DictConfig) -> str | None:
    """The model's name in its experiments' names, without building it (None for a stored model: its class is
    known once loaded)."""
    from xaitk_exp.models.sources import display_name, is_image_model

    if is_image_model(cfg.get("model") or {}):
        return display_name(cfg.model)
    target = OmegaConf.select(cfg, "model._target_", default=None)
    return str(target).rsplit(".", 1)[-1] if target and not OmegaConf.select(cfg, "model.uri") else None


def job_configs(config: DictConfig) -> list[tuple[list[str], DictConfig]]:
    """Every job's overrides and composed config, as Hydra's basic sweeper will build them ([] for other sweepers)."""
    if not str(config.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return []
    # private, with a reason: Hydra has no public way to expand a sweep's overrides into its jobs as its sweeper does
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


def compose_probes(config: DictConfig, loader: Any, fixed: list[str], space: list[Any]
                   ) -> list[tuple[list[str], DictConfig]]:
    """Two composed job configs at opposite ends of the space: they check every key and tell the sweep callback
    which upstream the trials share (same hash at both ends: the same train/evaluation for every trial)."""
    from hydra.errors import HydraException
    from omegaconf import open_dict, read_write

    out = []
    for end in (0, 1):
        overrides = [*fixed, *(p.probes()[end] for p in space)]
        try:
            job = loader.load_sweep_config(config, overrides)
        except HydraException as exc:
            raise _key_error(config, loader, fixed, space, exc) from None
        with read_write(job), open_dict(job):
            del job["hydra"]
        out.append((overrides, job))
    return out


def _key_error(config: DictConfig, loader: Any, fixed: list[str], space: list[Any], exc: Exception) -> ConfigError:
    """A one-line error naming the searched key (else the overrides) that the config cannot take."""
    from hydra.errors import HydraException

    def reason(error: Exception) -> str:
        first = next((ln.strip() for ln in str(error).splitlines() if ln.strip()), type(error).__name__)
        cause = error.__cause__
        return first + (f" ({str(cause).splitlines()[0]})" if cause is not None and str(cause).strip() else "")

    for param in space:
        try:
            loader.load_sweep_config(config, [*fixed, param.probes()[0]])
        except HydraException as one:
            return ConfigError(f"{param.prefix}{param.key}", param.written, f"a key of the config: {reason(one)}; "
                               f"'+{param.key}=...' adds a new one")
    return ConfigError("overrides", " ".join(fixed), f"overrides the config takes: {reason(exc)}")


def probe_configs(config: DictConfig) -> list[tuple[list[str], DictConfig]]:
    """:func:`compose_probes` for a sweeper whose jobs are not known before they run, from the Hydra sweep syntax
    of its overrides and ``hydra.sweeper.params``; [] when they cannot be read (nothing is prepared then)."""
    from hydra.core.global_hydra import GlobalHydra

    from xaitk_exp.errors import XaitkExpError
    from xaitk_exp.sweep.space import parse_space

    try:
        loader = GlobalHydra.instance().config_loader()
        arguments = [a for a in config.hydra.overrides.task if not a.startswith(f"{SWEEP_KEY}=")]
        fixed, space = parse_space(arguments, config.hydra.sweeper.get("params"), loader)
        return compose_probes(config, loader, fixed, space)
    except (XaitkExpError, ValueError, TypeError, AttributeError) as exc:
        print(f"xaitk-exp: warning: sweep space not read, no shared upstream prepared ({exc})", file=sys.stderr)
        return []


def prepare_upstream(jobs: list[tuple[list[str], DictConfig]], parent: str, output_dir: Path,
                     probes: bool = False, quiet: bool = False) -> str:
    """Run once each upstream (train, evaluation) that two or more jobs share; the jobs then reuse it.
    ``probes``: ``jobs`` are the two ends of a search space (:func:`compose_probes`), standing for every trial.
    Returns one line saying what was prepared ('' for nothing)."""
    said = []
    from xaitk_exp.settings.hashes import stage_hash

    groups: dict[tuple, list[tuple[list[str], DictConfig]]] = {}
    for overrides, job in jobs:
        upstream = UPSTREAM.get(str(job.stage))
        if upstream is None:
            continue
        key = (upstream, stage_hash(job, upstream[-1]),
               str(job.get("train_run_id")), str(job.get("evaluation_run_id")), str(job.tracking.get("uri")))
        groups.setdefault(key, []).append((overrides, job))
    for (upstream, *_), members in groups.items():
        if len(members) < 2 and int(members[0][1].get("shards") or 1) < 2:  # shards share it with later relaunches
            continue
        overrides, job = next(((o, j) for o, j in members if _valid(j)), members[0])
        job = job.copy()  # the job's own config stays as it is (the sweep reads it again: shards, reuse)
        who = "all trials" if probes else f"{len(members)} jobs"
        print(f"[sweep] {who} share one {' + '.join(upstream)} upstream: running it once first")
        from xaitk_exp.app import run
        from xaitk_exp.stages import STAGES

        with open_dict(job):
            job.stage, job[SWEEP_KEY] = upstream[0], parent
            job.shard, job.shards = 0, 1  # sharded jobs share an upstream made whole, once (docs/cluster.md)
            if quiet:  # no progress bars (the jobs get none either)
                job.progress = False
        try:
            ctx = run(job, [*overrides, f"stage={upstream[0]}"], output_dir)
            for stage in upstream[1:]:  # same context: the model stays in memory
                STAGES[stage](ctx)
        except Exception as exc:  # each job then meets (and records) the error itself
            print(f"xaitk-exp: warning: shared upstream failed ({type(exc).__name__}: {exc})", file=sys.stderr)
            continue
        runs = {"train": ctx.train_run_id, "evaluation": ctx.evaluation_run_id}
        said.append(f"{who} share {', '.join(f'{s} run {runs[s]}' for s in upstream if runs.get(s))}, run once first")
    return "; ".join(said)


#: Hydra's own in-process launcher (a config target: Hydra names it so; nothing of it is imported here)
IN_PROCESS_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
#: per job stage: (experiment, hash stage, extra filter) of the runs that make the job's result
FINAL_RUNS = {"train": (schema.TRAIN, "train", ""), "evaluation": (schema.EVALUATION, "evaluation", f"tags.{schema.RUN_TYPE} = 'summary'"),
              "saliency": (schema.SALIENCY, "saliency", ""), "all": (schema.SALIENCY, "saliency", "")}


def all_reused(jobs: list[tuple[list[str], DictConfig]], tracker: Tracker) -> bool:
    """True when every job's final stage already has a FINISHED run with the job's config hash, so the jobs will
    only look runs up. A wrong guess costs time only: such jobs then compute in the launcher's process."""
    from xaitk_exp.stages import Context

    if not jobs:
        return False
    for _, job in jobs:
        final = FINAL_RUNS.get(str(job.get("stage")))
        if (final is None or job.get("force") or OmegaConf.select(job, "model.uri") or job.get("update_run_id")
                or job.get("train_run_id") or job.get("evaluation_run_id")):
            return False
        experiment, stage, extra = final
        try:
            if Context(cfg=job, tracker=tracker, output_dir=Path(".")).find_latest(experiment, stage, extra) is None:
                return False
        except Exception:  # anything unexpected: launch as configured
            return False
    return True


def _valid(job: DictConfig) -> bool:
    from xaitk_exp.errors import XaitkExpError
    from xaitk_exp.settings.validate import validate

    try:
        validate(job)
    except XaitkExpError:
        return False
    return True



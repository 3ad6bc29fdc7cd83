"""A sharded multirun (``shards=N 'shard=range(0,N)'``) seen from the sweep: the one evaluation summary opened before
the jobs and merged after them, and the saliency quality summary written once (docs/cluster.md)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from xaitk_exp import schema
from xaitk_exp.sweep.records import SWEEP_KEY


@dataclass
class ShardGroup:
    """The jobs that share one record: ``kind`` evaluation (one summary run, ``summary``) or saliency."""

    kind: str
    job: DictConfig  # one of the group's job configs (they differ only in ``shard``)
    summary: str | None = None  # evaluation: the summary run the shards write into (None: a FINISHED one is reused)


def _context(job: DictConfig, tracker: Any, parent: str, output_dir: Path) -> Any:
    from xaitk_exp.stages import Context

    job = job.copy()
    with open_dict(job):
        job[SWEEP_KEY] = parent
    return Context(cfg=job, tracker=tracker, output_dir=output_dir)


def open_shards(jobs: list[tuple[list[str], DictConfig]], parent: str, tracker: Any, output_dir: Path
                ) -> list[ShardGroup]:
    """Before the jobs: one group per record the sharded jobs share; each evaluation group's summary run opened."""
    from xaitk_exp.errors import XaitkExpError

    groups: dict[tuple[str, ...], ShardGroup] = {}
    for _, job in jobs:
        shards, stage = int(job.get("shards") or 1), str(job.get("stage"))
        if shards < 2 or stage not in ("evaluation", "saliency", "all"):
            continue
        kind = "evaluation" if stage == "evaluation" else "saliency"
        ctx = _context(job, tracker, parent, output_dir)
        try:
            key: tuple[str, ...] = (kind, ctx.hash_for("evaluation"), str(shards), str(job.get("train_run_id")),
                                    str(OmegaConf.select(job, "tracking.uri")))
        except Exception:  # a job whose config does not compose: it reports its own error
            continue
        key = ("saliency",) if kind == "saliency" else key  # one quality summary per evaluation, whichever job
        if key in groups:
            continue
        group = ShardGroup(kind, job)
        if kind == "evaluation":
            try:
                group.summary = _open(ctx)
            except XaitkExpError as exc:  # each shard meets (and records) the error itself
                print(f"xaitk-exp: warning: sharded evaluation not opened ({exc})", file=sys.stderr)
                continue
        groups[key] = group
    return list(groups.values())


def _open(ctx: Any) -> str | None:
    from xaitk_exp.stages.shards import open_evaluation_summary

    ctx.settings  # noqa: B018 (checks the config first: a bad shard/shards key opens nothing)
    return open_evaluation_summary(ctx)


def merge_shards(groups: list[ShardGroup], tracker: Any, parent: str, sweep_dir: Path) -> list[str]:
    """After the jobs: each evaluation summary written (or FAILED naming the shards it misses), each saliency
    quality summary written once. The sweep's parent gets the evaluation's metrics and its id. Returns one line per
    record that could not be completed."""
    from xaitk_exp.stages.shards import merge_evaluation
    from xaitk_exp.sweep.records import read_job_records

    errors = []
    for group in groups:
        ctx = _context(group.job, tracker, parent, sweep_dir / "upstream")
        if group.kind == "evaluation":
            if group.summary is None:
                continue
            start = time.perf_counter()
            error = merge_evaluation(ctx, group.summary)
            took = time.perf_counter() - start
            if error:
                errors.append(error)
                continue
            summary = tracker.get_run(group.summary)
            metrics = {f"evaluation.{k}": v for k, v in summary.data.metrics.items()}
            tracker.log(parent, metrics=metrics, tags={schema.SWEEP_EVALUATION_RUN_ID: group.summary})
            print(f"[sweep] evaluation summary {group.summary} merged from {ctx.settings.shards} shards in "
                  f"{took:.2f} s ({ctx.results.get('merged_from')}): "
                  + ", ".join(f"{k} {v:.4g}" for k, v in sorted(summary.data.metrics.items())))
        else:
            errors += _saliency_summaries(ctx, read_job_records(sweep_dir, parent))
    return errors


def _saliency_summaries(ctx: Any, records: list[dict[str, Any]]) -> list[str]:
    """The quality summary of each evaluation the shards explained images of, written once they all ended."""
    from xaitk_exp.stages.saliency.summary import log_evaluation_summary

    done: set[str] = set()
    errors = []
    for record in records:
        runs = record.get("runs") or {}
        evaluation, maps = runs.get("evaluation_run_id"), runs.get("saliency_run_ids") or []
        if not evaluation or not maps or evaluation in done:
            continue
        done.add(evaluation)
        ctx.evaluation_run_id = evaluation
        try:
            first = ctx.tracker.get_run(maps[0])
            if first.data.tags.get(schema.DETECTION):  # detections: no per-image summary, as in one process
                continue
            log_evaluation_summary(ctx, first.info.experiment_id)
        except Exception as exc:
            errors.append(f"saliency quality summary of evaluation {evaluation} failed: {type(exc).__name__}: {exc}")
    return errors

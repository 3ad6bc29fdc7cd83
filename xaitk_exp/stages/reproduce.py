"""``stage=reproduce run_id=<RUN_ID>``: rerun a recorded run from the tracking store alone and compare the outputs.

The run's config comes from its artifact ``config/config.yaml``, read as data: any ``${...}`` interpolation or
resolver in it is refused, never resolved. Every ``_target_`` in it must pass the allow-list
(scikit-learn, xaitk-saliency, this package, and the ``allow_targets`` of *this* command, never the stored ones)
before anything is built. The stage reruns in a new run tagged ``reproduced_from=<RUN_ID>`` (no reuse), on the
same upstream runs (the train run for evaluation, the train and evaluation runs for saliency). Metrics must be
equal and the saliency arrays bit-identical; the new run gets ``reproduced_match`` (tag and metric),
``reproduced_differs`` and ``reproduce/diff.json``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from xaitk_exp import schema
from xaitk_exp.errors import ConfigError, TrackingError, UnsafeConfigError
from xaitk_exp.security.stored import refuse_interpolations
from xaitk_exp.security.targets import check_targets
from xaitk_exp.stages import STAGES
from xaitk_exp.stages.context import Context
from xaitk_exp.stages.provenance import git_commit, package_versions
from xaitk_exp.stages.upstream import image_runs_filters, summary_of
from xaitk_exp.tracking.tracker import Tracker

REPRODUCIBLE = ("train", "evaluation", "saliency")
ARRAYS = (f"{schema.NPY_DIR}/{schema.MAPS_NPY}", f"{schema.NPY_DIR}/{schema.IMAGE_NPY}")
#: metrics that other stages add to a run later (the evaluation summary gathers saliency metrics)
FOREIGN_METRICS = ("Saliency/", "reproduced_")


def run_reproduce(ctx: Context) -> str:
    """Rerun ``ctx.cfg.run_id``'s stage and report whether it matches. Returns the new run's id."""
    run_id = ctx.settings.run_id or ""
    if not run_id:
        raise ConfigError("run_id", None, "the id of a run recorded by xaitk-exp (stage=reproduce run_id=<RUN_ID>)")
    tracker = ctx.tracker
    original = tracker.get_run(run_id)
    stage = original.data.tags.get(schema.STAGE_TAG)
    if stage not in REPRODUCIBLE:
        parent = summary_of(original)
        image_run = parent and original.data.tags.get(schema.RUN_TYPE) == "image"
        hint = f"; reproduce its summary run {parent}" if image_run else ""
        raise ConfigError("run_id", run_id, f"a train, evaluation summary or saliency run recorded by xaitk-exp{hint}")
    with tempfile.TemporaryDirectory() as tmp:
        stored = _fetch(tracker, run_id, "config/config.yaml", tmp)
        environment = _fetch(tracker, run_id, "config/environment.json", tmp, required=False) or {}
        overrides = (_fetch(tracker, run_id, "config/overrides.yaml", tmp, required=False) or {}).get("overrides", [])
    # data, never code: an interpolation such as ${oc.env:MLFLOW_TRACKING_PASSWORD} is refused before anything
    # reads the config (the recorded config is written resolved, so no ${ is ours)
    refuse_interpolations(stored, f"run {run_id}: the stored config/config.yaml is refused")
    try:
        check_targets(stored, ctx.extra_allowed)
    except UnsafeConfigError as exc:
        raise UnsafeConfigError(f"run {run_id}: the stored config is refused: {exc}") from None
    cfg = replay_config(stored, ctx.cfg, original, stage)
    replay = Context(cfg=cfg, tracker=tracker, output_dir=ctx.output_dir, overrides=[str(o) for o in overrides])
    _ = replay.settings  # the stored config, checked as this version reads it, before anything reruns
    warnings = environment_warnings(environment, original, replay)
    for w in warnings:
        print(f"xaitk-exp: warning: {w}", file=sys.stderr)
    STAGES[stage](replay)
    try:
        new = _new_run(tracker, replay, original, stage)
        differences, compared = compare_runs(tracker, original, new, stage)
        _report(tracker, original, new, differences, compared, warnings)
    except BaseException as exc:  # no replayed run may look like a finished reproduction without its verdict
        _fail_replayed(tracker, replay, stage, exc)
        raise
    ctx.results["reproduce_run_id"] = new.info.run_id
    return str(new.info.run_id)


def _fail_replayed(tracker: Tracker, replay: Context, stage: str, exc: BaseException) -> None:
    """The runs the replay wrote, closed FAILED (KILLED on Ctrl-C) with the reason: the reproduction did not end."""
    ids = {"train": [replay.train_run_id], "evaluation": [replay.evaluation_run_id]}.get(
        stage, replay.results.get("saliency_run_ids") or [])
    status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
    for run_id in [i for i in ids if i]:
        try:
            tracker.log(run_id, tags={schema.ERROR: f"reproduction failed: {exc}"[:500]})
            tracker.finish_run(run_id, status)
        except Exception:  # best effort: the store itself may be what failed
            pass


def _fetch(tracker: Tracker, run_id: str, path: str, tmp: str, required: bool = True) -> Any:
    try:
        local = tracker.download(run_id, path, tmp)
    except Exception as exc:
        if not required:
            return None
        raise TrackingError(
            f"run {run_id} has no recorded {path} in {tracker.display_uri} ({type(exc).__name__}); "
            "only runs recorded by xaitk-exp can be reproduced"
        ) from exc
    text = Path(local).read_text()
    return json.loads(text) if path.endswith(".json") else yaml.safe_load(text)


def replay_config(stored: dict[str, Any], current: DictConfig, original: Any, stage: str) -> DictConfig:
    """The recorded config, rerun as ``stage`` on this command's store, with the recorded upstream runs, forced
    (unchecked: the replay's context checks it).

    Trust settings come from this command, never from the store: ``allow_targets`` and ``model.allow_pickle``.
    """
    cfg = OmegaConf.create(stored)
    tags = original.data.tags
    cfg.stage, cfg.force = stage, True
    cfg.run_id = cfg.update_run_id = cfg.sweep_run_id = None
    cfg.shard, cfg.shards = 0, 1  # a shard's run is replayed by one process (its image is selected by id)
    if cfg.get("sweep") is not None and "trial" in cfg.sweep:  # a replayed optuna trial is no trial of its study
        cfg.sweep.trial = None
    cfg.reproduced_from = original.info.run_id
    cfg.tracking, cfg.logging = current.tracking, current.logging
    cfg.allow_targets = list(current.get("allow_targets") or [])
    cfg.progress, cfg.n_jobs = current.progress, current.n_jobs
    if cfg.get("model", {}).get("register"):  # a replay registers no new version
        cfg.model.register = None
    if "allow_pickle" in cfg.get("model", {}):
        cfg.model.allow_pickle = bool(OmegaConf.select(current, "model.allow_pickle", default=False))
    if stage in ("evaluation", "saliency"):
        cfg.train_run_id = tags.get(schema.TRAIN_RUN_ID) or None
    if stage == "saliency":
        cfg.evaluation_run_id = tags.get(schema.EVALUATION_SUMMARY_RUN_ID) or None
        if tags.get(schema.WORK_HASH) and tags.get(schema.IMAGE_ID) is not None:
            # the image the run holds now: an edited run (update_run_id) keeps the config of the query that first
            # selected another image; the work done to an image does not depend on the query (work_hash)
            cfg.query = {**OmegaConf.to_container(cfg.query, resolve=False), "filter": (  # type: ignore[dict-item]
                f"tags.{schema.IMAGE_ID} = '{tags[schema.IMAGE_ID]}'"), "min_conf": None, "predicted_class": None,
                "gt_class": None, "max_results": 1}
    return cfg


def environment_warnings(recorded: dict[str, str], original: Any, replay: Context) -> list[str]:
    """What differs from the recorded run's code, packages and data (reproduction may then differ too)."""
    out = []
    old_commit, new_commit = original.data.tags.get(schema.GIT_COMMIT), git_commit()
    if old_commit and old_commit != new_commit:
        out.append(f"code version differs: run recorded git commit {old_commit}, this checkout is {new_commit}")
    now = package_versions()
    changed = [f"{k} {v} -> {now.get(k, 'not installed')}" for k, v in sorted(recorded.items()) if now.get(k) != v]
    if changed:
        out.append("package versions differ from the recorded run: " + ", ".join(changed))
    old_data = original.data.tags.get(schema.DATA_FINGERPRINT)
    if old_data and old_data != replay.split.fingerprint():
        out.append(f"data differs: recorded fingerprint {old_data}, now {replay.split.fingerprint()}")
    return out


def _new_run(tracker: Tracker, replay: Context, original: Any, stage: str) -> Any:
    if stage == "train":
        return tracker.get_run(str(replay.train_run_id))
    if stage == "evaluation":
        return tracker.get_run(str(replay.evaluation_run_id))
    image = original.data.tags.get(schema.IMAGE_ID)
    detection = original.data.tags.get(schema.DETECTION)  # a detector's run explains one detection of its image
    for run_id in replay.results.get("saliency_run_ids") or []:
        run = tracker.get_run(run_id)
        if run.data.tags.get(schema.IMAGE_ID) == image and run.data.tags.get(schema.DETECTION) == detection:
            return run
    what = f"image {image}" + (f" detection {detection}" if detection is not None else "")
    raise TrackingError(
        f"reproducing run {original.info.run_id}: the recorded query no longer selects {what} "
        f"(selected runs: {', '.join(replay.results.get('saliency_run_ids') or []) or 'none'})"
    )


def compare_runs(tracker: Tracker, original: Any, new: Any, stage: str) -> tuple[list[str], list[str]]:
    """(differences, what was compared): params, metrics (exact), the config hash, saliency arrays (bytes), and
    an evaluation's per-image runs."""
    differences: list[str] = []
    compared = ["params", "metrics", schema.CONFIG_HASH]
    differences += _dict_diff("param", original.data.params, new.data.params)
    differences += _dict_diff("metric", _own_metrics(original), _own_metrics(new))
    # a saliency run: the work done to its image (its config hash also covers the query that selected the image,
    # which an edited run's stored config no longer holds)
    key = schema.WORK_HASH if stage == "saliency" and original.data.tags.get(schema.WORK_HASH) else schema.CONFIG_HASH
    if original.data.tags.get(key) != new.data.tags.get(key):
        differences.append(f"{key} {original.data.tags.get(key)} != {new.data.tags.get(key)}")
    for tag in (schema.IMAGE_ID, schema.DETECTION, schema.BOX) if stage == "saliency" else ():
        if original.data.tags.get(tag) != new.data.tags.get(tag):
            differences.append(f"{tag} {original.data.tags.get(tag)} != {new.data.tags.get(tag)}")
    compared[-1] = key
    if stage == "saliency":
        differences += _array_diff(tracker, original.info.run_id, new.info.run_id)
        compared += [Path(a).name for a in ARRAYS]
    if stage == "evaluation":
        differences += _children_diff(tracker, original, new)
        compared.append("per-image runs")
    return differences, compared


def _own_metrics(run: Any) -> dict[str, float]:
    return {k: v for k, v in run.data.metrics.items() if not k.startswith(FOREIGN_METRICS)}


def _dict_diff(kind: str, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        if key not in new:
            out.append(f"{kind} {key} missing in the new run")
        elif key not in old:
            out.append(f"{kind} {key} not in the original run")
        elif old[key] != new[key]:
            out.append(f"{kind} {key}: {old[key]!r} != {new[key]!r}")
    return out


def _array_diff(tracker: Tracker, old_id: str, new_id: str) -> list[str]:
    import numpy as np

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for artifact in ARRAYS:
            try:
                a = np.load(tracker.download(old_id, artifact, f"{tmp}/old"))
                b = np.load(tracker.download(new_id, artifact, f"{tmp}/new"))
            except Exception as exc:
                out.append(f"{Path(artifact).name}: cannot be read ({type(exc).__name__})")
                continue
            if a.shape != b.shape or a.dtype != b.dtype:
                out.append(f"{Path(artifact).name}: {a.dtype}{list(a.shape)} != {b.dtype}{list(b.shape)}")
            elif a.tobytes() != b.tobytes():
                diff = float(np.nanmax(np.abs(a.astype(float) - b.astype(float))))
                out.append(f"{Path(artifact).name}: not bit-identical (max |difference| {diff:.3g})")
    return out


def _children_diff(tracker: Tracker, old: Any, new: Any) -> list[str]:
    def children(run: Any) -> dict[str, dict[str, float]]:
        for flt in image_runs_filters(run.info.run_id):  # linked by tag, or nested (stores written before)
            found = tracker.search([run.info.experiment_id], f"{flt} and tags.{schema.RUN_TYPE} = 'image'", None, 50000)
            if found:
                return {r.data.tags.get(schema.IMAGE_ID, r.info.run_id): r.data.metrics for r in found}
        return {}

    a, b = children(old), children(new)
    out = [f"image run {k} missing in the new run" for k in sorted(set(a) - set(b))]
    out += [f"image run {k} not in the original run" for k in sorted(set(b) - set(a))]
    for k in sorted(set(a) & set(b)):
        out += [f"image {k} {d}" for d in _dict_diff("metric", a[k], b[k])]
    return out


def _report(tracker: Tracker, original: Any, new: Any, differences: list[str], compared: list[str],
            warnings: list[str]) -> None:
    match = not differences
    old_id, new_id = original.info.run_id, new.info.run_id
    tracker.log(
        new_id,
        metrics={"reproduced_match": 1.0 if match else 0.0},
        tags={
            "reproduced_match": str(match),
            "reproduced_differs": "; ".join(differences)[:5000] if differences else "",
            "reproduced_warnings": "; ".join(warnings)[:5000] if warnings else "",
        },
    )
    diff = {"original_run_id": old_id, "new_run_id": new_id, "match": match, "compared": compared,
            "differences": differences, "warnings": warnings}
    tracker.log_dict(new_id, diff, "reproduce/diff.json")
    stage = original.data.tags.get(schema.STAGE_TAG)
    if match:
        print(f"[reproduce] {stage} run {old_id} -> {new_id}: MATCH ({', '.join(compared)} identical)")
    else:
        print(f"[reproduce] {stage} run {old_id} -> {new_id}: DIFFERS in {len(differences)} place(s):")
        for d in differences[:20]:
            print(f"  - {d}")

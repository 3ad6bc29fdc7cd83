"""Benchmark 1: per-image evaluation logging, side by side.

    python benchmarks/bench_logging.py                 # 500 images, 3 repeats, about 3 minutes
    python benchmarks/bench_logging.py --images 100 --repeats 2 --check

Variants, each on its own fresh SQLite store (a copy of one store that holds the trained model):

- ``stage-high`` / ``stage-mid`` / ``stage-low``: ``run_evaluation`` (the whole stage: predictions, the summary run
  with its config and confusion-matrix artifacts, then one run per image) at each logging level.
- ``notebook``: what the seed notebook does per image: fluent ``mlflow.start_run``, one ``mlflow.log_metric`` call
  per metric, ``mlflow.set_tags``.
- ``stage-low-jobs2``: the low level with ``n_jobs=2``: a worker process writes batches of the runs beside the
  stage's own process.
- ``floor``: the least the public API allows per image run: ``MlflowClient.create_run`` (with the tags), one
  ``log_batch`` with the metrics, ``set_terminated``.
- ``notebook-wal`` / ``floor-wal``: the same two on a store in WAL journal mode. The stage puts its store in WAL
  mode (``tracking.sqlite_journal=wal``, the default); ``notebook`` and ``floor`` get SQLite's default rollback
  journal, which is what a store that MLflow alone creates has. These two rows show how much of the stage's lead
  is the journal mode and how much is the way it writes.

The images are the first ``--images`` of the digits *train* split (1347 images; the test split has only 450): the
stage runs with ``evaluation.split=train``, and the two baselines log the same images' predictions. The model
stays in memory, so loading it is not timed. ``--check`` also compares the records the three levels left.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    StatementCounter,
    TrainedStore,
    interleave,
    machine,
    median,
    quiet,
    sqlite_uri,
    table,
    temp_root,
    verdict,
)

from xaitk_exp.schema import LEVELS  # noqa: E402


def image_records(store: TrainedStore, n: int) -> list[tuple[str, dict[str, float], dict[str, str]]]:
    """(run name, metrics, tags) per image, as the notebook would log them."""
    import numpy as np

    from xaitk_exp.models.blackbox import SklearnBlackbox

    images, labels = store.split.train_images, store.split.train_labels
    bb = SklearnBlackbox(store.model)
    probs = bb.predict(images[:n])
    classes = [str(c) for c in bb.get_labels()]
    out = []
    for k in range(n):
        top = int(np.argmax(probs[k]))
        metrics = {"Predicted_class_conf": float(probs[k, top])}
        metrics.update({f"Class_{c}_conf": float(p) for c, p in zip(classes, probs[k], strict=True)})
        tags = {
            "Image_id": str(k),
            "GT_class": str(labels[k]),
            "Predicted_class": classes[top],
            "Dataset": "digits",
            "Datasplit": "train",
            "Train_exp_id": store.train_exp_id,
            "Train_run_id": store.train_run_id,
        }
        out.append((f"ImageID-{k}_conf", metrics, tags))
    return out


def notebook(uri: str, records: list, experiment: str = "Notebook - Evaluation") -> float:
    import time

    import mlflow

    mlflow.set_tracking_uri(uri)
    exp_id = mlflow.create_experiment(experiment)
    t0 = time.perf_counter()
    for name, metrics, tags in records:
        with mlflow.start_run(experiment_id=exp_id, run_name=name):
            for key, value in metrics.items():
                mlflow.log_metric(key, value)
            mlflow.set_tags(tags)
    return time.perf_counter() - t0


def floor(uri: str, records: list, experiment: str = "Floor - Evaluation") -> float:
    import time

    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(uri)
    exp_id = client.create_experiment(experiment)
    t0 = time.perf_counter()
    for name, metrics, tags in records:
        run = client.create_run(exp_id, run_name=name, tags=tags)
        now = int(time.time() * 1000)
        client.log_batch(run.info.run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()])
        client.set_terminated(run.info.run_id)
    return time.perf_counter() - t0


def stage(store: TrainedStore, folder: Path, level: str, n: int, n_jobs: int = 1) -> float:
    import time

    from xaitk_exp.stages.evaluation import run_evaluation

    ctx = store.context(folder, level, "stage=evaluation", "evaluation.split=train", f"evaluation.num_images={n}",
                        f"n_jobs={n_jobs}")
    ctx.tracker.experiment(ctx.experiment_name("Evaluation"))  # created untimed, like the baselines' experiments
    t0 = time.perf_counter()
    run_evaluation(ctx)
    return time.perf_counter() - t0


def snapshot(folder: Path) -> dict[str, tuple]:
    """The evaluation records in a store, minus what legitimately differs between stores (ids, times, level)."""
    from mlflow import MlflowClient

    client = MlflowClient(sqlite_uri(folder))
    exp = client.get_experiment_by_name("MLPClassifier - Evaluation")
    out = {}
    for run in client.search_runs([exp.experiment_id], max_results=50000):
        tags = {k: v for k, v in run.data.tags.items() if k not in ("mlflow.parentRunId", "xaitk_exp.level")}
        tags["has_parent"] = str("mlflow.parentRunId" in run.data.tags)
        arts = sorted(a.path for a in client.list_artifacts(run.info.run_id)) if "Run_type" in tags and tags[
            "Run_type"] == "summary" else []
        out[run.info.run_name] = (run.info.status, run.data.params, run.data.metrics, tags, arts)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--check", action="store_true", help="also compare the records the three levels left")
    args = ap.parse_args()
    quiet()
    root = temp_root("logging")
    print(f"building the template store in {root} ...", file=sys.stderr)
    store = TrainedStore(root)
    records = image_records(store, args.images)
    last: dict[str, Path] = {}
    counter = StatementCounter()
    traffic: dict[str, tuple[int, int]] = {}

    def variant(label: str, fn, journal: str | None = None):
        def go() -> float:
            folder = store.fresh(label, journal)
            last[label] = folder
            before = counter.snapshot()
            seconds = fn(folder)
            after = counter.snapshot()
            traffic[label] = (after[0] - before[0], after[1] - before[1])
            return seconds

        return go

    variants = {f"stage-{lv}": variant(lv, lambda f, lv=lv: stage(store, f, lv, args.images)) for lv in LEVELS}
    # the low level with a worker process beside the stage's (its first call starts the worker: timed apart)
    t0 = time.perf_counter()
    stage(store, store.fresh("warm-up"), "low", 50, 2)
    first_parallel = time.perf_counter() - t0
    variants["stage-low-jobs2"] = variant("low-jobs2", lambda f: stage(store, f, "low", args.images, 2))
    variants["notebook"] = variant("notebook", lambda f: notebook(sqlite_uri(f), records), "delete")
    variants["floor"] = variant("floor", lambda f: floor(sqlite_uri(f), records), "delete")
    variants["notebook-wal"] = variant("notebook-wal", lambda f: notebook(sqlite_uri(f), records), "wal")
    variants["floor-wal"] = variant("floor-wal", lambda f: floor(sqlite_uri(f), records), "wal")
    times = interleave(variants, args.repeats)

    n = args.images
    med = {k: median(v) for k, v in times.items()}
    rows = []
    for k in variants:
        statements, commits = traffic[k.removeprefix("stage-")]
        rows.append(
            [k, med[k], 1000 * med[k] / n, med["notebook"] / med[k], med[k] / med["floor"], f"{min(times[k]):.3f}",
             f"{statements / n:.1f} / {commits / n:.1f}"]
        )
    print(f"\n## Per-image evaluation logging: {n} images, {args.repeats} repeats, SQLite ({machine()})\n")
    headers = ["variant", "median s", "ms / image", "notebook / this", "this / floor", "min s", "SQL stmts / commits per image"]
    print(table(headers, rows))
    stages = {lv: med[f"stage-{lv}"] for lv in LEVELS}
    stages["low, n_jobs=2"] = med["stage-low-jobs2"]
    fastest = min(stages, key=stages.get)
    print()
    print(
        table(
            ["target", "measured", "status"],
            [
                [f"fastest level ({fastest}) >= 4x faster than notebook", f"{med['notebook'] / stages[fastest]:.2f}x",
                 verdict(med["notebook"] / stages[fastest] >= 4)],
                [f"fastest level ({fastest}) within 1.5x of the floor", f"{stages[fastest] / med['floor']:.2f}x",
                 verdict(stages[fastest] / med["floor"] <= 1.5)],
                [f"(reported) fastest level ({fastest}) vs notebook-wal / floor-wal",
                 f"{med['notebook-wal'] / stages[fastest]:.2f}x faster / {stages[fastest] / med['floor-wal']:.2f}x",
                 "-"],
                ["every level >= 2x faster than notebook",
                 ", ".join(f"{lv} {med['notebook'] / s:.2f}x" for lv, s in stages.items()),
                 verdict(all(med["notebook"] / s >= 2 for s in stages.values()))],
            ],
        )
    )
    print(f"\nfirst n_jobs=2 call in this process (starts the worker; 50 images): {first_parallel:.2f} s")
    if args.check:
        snaps = {lv: snapshot(last[lv]) for lv in (*LEVELS, "low-jobs2")}
        same = all(snaps[lv] == snaps["low"] for lv in snaps)
        print(f"\nrecords of the three levels equivalent: {same} ({len(snaps['low'])} runs each)")
        if not same:
            for lv in snaps:
                diff = [k for k in snaps["low"] if snaps[lv].get(k) != snaps["low"][k]]
                print(f"  {lv}: {len(diff)} runs differ from low, e.g. {diff[:3]}")
    print(f"\nstores kept in {root}")


if __name__ == "__main__":
    main()

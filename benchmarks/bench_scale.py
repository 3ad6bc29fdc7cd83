"""Benchmark 5: scale. Evaluate 5,000 images (one run each), then query them: time, peak memory, query latency.

    python benchmarks/bench_scale.py                   # 5000 and 1000 images, about 3-5 minutes
    python benchmarks/bench_scale.py --images 5000 --small 1000 --level low

The data: scikit-learn's digits (1797 images) tiled to ``--images`` rows as the *test* split, through the same
:class:`xaitk_exp.data.ImageSplit` every loader returns (the train split, and so the model, stay the seed's). Pixels
repeat every 1797 rows, but each row is its own image run (``Image_id`` is the row index), which is what loads the
store. Each scenario runs in its own process on its own copy of a store that holds the trained model:

1. the evaluation stage over all images, at ``--level`` (default low, the fastest);
2. the seed notebook's query (``Predicted_class_conf >= 0.9``, predicted class ``4``, best first) over those runs,
   as the saliency stage sends it: latency, median of 7;
3. the saliency stage (sliding window) for the image that query selects.

Peak memory is each process's maximum resident set size (``os.wait4``). It is shown for two image counts and two
chunk sizes (``chunk_size``: images per ``predict_proba`` call): it follows neither the image count nor, at this
image size, the chunk; the baseline row (imports, model and data, no stage) is what every process pays anyway.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import TrainedStore, machine, median, quiet, table, temp_root, verdict  # noqa: E402

SEED_QUERY = ["query.min_conf=0.9", "query.predicted_class=4"]


def tiled_split(split, n: int):
    """The digits' images tiled to ``n`` rows as the test split; the train split unchanged."""
    import numpy as np
    from sklearn.datasets import load_digits

    from xaitk_exp.data import ImageSplit

    bunch = load_digits()
    images = (bunch.images / 16.0).astype("float64")
    reps = max(1, -(-n // len(images)))
    return ImageSplit(
        name=split.name,
        train_images=split.train_images,
        train_labels=split.train_labels,
        test_images=np.concatenate([images] * reps)[:n],
        test_labels=np.concatenate([bunch.target.astype(int)] * reps)[:n],
        class_names=split.class_names,
    )


def child(args: argparse.Namespace) -> None:
    """One scenario in this process; prints one JSON line."""
    quiet()
    from _common import compose, sqlite_uri

    from xaitk_exp.stages import Context
    from xaitk_exp.stages.evaluation import run_evaluation
    from xaitk_exp.stages.saliency.stage import build_filter, run_saliency
    from xaitk_exp.stages.upstream import ensure_model
    from xaitk_exp.tracking.factory import make_tracker
    from xaitk_exp.tracking.stores import resolve_tracking

    folder = Path(args.folder)
    overrides = [
        f"logging={args.level}",
        f"chunk_size={args.chunk}",
        f"train_run_id={args.train_run_id}",
        "evaluation.split=test",
        f"evaluation.num_images={args.images}",
        *SEED_QUERY,
    ]
    cfg = compose(sqlite_uri(folder), "stage=evaluation", *overrides)
    uri, artifact_root = resolve_tracking(cfg)
    ctx = Context(cfg=cfg, tracker=make_tracker(args.level, uri, artifact_root), output_dir=folder)
    ensure_model(ctx)
    ctx.split = tiled_split(ctx.split, args.images)
    out: dict[str, object] = {"images": args.images, "chunk": args.chunk}
    if args.images == 0:  # baseline: imports, model and data only
        print(json.dumps(out))
        return
    t0 = time.perf_counter()
    parent = run_evaluation(ctx)
    out["evaluation_s"] = time.perf_counter() - t0
    evaluation = ctx.tracker.get_run(parent)
    flt = build_filter(ctx.settings.query, parent)
    latencies = []
    for _ in range(7):
        t0 = time.perf_counter()
        runs = ctx.tracker.search([evaluation.info.experiment_id], flt, [str(cfg.query.order_by)], 1)
        latencies.append(time.perf_counter() - t0)
    out["query_ms"] = 1000 * median(latencies)
    out["query_hit"] = runs[0].info.run_name if runs else None
    t0 = time.perf_counter()
    run_saliency(ctx)
    out["saliency_s"] = time.perf_counter() - t0
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--small", type=int, default=1000, help="the smaller image count, for the memory comparison")
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--big-chunk", type=int, default=4096)
    ap.add_argument("--level", default="low", choices=["high", "mid", "low"])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    ap.add_argument("--train-run-id", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    quiet()
    root = temp_root("scale")
    print(f"building the template store in {root} ...", file=sys.stderr)
    store = TrainedStore(root)
    plan = [
        ("baseline (no stage)", 0, args.chunk),
        (f"{args.small} images, chunk {args.chunk}", args.small, args.chunk),
        (f"{args.images} images, chunk {args.chunk}", args.images, args.chunk),
        (f"{args.images} images, chunk {args.big_chunk}", args.images, args.big_chunk),
    ]
    rows, results = [], {}
    for label, n, chunk in plan:
        print(f"  running: {label} ...", file=sys.stderr, flush=True)
        r = results[label] = _measure(store, args.level, n, chunk)
        rows.append([
            label,
            f"{r['wall_s']:.1f}",
            f"{r['evaluation_s']:.1f}" if "evaluation_s" in r else "-",
            f"{1000 * r['evaluation_s'] / n:.1f}" if n else "-",
            f"{r['query_ms']:.0f}" if "query_ms" in r else "-",
            f"{r['saliency_s']:.2f}" if "saliency_s" in r else "-",
            f"{r['peak_mb']:.0f}",
        ])
    print(f"\n## Scale: evaluation at level {args.level}, then the seed query and one saliency run ({machine()})\n")
    print(table(["scenario", "process wall s", "evaluation s", "ms / image", "query ms (median of 7)",
                 "saliency stage s", "peak RSS MB"], rows))
    big = results[f"{args.images} images, chunk {args.chunk}"]
    small = results[f"{args.small} images, chunk {args.chunk}"]
    base = results["baseline (no stage)"]
    print()
    print(table(["target", "measured", "status"], [
        [f"query latency over {args.images} runs < 1 s", f"{big['query_ms']:.0f} ms", verdict(big["query_ms"] < 1000)],
        [f"peak memory: {args.images} vs {args.small} images (same chunk)",
         f"{big['peak_mb']:.0f} vs {small['peak_mb']:.0f} MB (baseline {base['peak_mb']:.0f} MB)",
         verdict(big["peak_mb"] - base["peak_mb"] <= 1.5 * max(small["peak_mb"] - base["peak_mb"], 20))],
    ]))
    print(f"\nthe query selected: {big.get('query_hit')}; stores kept in {root}")


def _measure(store: TrainedStore, level: str, n: int, chunk: int) -> dict:
    """One scenario in a child process, with that child's own peak RSS (``os.wait4``)."""
    folder = store.fresh(f"n{n}-c{chunk}")
    cmd = [
        sys.executable, __file__, "--child", "--folder", str(folder), "--level", level, "--chunk", str(chunk),
        "--images", str(n), "--train-run-id", store.train_run_id,
    ]
    out_path, err_path = folder / "child.out", folder / "child.err"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"scenario {n} images failed:\n{err_path.read_text()[-2000:]}")
    result = json.loads(out_path.read_text().strip().splitlines()[-1])
    result.update(wall_s=wall, peak_mb=usage.ru_maxrss / 1024)
    return result


if __name__ == "__main__":
    main()

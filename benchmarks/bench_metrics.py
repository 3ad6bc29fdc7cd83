"""What the saliency metrics add to the saliency stage: RISE with 1000 masks on digits, metrics on vs off.

One command from a fresh checkout (about two minutes on two cores)::

    python benchmarks/bench_metrics.py [--images 12] [--repeats 5] [--masks 1000]

Trains and evaluates once in a temporary SQLite store, then runs ``stage=saliency`` alternately with
``metrics.enabled=false`` and ``true`` (order swapped every repeat, after one warm-up each) and prints each time,
the medians and their ratio, for wall-clock and for CPU time. Target: metrics on takes under 1.25x metrics off.
Wall-clock times on a shared machine are noisy: read the medians and the ratio, not single runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

TARGET = 1.25


def _cfg(uri: str, *overrides: str):
    from xaitk_exp.app import compose_config

    return compose_config([f"tracking.uri={uri}", "progress=false", *overrides])


def _stage(uri: str, out: Path, overrides: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one in-process ``xaitk_exp.cli.run`` of ``overrides`` (its prints are silenced).

    CPU time is this process's own: less disturbed than wall time by other jobs on a shared machine."""
    import contextlib
    import io

    from xaitk_exp.app import run

    cfg = _cfg(uri, *overrides)
    with contextlib.redirect_stdout(io.StringIO()):
        t0, c0 = time.perf_counter(), time.process_time()
        run(cfg, overrides, out)
        return time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=12, help="saliency runs per stage (query.max_results)")
    ap.add_argument("--repeats", type=int, default=5, help="timed stages per setting")
    ap.add_argument("--masks", type=int, default=1000, help="RISE masks (saliency.n)")
    args = ap.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # model downloads stay quiet
    with tempfile.TemporaryDirectory() as tmp:
        uri, out = f"sqlite:///{Path(tmp, 'mlflow.db')}", Path(tmp)
        common = ["saliency=rise", f"saliency.n={args.masks}", f"query.max_results={args.images}", "force=true"]
        for stage in ("train", "evaluation"):
            _stage(uri, out, [f"stage={stage}", f"evaluation.num_images={max(20, args.images)}"])
        settings = {"off": [*common, "stage=saliency", "metrics.enabled=false"], "on": [*common, "stage=saliency"]}
        times: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
        for name in settings:  # warm-up: imports, caches, the first search of a new experiment
            _stage(uri, out, settings[name])
        for r in range(args.repeats):
            for name in ("off", "on") if r % 2 == 0 else ("on", "off"):
                times[name].append(_stage(uri, out, settings[name]))
                wall, cpu = times[name][-1]
                print(f"repeat {r + 1}/{args.repeats} {name:3s}: wall {wall:.2f} s, cpu {cpu:.2f} s", flush=True)
    print(f"\nsaliency stage, RISE n={args.masks} on digits, {args.images} images, {args.repeats} repeats (medians):")
    ratios = {}
    for i, clock in enumerate(("wall", "cpu")):
        off = statistics.median(t[i] for t in times["off"])
        on = statistics.median(t[i] for t in times["on"])
        ratios[clock] = on / off
        pairs = ", ".join(f"{a[i] / b[i]:.2f}" for a, b in zip(times["on"], times["off"], strict=True))
        print(
            f"  {clock:4s}: off {off:.2f} s ({1000 * off / args.images:.0f} ms/image), on {on:.2f} s "
            f"({1000 * on / args.images:.0f} ms/image), ratio {on / off:.3f} (+{100 * (on / off - 1):.1f}%); "
            f"per-repeat ratios {pairs}"
        )
    print(f"  target: under +{100 * (TARGET - 1):.0f}%")
    return 0 if ratios["wall"] < TARGET else 1


if __name__ == "__main__":
    sys.exit(main())

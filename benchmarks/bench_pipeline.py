"""Benchmark 4: the default pipeline end to end (``xaitk-exp``, no overrides): wall time and peak memory.

    python benchmarks/bench_pipeline.py                # 3 repeats, about 1-2 minutes

Each repeat runs, in a fresh temporary working directory (so the default store ``outputs/mlflow.db`` is new):

- ``xaitk-exp`` on the new store: train, evaluation (20 runs), saliency (one run), as a user's first run does;
- ``xaitk-exp`` again on the same store: train and evaluation are reused (same config), saliency runs again.

Peak memory is the child process's maximum resident set size (``os.wait4``'s rusage, as ``/usr/bin/time -v``
reports it); the stage lines the command prints give where its time went.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, median, table  # noqa: E402


def exe() -> list[str]:
    found = shutil.which("xaitk-exp", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "xaitk_exp"]


def run_measured(cmd: list[str], cwd: str) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MB, and the output of ``cmd``."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    log = Path(cwd, "out.log")
    with open(log, "w") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        dt = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{text[-1500:]}")
    return dt, usage.ru_maxrss / 1024, text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("overrides", nargs="*", help="extra overrides for both runs, e.g. logging=low")
    args = ap.parse_args()
    cmd = [*exe(), "progress=false", *args.overrides]
    results: dict[str, list[tuple[float, float]]] = {"first run (new store)": [], "second run (reuses upstream)": []}
    last_text = ""
    for r in range(args.repeats):
        cwd = tempfile.mkdtemp(prefix="xaitk-bench-pipeline-")
        for label in results:
            dt, peak, text = run_measured(cmd, cwd)
            results[label].append((dt, peak))
            print(f"  repeat {r + 1}/{args.repeats} {label:<30} {dt:7.2f} s {peak:7.1f} MB", file=sys.stderr)
            if label.startswith("first"):
                last_text = text
        shutil.rmtree(cwd, ignore_errors=True)
    print(f"\n## Default pipeline end to end: `{' '.join(['xaitk-exp', *cmd[len(exe()):]])}`, "
          f"{args.repeats} repeats ({machine()})\n")
    rows = []
    for label, values in results.items():
        rows.append([label, median([v[0] for v in values]), f"{min(v[0] for v in values):.2f}",
                     f"{median([v[1] for v in values]):.0f}", f"{max(v[1] for v in values):.0f}"])
    print(table(["run", "median wall s", "min wall s", "median peak RSS MB", "max peak RSS MB"], rows))
    stages = [line for line in last_text.splitlines() if re.match(r"\[(train|evaluation|saliency|metrics)\]", line)]
    if stages:
        print("\nwhat the first run did:")
        for line in stages:
            print(f"  {line[:160]}")


if __name__ == "__main__":
    main()

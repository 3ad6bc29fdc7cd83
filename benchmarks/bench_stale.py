"""Benchmark: the stale-run scan every stage does first (:func:`xaitk_exp.tracking.stale.close_dead_runs`), on SQLite
stores holding N finished runs (spread over 3 experiments, each with the ``Host``/``Pid``/``Process`` tags) plus 5
RUNNING runs of live processes of this host, beside one ``search_runs`` of the kind a stage makes to find a run to
reuse (``tags.config_hash = ... and attributes.status = 'FINISHED'``, one result).

    python benchmarks/bench_stale.py                   # N = 0, 300, 1500; 5 repeats; about 3 minutes
    python benchmarks/bench_stale.py --sizes 0 5000 --repeats 7
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, median, quiet, sqlite_uri, table  # noqa: E402


def build(folder: Path, n: int):
    from xaitk_exp.tracking.factory import make_tracker

    tracker = make_tracker("low", sqlite_uri(folder))
    exps = [tracker.experiment(f"Bench - {k}") for k in range(3)]
    for k, exp in enumerate(exps):
        count = n // 3 + (1 if k < n % 3 else 0)
        tracker.log_runs(exp, ((f"r{i}", {"config_hash": f"h{i}"}, {"m": 1.0}) for i in range(count)))
    for i in range(5):
        tracker.start_run(exps[0], f"open{i}")  # this process: alive, left RUNNING
    return tracker, exps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 300, 1500])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    quiet()
    from xaitk_exp.tracking.stale import close_dead_runs

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            folder = Path(tmp, str(n))
            folder.mkdir()
            tracker, exps = build(folder, n)
            scan, reuse = [], []
            for r in range(args.repeats):
                for variant in (("scan", "reuse") if r % 2 == 0 else ("reuse", "scan")):
                    t0 = time.perf_counter()
                    if variant == "scan":
                        assert close_dead_runs(tracker) == 0
                        scan.append(time.perf_counter() - t0)
                    else:
                        tracker.search([exps[0]], "tags.config_hash = 'h7' and attributes.status = 'FINISHED'",
                                       ["attributes.start_time DESC"], 1)
                        reuse.append(time.perf_counter() - t0)
            s, u = median(scan) * 1000, median(reuse) * 1000
            rows.append([str(n), f"{s:.1f}", f"{u:.1f}", f"{s / u:.2f}"])
    print(machine())
    print(table(["finished runs", "scan ms (median)", "reuse search ms (median)", "scan / search"], rows))


if __name__ == "__main__":
    main()

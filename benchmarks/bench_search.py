"""Benchmark: an Optuna study's per-trial overhead against a grid sweep of the same trials, and the cost of a
relaunched grid sweep whose jobs are all REUSED.

    python benchmarks/bench_search.py                  # 3 repeats, about 5 minutes on 2 busy cores
    python benchmarks/bench_search.py --repeats 5 --only search

Both parts run the installed ``xaitk-exp`` of this interpreter's environment in temporary folders, every variant
once per repeat in a rotating order (the machine is shared), and report medians.

``search``: the same 4 train trials (``model.learning_rate_init`` in 4 values, ``model.max_iter=3``) as a grid
(Hydra's basic sweeper) and as a study (``hydra/sweeper=optuna`` with Optuna's BruteForceSampler, so that it runs
exactly those 4), each on a fresh store, one trial at a time in one process. The study's extra cost per trial is
(study - grid) / 4: asking and telling the study in its SQLite file, reading each trial's runs for its objective,
and at the end the study's pictures.

``relaunch``: a 3-job joblib sweep (``saliency=rise saliency.n=100,150,200``) run once untimed, then relaunched:
with ``sweep.lookup_reused=true`` (the default: the callback sees that every job's final runs exist with the same
config hash and looks them up in its own process) and ``false`` (every job in a joblib worker, as before), beside a
single all-reused run (``stage=saliency``) as the yardstick of one process start.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import interleave, machine, median, table  # noqa: E402

RATES = ("0.01", "0.03", "0.1", "0.3")
TRAIN = ["stage=train", "model.max_iter=3", "progress=false"]
GRID = ["-m", *TRAIN, f"model.learning_rate_init={','.join(RATES)}"]
STUDY = ["-m", "hydra/sweeper=optuna", *TRAIN, f"model.learning_rate_init=choice({','.join(RATES)})",
         "sweep.objective='train.Train accuracy'", f"hydra.sweeper.n_trials={len(RATES)}", "hydra.sweeper.n_jobs=1",
         "hydra.sweeper.sampler._target_=optuna.samplers.BruteForceSampler", "hydra.sweeper.sampler.seed=0"]
SALIENCY = ["saliency=rise", "evaluation.num_images=2", "progress=false"]
RELAUNCH = ["-m", *SALIENCY, "saliency.n=100,150,200", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]


def exe() -> list[str]:
    found = shutil.which("xaitk-exp", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "xaitk_exp"]


def timed(args: list[str], cwd: Path, expect: str | None = None) -> float:
    t0 = time.perf_counter()
    out = subprocess.run([*exe(), *args], cwd=cwd, capture_output=True, text=True, check=False)
    dt = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"xaitk-exp {' '.join(args)} failed ({out.returncode}): {out.stderr[-800:]}")
    if expect is not None and expect not in out.stdout:
        raise RuntimeError(f"xaitk-exp {' '.join(args)}: {expect!r} not in its output")
    return dt


def bench_search(repeats: int) -> str:
    def fresh(args: list[str]) -> float:
        with tempfile.TemporaryDirectory(prefix="xaitk-bench-search-") as tmp:
            return timed(args, Path(tmp))

    times = interleave({"grid (basic sweeper)": lambda: fresh(GRID), "study (optuna)": lambda: fresh(STUDY)},
                       repeats)
    grid, study = median(times["grid (basic sweeper)"]), median(times["study (optuna)"])
    rows = [["grid (basic sweeper)", grid, grid / len(RATES), ""],
            ["study (optuna)", study, study / len(RATES), (study - grid) / len(RATES)]]
    return table(["4 train trials, fresh store", "median s", "s per trial", "study overhead s per trial"], rows)


def bench_relaunch(repeats: int) -> str:
    root = Path(tempfile.mkdtemp(prefix="xaitk-bench-relaunch-"))
    try:
        t0 = time.perf_counter()
        timed(RELAUNCH, root)  # computes everything once
        first = time.perf_counter() - t0
        variants = {
            "relaunch, lookup_reused=true": lambda: timed([*RELAUNCH, "sweep.lookup_reused=true"], root,
                                                          "looking them up here"),
            "relaunch, lookup_reused=false": lambda: timed([*RELAUNCH, "sweep.lookup_reused=false"], root),
            "one all-reused run (stage=saliency)": lambda: timed(["stage=saliency", "saliency.n=100", *SALIENCY],
                                                                 root, "reusing"),
        }
        times = interleave(variants, repeats)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows = [["first launch (computes, untimed repeat)", first]] + [[k, median(v)] for k, v in times.items()]
    return table(["3-job joblib sweep", "median s"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=("search", "relaunch"))
    args = parser.parse_args()
    print(f"# bench_search ({machine()}, {args.repeats} repeats, medians)\n")
    if args.only in (None, "search"):
        print(bench_search(args.repeats) + "\n")
    if args.only in (None, "relaunch"):
        print(bench_relaunch(args.repeats))


if __name__ == "__main__":
    main()

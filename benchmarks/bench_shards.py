"""Benchmark: one evaluation over many processes. One process against 4 shards (``shards=4 'shard=range(0,4)'``)
on the joblib launcher and on submitit's local executor, through the installed command.

    python benchmarks/bench_shards.py                      # 1347 images, 2 repeats, about 5-10 minutes here
    python benchmarks/bench_shards.py --repeats 3 --shards 4 --test-size 0.75 --no-submitit

The data: scikit-learn's digits with ``dataset.test_size`` (default 0.75: 1347 of the 1797 images are the test
split, every one evaluated: ``evaluation.num_images=null``), ``logging=low``, ``chunk_size=64``. Each variant runs in
its own process tree on its own copy of a store that already holds the trained model; repeats rotate the order.

Columns: the command's wall time; the shard jobs' runtimes (``sweep_job.json``: median, and their sum); the
per-shard overhead, ``(sum of the shards' runtimes - one process's wall time) / shards``: what each shard pays beyond
its share of the single process's work (its own start-up, model load, store searches); the launcher's own time, wall
minus the longest shard (start-up, the shared upstream lookup, opening the summary, the merge, the launcher's
scheduling); the merge (the summary over every shard's runs, timed by the sweep itself).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, TrainedStore, machine, median, quiet, sqlite_uri, table, temp_root  # noqa: E402

MERGED = re.compile(r"merged from \d+ shards in ([0-9.]+) s")


def command() -> list[str]:
    exe = Path(sys.executable).parent / "xaitk-exp"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "xaitk_exp"]


def run_variant(folder: Path, common: list[str], launcher: str | None, shards: int) -> dict[str, float]:
    args = ["stage=evaluation", f"tracking.uri={sqlite_uri(folder)}", *common]
    if launcher is not None:
        args = ["-m", *args, f"shard=range(0,{shards})", f"shards={shards}", f"hydra/launcher={launcher}",
                f"hydra.sweep.dir={folder / 'multirun'}"]
        args += [f"hydra.launcher.n_jobs={shards}"] if launcher == "joblib" else ["hydra.launcher.timeout_min=60"]
    start = time.perf_counter()
    done = subprocess.run([*command(), *args], cwd=folder, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{launcher or 'one process'} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    out: dict[str, float] = {"wall": wall}
    if launcher is not None:
        jobs = [json.loads(p.read_text())["runtime_s"] for p in (folder / "multirun").rglob("sweep_job.json")]
        merged = MERGED.search(done.stdout)
        out.update(job_median=median(jobs), job_sum=sum(jobs), job_max=max(jobs),
                   merge=float(merged.group(1)) if merged else float("nan"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--test-size", type=float, default=0.75)
    parser.add_argument("--no-submitit", action="store_true", help="skip submitit's local executor")
    opts = parser.parse_args()
    quiet()
    common = ["progress=false", "logging=low", "chunk_size=64", "evaluation.num_images=null",
              f"dataset.test_size={opts.test_size}"]
    root = temp_root("shards")
    store = TrainedStore(root, f"dataset.test_size={opts.test_size}")
    images = len(store.split.images("test"))
    variants: list[tuple[str, str | None]] = [("one process", None), (f"{opts.shards} shards, joblib", "joblib")]
    if not opts.no_submitit:
        variants.append((f"{opts.shards} shards, submitit_local", "submitit_local"))
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in variants}
    for repeat in range(opts.repeats):
        order = variants[repeat % len(variants):] + variants[: repeat % len(variants)]
        for name, launcher in order:
            folder = store.fresh(name.split(",")[-1].strip().replace(" ", "-"))
            results[name].append(run_variant(folder, common, launcher, opts.shards))
            print(f"  repeat {repeat + 1}: {name}: {results[name][-1]['wall']:.1f} s", flush=True)
    one = median([r["wall"] for r in results["one process"]])
    rows = []
    for name, _ in variants:
        rs = results[name]
        wall = median([r["wall"] for r in rs])
        if "job_sum" not in rs[0]:
            rows.append([name, round(wall, 2), 1.0, "-", "-", "-", "-", "-"])
            continue
        job_sum = median([r["job_sum"] for r in rs])
        rows.append([
            name, round(wall, 2), round(wall / one, 3), round(median([r["job_median"] for r in rs]), 2),
            round(job_sum, 2), round((job_sum - one) / opts.shards, 2),
            round(median([r["wall"] - r["job_max"] for r in rs]), 2), round(median([r["merge"] for r in rs]), 3),
        ])
    print(f"\n{images} digits test images, one run each, {opts.repeats} repeat(s), medians; {machine()}; {ROOT.name}")
    print(table(["variant", "wall s", "wall / one", "shard job s", "shard jobs sum s", "per-shard overhead s",
                 "launcher s", "merge s"], rows))


if __name__ == "__main__":
    main()

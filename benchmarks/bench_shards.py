"""Benchmark: one evaluation over many processes. One process against 4 shards (``shards=4 'shard=range(0,4)'``)
on the joblib launcher and on submitit's local executor, through the installed command.

    python benchmarks/bench_shards.py                      # 1347 images, 2 repeats, about 5-10 minutes here
    python benchmarks/bench_shards.py --repeats 3 --shards 4 --test-size 0.75 --no-submitit
    nice -n 10 python benchmarks/bench_shards.py --shifted 6666 --repeats 1   # 5,000 test images, about 1 hour here

The data: scikit-learn's digits with ``dataset.test_size`` (default 0.75: 1347 of the 1797 images are the test
split, every one evaluated: ``evaluation.num_images=null``), ``logging=low``, ``chunk_size=64``. With ``--shifted N``
the data is an image folder of N digits-like 8x8 PNG files instead (``dataset=image_folder``, class sub-folders): the
1797 digits, then the same digits shifted by one pixel (right, down, left, up; zeros shifted in), in that order, until
N files; ``--shifted 6666`` with the default test size gives 5,000 test images (and 1,666 to train the MLP on).
Each variant runs in its own process tree on its own copy of a store that already holds the trained model; repeats
rotate the order.

Columns: the command's wall time; the shard jobs' runtimes (``sweep_job.json``: median, and their sum); the
per-shard overhead, ``(sum of the shards' runtimes - one process's wall time) / shards``: what each shard pays beyond
its share of the single process's work (its own start-up, model load, store searches); the launcher's own time, wall
minus the longest shard (start-up, the shared upstream lookup, opening the summary, the merge, the launcher's
scheduling); the merge (the summary over every shard's runs, timed by the sweep itself). Then, on the joblib
variant's finished store, in this process: the merge's records built from the shards' saved outputs (what the merge
does now) against the model run again on the whole split (what it did before), median of 5 each.
"""

from __future__ import annotations

import argparse
import json
import os
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


SHIFTS = [(0, 0), (0, 1), (1, 0), (0, -1), (-1, 0)]


def shifted_digits(folder: Path, n: int) -> Path:
    """``n`` digits-like 8x8 grayscale PNG files in class sub-folders (the digits, then shifted copies)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    bunch = load_digits()
    if n > len(bunch.images) * len(SHIFTS):
        raise SystemExit(f"--shifted {n}: at most {len(bunch.images) * len(SHIFTS)}")
    for i in range(n):
        image, label = bunch.images[i % len(bunch.images)], int(bunch.target[i % len(bunch.images)])
        dy, dx = SHIFTS[i // len(bunch.images)]
        moved = np.zeros_like(image)
        moved[max(dy, 0): 8 + min(dy, 0), max(dx, 0): 8 + min(dx, 0)] = \
            image[max(-dy, 0): 8 + min(-dy, 0), max(-dx, 0): 8 + min(-dx, 0)]
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(moved * 255 / 16).astype(np.uint8), mode="L").save(folder / str(label) / f"{i}.png")
    return folder


def merge_costs(store: TrainedStore, folder: Path, common: list[str], shards: int, repeats: int = 5
                ) -> tuple[float, float]:
    """Seconds to build the merge's records from the saved outputs, and by running the model on the split."""
    from xaitk_exp import schema
    from xaitk_exp.stages.evaluation_plan import plan_evaluation
    from xaitk_exp.stages.shards import _records_from_outputs

    ctx = store.context(folder, "low", *common, f"shards={shards}")
    plan = plan_evaluation(ctx, store.model)
    (summary,) = ctx.tracker.search([plan.exp_id], f"tags.{schema.RUN_TYPE} = 'summary'", None, 1)
    saved, again = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        records = _records_from_outputs(ctx, plan, summary.info.run_id)
        saved.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        plan.records(ctx)
        again.append(time.perf_counter() - t0)
        assert records is not None, "the shards saved their outputs"
    return median(saved), median(again)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--test-size", type=float, default=0.75)
    parser.add_argument("--no-submitit", action="store_true", help="skip submitit's local executor")
    parser.add_argument("--shifted", type=int, default=0, help="an image folder of this many shifted digits")
    opts = parser.parse_args()
    quiet()
    root = temp_root("shards")
    data = [f"dataset.test_size={opts.test_size}"]
    if opts.shifted:
        folder = shifted_digits(root / "shifted-digits", opts.shifted)
        data = ["dataset=image_folder", f"dataset.path={folder}", "dataset.shape=[8,8]", *data]
    common = ["progress=false", "logging=low", "chunk_size=64", "evaluation.num_images=null", *data]
    store = TrainedStore(root, *data)
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
            if launcher == "joblib":
                try:
                    results[name][-1]["from_saved"], results[name][-1]["repredict"] = merge_costs(
                        store, folder, common, opts.shards)
                except Exception as exc:  # the launcher comparison still stands
                    print(f"  merge costs not measured: {type(exc).__name__}: {exc}", flush=True)
            print(f"  repeat {repeat + 1}: {name}: {results[name][-1]}", flush=True)
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
    load = os.getloadavg()
    kind = f"shifted-digits folder ({opts.shifted} files)" if opts.shifted else "digits"
    print(f"\n{images} {kind} test images, one run each, {opts.repeats} repeat(s), medians; {machine()}; "
          f"{ROOT.name}; load average now {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(table(["variant", "wall s", "wall / one", "shard job s", "shard jobs sum s", "per-shard overhead s",
                 "launcher s", "merge s"], rows))
    joblib = results[f"{opts.shards} shards, joblib"]
    if all("from_saved" in r for r in joblib):
        print("\nthe merge's records (joblib variant's store): from the shards' saved outputs "
              f"{median([r['from_saved'] for r in joblib]):.3f} s, the model run again on the split "
              f"{median([r['repredict'] for r in joblib]):.3f} s")


if __name__ == "__main__":
    main()

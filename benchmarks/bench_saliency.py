"""Benchmark 2: the saliency stage against a bare xaitk-saliency loop, and n_jobs=2 against n_jobs=1.

    python benchmarks/bench_saliency.py                # 20 digits, RISE 1000 masks, 5 repeats, about 2 minutes
    python benchmarks/bench_saliency.py --images 20 --masks 1000 --repeats 5 --level mid

Variants, side by side (each repeat runs all of them, in a rotating order):

- ``stage n_jobs=1``: ``run_saliency`` on a fresh copy of a store holding the trained model and an evaluation of the
  first ``--images`` test digits; the query selects all of them; RISE (``saliency=rise``, ``saliency.n=--masks``);
  each image gets its run with params, config artifacts, the ``.npy`` maps and the PNG picture. Saliency quality
  metrics (``metrics.enabled``, another benchmark's subject) are off, so both sides compute the same work.
- ``bare loop``: the same maps with no tracking: ``RISEStack(...)(image, blackbox)`` per image, in one process,
  through the same batched black box.
- ``stage n_jobs=2``: the stage with two joblib worker processes.

An untimed warm-up runs every variant once first (imports, and the joblib workers that a process starts on its
first parallel call: that start-up is reported separately). The maps the stage stored are checked to be
bit-for-bit those of the bare loop.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import TrainedStore, interleave, machine, median, quiet, table, temp_root, timed_saliency, verdict  # noqa: E402


def prepare(root: Path, images: int) -> TrainedStore:
    """The template store: the trained model plus an evaluation of the first ``images`` test digits."""
    from xaitk_exp.stages.evaluation import run_evaluation

    store = TrainedStore(root)
    ctx = store.context(store.folder, "low", "stage=evaluation", f"evaluation.num_images={images}")
    run_evaluation(ctx)
    return store


def stage_overrides(images: int, masks: int, n_jobs: int) -> list[str]:
    return [
        "stage=saliency",
        "saliency=rise",
        f"saliency.n={masks}",
        f"query.max_results={images}",
        f"evaluation.num_images={images}",  # the template's evaluation (its config hash) is of these images
        "metrics.enabled=false",
        f"n_jobs={n_jobs}",
    ]


def stage(store: TrainedStore, folder: Path, level: str, images: int, masks: int, n_jobs: int) -> float:
    ctx = store.context(folder, level, *stage_overrides(images, masks, n_jobs))
    return timed_saliency(ctx, images)


def bare(store: TrainedStore, images: int, masks: int, out: dict | None = None) -> float:
    """xaitk-saliency alone: the generator the config describes, called per image, nothing recorded."""
    from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.rise import RISEStack

    from xaitk_exp.models.blackbox import SklearnBlackbox

    test = store.split.test_images[:images]
    t0 = time.perf_counter()
    gen = RISEStack(n=masks, s=4, p1=0.5, seed=0, threads=0, debiased=True)
    gen.fill = 0
    bb = SklearnBlackbox(store.model, 256)
    maps = [gen(img, bb) for img in test]
    dt = time.perf_counter() - t0
    if out is not None:
        out.update(enumerate(maps))
    return dt


def stored_maps(folder: Path) -> dict[int, object]:
    import numpy as np
    from _common import sqlite_uri
    from mlflow import MlflowClient

    client = MlflowClient(sqlite_uri(folder))
    exp = client.get_experiment_by_name("MLPClassifier - Saliency Map Generation")
    out = {}
    for run in client.search_runs([exp.experiment_id], max_results=1000):
        path = client.download_artifacts(run.info.run_id, "saliency_map_np_arrays/saliency_maps.npy")
        out[int(run.data.tags["Image_id"])] = np.load(path)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--masks", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--level", default="mid", choices=["high", "mid", "low"], help="logging level of the stage")
    args = ap.parse_args()
    quiet()
    root = temp_root("saliency")
    print(f"building the template store in {root} ...", file=sys.stderr)
    store = prepare(root, args.images)
    last: dict[str, Path] = {}

    def staged(n_jobs: int):
        def go() -> float:
            folder = store.fresh(f"jobs{n_jobs}")
            last[f"jobs{n_jobs}"] = folder
            return stage(store, folder, args.level, args.images, args.masks, n_jobs)

        return go

    # first parallel call in this process: includes starting the joblib worker processes
    t0 = time.perf_counter()
    staged(2)()
    first_parallel = time.perf_counter() - t0

    variants = {
        "stage n_jobs=1": staged(1),
        "bare loop": lambda: bare(store, args.images, args.masks),
        "stage n_jobs=2": staged(2),
    }
    times = interleave(variants, args.repeats, warmup=True)
    med = {k: median(v) for k, v in times.items()}
    n = args.images
    print(
        f"\n## Saliency stage: {n} digits, RISE {args.masks} masks, level {args.level}, {args.repeats} repeats "
        f"({machine()})\n"
    )
    rows = [
        [k, med[k], 1000 * med[k] / n, med[k] / med["bare loop"], f"{min(times[k]):.3f}"] for k in variants
    ]
    print(table(["variant", "median s", "ms / image", "this / bare loop", "min s"], rows))
    ratio = med["stage n_jobs=1"] / med["bare loop"]
    speedup = med["stage n_jobs=1"] / med["stage n_jobs=2"]
    print()
    print(
        table(
            ["target", "measured", "status"],
            [
                ["stage (n_jobs=1) / bare loop <= 1.25", f"{ratio:.2f}", verdict(ratio <= 1.25)],
                ["n_jobs=2 >= 1.6x faster than n_jobs=1", f"{speedup:.2f}x", verdict(speedup >= 1.6)],
            ],
        )
    )
    print(f"\nfirst n_jobs=2 call in a fresh process (starts the workers): {first_parallel:.2f} s")
    import numpy as np

    reference: dict = {}
    bare(store, args.images, args.masks, reference)
    for key, folder in last.items():
        got = stored_maps(folder)
        same = sorted(got) == sorted(reference) and all(np.array_equal(got[k], reference[k]) for k in reference)
        print(f"maps stored by the stage ({key}) equal the bare loop's bit for bit: {same}")
    print(f"stores kept in {root}")


if __name__ == "__main__":
    main()

"""Benchmark: the saliency stage on a small CNN (ONNX Runtime and PyTorch) against a bare xaitk-saliency loop.

    python benchmarks/bench_models.py                        # 64x64 and 224x224, 2 images, 3 repeats (~8 min here)
    python benchmarks/bench_models.py --sizes 64 --images 3 --repeats 5 --memory-masks 1000,4000
    python benchmarks/bench_models.py --algorithms sliding_window --images 2 --more-images 8 --memory-masks ""

The network is ``tests/models/model_zoo.SmallCNN`` (two 3x3 convolutions, seeded random weights: timing does not need a
trained model), saved as TorchScript (``model=torch``) and written as ONNX (``model=onnx``, the same weights). The
images are smooth random colour pictures in a flat folder (no ground truth), ``dataset.shape=[S,S]``.

Variants, side by side for each size, algorithm and runtime (every repeat runs each once, in a rotating order):

- ``stage``: ``run_saliency`` on a fresh copy of a store that holds the recorded model and an evaluation of the
  images; the query selects all of them; each image gets its run with params, config artifacts, the ``.npy`` maps
  and the PNG picture. Quality metrics are off, so both sides do the same work.
- ``bare``: the same maps with no tracking: the xaitk-saliency generator the config describes, called per image
  through the same black box (``ImageModelBlackbox``, ``chunk_size`` images per model call).

Algorithms: RISE with ``--masks`` masks (s=8, p1=0.5) and a sliding window (window S/4, stride S/8).
``--more-images N`` times every variant on N images too and splits each time into a fixed cost per stage and a
cost per image (the line through the two points): the per-image ratio is what remains once the stage's own start
(store lookups, config files) is spread over many images.
Peak memory: the stage (RISE, ONNX Runtime) run alone in a fresh process per mask count and ``chunk_size``
(``--memory-chunks``; ``run(cfg)``: store, data, model, stage), read from its ``VmHWM`` (peak resident set;
``ru_maxrss`` would keep the forking parent's), beside the same process doing nothing but loading the libraries.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "models"))

from _common import TrainedStore, interleave, machine, median, quiet, table, temp_root, timed_saliency, verdict  # noqa: E402

CHUNK = 64


def make_models(root: Path, size: int) -> dict[str, str]:
    """The CNN for ``size`` x ``size`` inputs as TorchScript and ONNX files (same seeded weights)."""
    import model_zoo
    import torch

    torch.manual_seed(0)
    cnn = model_zoo.SmallCNN().eval()
    weights = {k: v.detach().numpy() for k, v in cnn.state_dict().items()}
    return {
        "torch": str(model_zoo.save_torchscript(cnn, root / f"cnn{size}.pt")),
        "onnx": str(model_zoo.cnn_onnx(weights, root / f"cnn{size}.onnx", size=size)),
    }


def make_folder(root: Path, size: int, n: int) -> str:
    """``n`` smooth random colour pictures of ``size`` x ``size`` in a flat folder."""
    import numpy as np
    from PIL import Image

    folder = root / f"photos{size}"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(size)
    for i in range(n):
        small = rng.uniform(size=(8, 8, 3))
        im = Image.fromarray((small * 255).astype("uint8")).resize((size, size), Image.BICUBIC)
        im.save(folder / f"{i:03d}.png")
    return str(folder)


def overrides(source: str, path: str, folder: str, size: int, images: int) -> list[str]:
    return [
        f"model={source}", f"model.path={path}",
        "dataset=image_folder", f"dataset.path={folder}", "dataset.grayscale=false", f"dataset.shape=[{size},{size}]",
        "dataset.test_size=0.5", f"evaluation.num_images={images}", f"chunk_size={CHUNK}",
    ]


def algorithm(name: str, size: int, masks: int) -> list[str]:
    if name == "rise":
        return ["saliency=rise", f"saliency.n={masks}", "saliency.s=8"]
    w, s = max(1, size // 4), max(1, size // 8)
    return ["saliency=sliding_window", f"saliency.window_size=[{w},{w}]", f"saliency.stride=[{s},{s}]"]


def prepare(root: Path, base: list[str], images: int) -> TrainedStore:
    from xaitk_exp.stages.evaluation import run_evaluation

    store = TrainedStore(root, *base)
    ctx = store.context(store.folder, "low", "stage=evaluation")
    run_evaluation(ctx)
    return store


def stage(store: TrainedStore, folder: Path, images: int, algo: list[str]) -> float:
    ctx = store.context(folder, "mid", "stage=saliency", f"query.max_results={images}", "metrics.enabled=false",
                        *algo)
    return timed_saliency(ctx, images)


def bare(store: TrainedStore, images: int, algo_name: str, size: int, masks: int) -> float:
    from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.rise import RISEStack
    from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.slidingwindow import SlidingWindowStack

    from xaitk_exp.models.blackbox import blackbox_for

    test = store.split.test_images[:images]
    t0 = time.perf_counter()
    if algo_name == "rise":
        gen = RISEStack(n=masks, s=8, p1=0.5, seed=0, threads=0, debiased=True)
    else:
        w, s = max(1, size // 4), max(1, size // 8)
        gen = SlidingWindowStack(window_size=(w, w), stride=(s, s), threads=0)
    gen.fill = 0
    bb = blackbox_for(store.model, CHUNK)
    for img in test:
        gen(img, bb)
    return time.perf_counter() - t0


def fixed_and_per_image(counts: list[int], seconds: list[float]) -> tuple[float, float]:
    """The line through ``(count, seconds)`` for two counts: (seconds at zero images, seconds per image)."""
    per_image = (seconds[1] - seconds[0]) / (counts[1] - counts[0])
    return seconds[0] - counts[0] * per_image, per_image


MEMORY_CHILD = r"""
import json, sys, time
sys.path.insert(0, {bench!r})

def hwm_mb():  # VmHWM: this process's peak resident set, reset by exec (ru_maxrss keeps the forking parent's)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

from _common import TrainedStore, quiet
quiet()
from pathlib import Path
from xaitk_exp.app import compose_config, run
cfg = compose_config({overrides!r})
import xaitk_saliency.impls.gen_image_classifier_blackbox_sal.rise, mlflow, onnxruntime  # the libraries, loaded
from xaitk_exp.stages.context import Context
base = hwm_mb()
t0 = time.perf_counter()
if {do_stage!r}:
    run(cfg, [], {folder!r})
print(json.dumps({{"base_mb": base, "peak_mb": hwm_mb(), "seconds": time.perf_counter() - t0}}))
"""


def memory(store: TrainedStore, images: int, masks: int, do_stage: bool, chunk: int = CHUNK) -> dict:
    """Peak RSS of a fresh process running the RISE saliency stage on a copy of ``store`` (or only its imports),
    ``chunk`` images per model call (and masks per chunk)."""
    from _common import sqlite_uri

    folder = store.fresh(f"mem{masks}-{chunk}")
    own = [o for o in store.overrides if not o.startswith("chunk_size=")]
    ov = [f"tracking.uri={sqlite_uri(folder)}", "progress=false", *own, f"chunk_size={chunk}", "stage=saliency",
          f"query.max_results={images}", "metrics.enabled=false", "logging=mid", "force=true",
          *algorithm("rise", 0, masks)]
    code = MEMORY_CHILD.format(bench=str(Path(__file__).resolve().parent), overrides=ov, do_stage=do_stage,
                               folder=str(folder))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def rise_peak(size: int, masks: int, chunk: int, chunked: bool) -> tuple[float, float]:
    """Peak MB of numpy's arrays (``tracemalloc``) and seconds of one RISE map (s=8) of a grayscale ``size`` image
    through a scikit-learn logistic regression (10 classes): the chunked RISE of the stage, or xaitk-saliency's
    ``RISEStack`` itself. The model's own memory is not in it."""
    import tracemalloc

    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.rise import RISEStack

    from xaitk_exp.models.blackbox import SklearnBlackbox
    from xaitk_exp.stages.saliency.rise import chunked_for

    x = np.random.default_rng(0).uniform(size=(20, size * size)).astype(np.float32)
    model = LogisticRegression(max_iter=30).fit(x, np.arange(20) % 10)
    image = x[0].reshape(size, size)
    gen = RISEStack(n=masks, s=8, p1=0.5, seed=0, threads=0)
    gen.fill = 0
    run = chunked_for(gen) if chunked else None
    if run is not None:
        run(image, SklearnBlackbox(model, chunk), chunk)  # the per-size lookup table, outside the measurement
    tracemalloc.start()
    t0 = time.perf_counter()
    if run is not None:
        run(image, SklearnBlackbox(model, chunk), chunk)
    else:
        gen(image, SklearnBlackbox(model, chunk))
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return peak, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="64,224", help="image sizes to time ('' skips the timing tables)")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--more-images", type=int, default=0, help="also time this many images; split fixed vs per image")
    ap.add_argument("--masks", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--algorithms", default="rise,sliding_window")
    ap.add_argument("--sources", default="onnx,torch")
    ap.add_argument("--memory-masks", default="1000,4000", help="mask counts for the peak-memory rows ('' skips)")
    ap.add_argument("--memory-size", type=int, default=224)
    ap.add_argument("--memory-chunks", default=str(CHUNK), help="chunk_size values for the peak-memory rows")
    args = ap.parse_args()
    quiet()
    root = temp_root("models")
    sizes = [int(s) for s in args.sizes.split(",") if s]
    algos = [a for a in args.algorithms.split(",") if a]
    sources = [s for s in args.sources.split(",") if s]
    counts = [args.images] + ([args.more_images] if args.more_images > args.images else [])
    rows, checks, splits = [], [], []
    stores: dict[tuple[int, str], TrainedStore] = {}
    for size in sizes:
        files = make_models(root, size)
        folder = make_folder(root, size, 2 * counts[-1])
        for source in sources:
            print(f"preparing {source} at {size}x{size} ...", file=sys.stderr)
            stores[size, source] = prepare(root / f"{source}{size}", overrides(
                source, files[source], folder, size, counts[-1]), counts[-1])
        for algo_name in algos:
            algo = algorithm(algo_name, size, args.masks)
            variants = {}
            for n in counts:
                for source in sources:
                    st = stores[size, source]
                    variants[f"{source} stage {n}"] = (lambda st=st, a=algo, n=n: stage(st, st.fresh("stage"), n, a))
                    variants[f"{source} bare {n}"] = (
                        lambda st=st, a=algo_name, n=n: bare(st, n, a, size, args.masks))
            times = interleave(variants, args.repeats, warmup=True)
            med = {k: median(v) for k, v in times.items()}
            label = f"RISE {args.masks}" if algo_name == "rise" else "sliding window"
            for n in counts:
                for source in sources:
                    for kind in ("stage", "bare"):
                        key, bare_key = f"{source} {kind} {n}", f"{source} bare {n}"
                        rows.append([f"{size}x{size}", label, n, source, kind, med[key], n / med[key],
                                     med[key] / med[bare_key], med[key] / med[f"{sources[0]} {kind} {n}"]])
                    ratio = med[f"{source} stage {n}"] / med[f"{source} bare {n}"]
                    checks.append([f"{size}x{size} {label} {source}, {n} images: stage / bare <= 1.15",
                                   f"{ratio:.2f}", verdict(ratio <= 1.15)])
            if len(counts) == 2:
                for source in sources:
                    fit = {kind: fixed_and_per_image(counts, [med[f"{source} {kind} {n}"] for n in counts])
                           for kind in ("stage", "bare")}
                    splits.append([f"{size}x{size}", label, source, *fit["stage"], *fit["bare"],
                                   fit["stage"][1] / fit["bare"][1], verdict(fit["stage"][1] / fit["bare"][1] <= 1.15)])
    if rows:
        print(f"\n## Saliency stage on a small CNN: {args.repeats} repeats, chunk_size {CHUNK} ({machine()})\n")
        print(table(["size", "algorithm", "images", "runtime", "variant", "median s", "images / s", "this / bare",
                     f"this / {sources[0]}"], rows))
        print()
        print(table(["target", "measured", "status"], checks))
    if splits:
        print(f"\n## Fixed and per-image cost: the line through {counts[0]} and {counts[1]} images\n")
        print(table(["size", "algorithm", "runtime", "stage fixed s", "stage s / image", "bare fixed s",
                     "bare s / image", "per image stage / bare", "<= 1.15"], splits))
    masks = [int(m) for m in args.memory_masks.split(",") if m]
    if masks:
        size = args.memory_size
        key = (size, sources[0])
        if key not in stores:
            files = make_models(root, size)
            folder = make_folder(root, size, 2 * args.images)
            stores[key] = prepare(root / f"{sources[0]}{size}m", overrides(
                sources[0], files[sources[0]], folder, size, args.images), args.images)
        base = memory(stores[key], args.images, masks[0], do_stage=False)
        mem_rows = [["libraries and model only", "-", "-", base["peak_mb"], 0.0, "-"]]
        for chunk in [int(c) for c in args.memory_chunks.split(",") if c]:
            for m in masks:
                got = memory(stores[key], args.images, m, do_stage=True, chunk=chunk)
                mem_rows.append([f"stage, RISE {m} masks", m, chunk, got["peak_mb"], got["peak_mb"] - base["peak_mb"],
                                 got["seconds"]])
        print(f"\n## Peak memory: saliency stage, {sources[0]}, {size}x{size}, {args.images} images, fresh process "
              "each\n")
        print(table(["run", "masks", "chunk_size", "peak RSS MB", "above baseline MB", "process s"], mem_rows))
        rows = [["xaitk-saliency RISEStack", masks[0], CHUNK, *rise_peak(size, masks[0], CHUNK, chunked=False)]]
        for chunk in [int(c) for c in args.memory_chunks.split(",") if c]:
            rows += [["chunked RISE", m, chunk, *rise_peak(size, m, chunk, chunked=True)] for m in masks]
        print(f"\n## RISE alone: numpy's peak (tracemalloc), {size}x{size} grayscale, logistic regression\n")
        print(table(["algorithm", "masks", "chunk_size", "peak MB", "s"], rows))
    print(f"\nstores kept in {root}")


if __name__ == "__main__":
    main()

"""Benchmark: chunked D-RISE (``xaitk_exp.detection.drise``) against a bare xaitk-saliency loop, and its peak memory
as ``chunk_size`` changes.

    python benchmarks/bench_drise.py                              # 224x224, 1000 masks, 1 image, 3 repeats (~5 min)
    python benchmarks/bench_drise.py --images 2 --repeats 5 --memory-chunks 16,64,256,1000

The detector is the toy shapes detector (``xaitk_exp.detection.toy``, a torchvision-style module behind
``TorchDetector``, ``--detector-chunk`` images per model call), on drawn scenes of ``--objects`` shapes at
``--size`` x ``--size``; each image's own detections are explained. Variants, side by side (each repeat runs each
once, in a rotating order):

- ``chunked``: :func:`~xaitk_exp.detection.drise.drise_maps` with ``--chunk`` masks per chunk;
- ``bare``: ``DRISEStack(n, s, p1, seed)(image, boxes, scores, blackbox, objectness)``, per image, as a user of
  xaitk-saliency would call it (all masks and perturbed images at once).

The maps of the two are checked equal bit for bit. Peak memory is numpy's arrays as ``tracemalloc`` sees them, for
one image, the black box taking one image per call so that the detector's own working memory stays out of it.
"""

from __future__ import annotations

import argparse
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import interleave, machine, median, quiet, table, verdict  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--masks", type=int, default=1000)
    ap.add_argument("--grid", type=int, default=16, help="D-RISE's s (cells per side)")
    ap.add_argument("--images", type=int, default=1)
    ap.add_argument("--objects", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--detector-chunk", type=int, default=64)
    ap.add_argument("--memory-chunks", default="16,64,256,1000", help="chunk sizes for the memory table ('' skips)")
    args = ap.parse_args()
    quiet()

    import numpy as np
    from xaitk_saliency.impls.gen_object_detector_blackbox_sal.drise import DRISEStack

    from xaitk_exp.detection import toy
    from xaitk_exp.detection.blackbox import TorchDetector
    from xaitk_exp.detection.drise import drise_maps

    rng = np.random.default_rng(0)
    scenes = [toy.draw_scene(rng, (args.size, args.size), args.objects, min_side=args.size // 10,
                             max_side=args.size // 4) for _ in range(args.images)]
    bb = TorchDetector(toy.shapes_detector(), toy.CLASSES, chunk_size=args.detector_chunk)
    refs = [next(bb.detect([s.image])).xaitk_inputs(bb.n_classes) for s in scenes]

    def stack() -> DRISEStack:
        return DRISEStack(n=args.masks, s=args.grid, p1=0.5, seed=0)

    maps: dict[str, list[np.ndarray]] = {}

    def chunked() -> None:
        maps["chunked"] = [drise_maps(stack(), s.image, b, sc, bb, o, chunk_size=args.chunk)
                           for s, (b, sc, o) in zip(scenes, refs, strict=True)]

    def bare() -> None:
        maps["bare"] = [stack()(s.image, b, sc, bb, o) for s, (b, sc, o) in zip(scenes, refs, strict=True)]

    print(f"# D-RISE, {args.size}x{args.size}, {args.masks} masks (s={args.grid}), {args.images} images of "
          f"{args.objects} shapes, chunk {args.chunk}; {machine()}")
    times = interleave({"chunked": chunked, "bare": bare}, args.repeats)
    same = all(np.array_equal(a, b) for a, b in zip(maps["chunked"], maps["bare"], strict=True))
    base = median(times["bare"])
    rows = [[name, median(t), median(t) / args.images, median(t) / base, min(t)] for name, t in times.items()]
    print(table(["variant", "median s", "s / image", "this / bare", "min s"], rows))
    ratio = median(times["chunked"]) / base
    print(table(["target", "measured", "status"], [
        ["chunked / bare <= 1.15", f"{ratio:.3f}", verdict(ratio <= 1.15)],
        ["maps equal bit for bit", str(same), verdict(same)],
    ]))

    chunks = [int(c) for c in args.memory_chunks.split(",") if c.strip()]
    if not chunks:
        return
    one = TorchDetector(toy.shapes_detector(), toy.CLASSES, chunk_size=1)
    image, (b, sc, o) = scenes[0].image, refs[0]

    drise_maps(DRISEStack(n=8, s=args.grid, p1=0.5, seed=0), image, b, sc, one, o)  # lazy imports: not measured

    def peak_mb(run) -> float:
        tracemalloc.start()
        try:
            run()
            return tracemalloc.get_traced_memory()[1] / 2**20
        finally:
            tracemalloc.stop()

    rows = [[f"chunked, chunk_size={c}", peak_mb(lambda c=c: drise_maps(stack(), image, b, sc, one, o, chunk_size=c))]
            for c in chunks]
    rows.append(["bare (all masks at once)", peak_mb(lambda: stack()(image, b, sc, one, o))])
    print(f"\n# peak numpy memory, one {args.size}x{args.size} image, {args.masks} masks, {len(b)} detections")
    print(table(["variant", "peak MB"], rows))


if __name__ == "__main__":
    main()

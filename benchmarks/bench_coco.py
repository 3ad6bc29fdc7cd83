"""Benchmark: COCO evaluation of detections (``xaitk_exp.detection.coco.evaluate``: summary, per-class and per-image
AP) against pycocotools alone (one ``COCOeval`` for the summary, what a script would run).

    python benchmarks/bench_coco.py                      # 200 images of 3 shapes, 5 repeats
    python benchmarks/bench_coco.py --images 1000 --repeats 3

The annotations and images are the toy shapes folder (``xaitk_exp.detection.toy.write_coco_folder``); the detections
are the toy detector's on those images, computed once, untimed. ``evaluate`` adds one small ``COCOeval`` per image
(AP@0.5 only) for the per-image AP; the table shows what that costs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import interleave, machine, median, quiet, table, temp_root  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    quiet()

    import numpy as np
    from PIL import Image
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from xaitk_exp.detection import toy
    from xaitk_exp.detection.blackbox import TorchDetector
    from xaitk_exp.detection.coco import evaluate, load_annotations

    path, _ = toy.write_coco_folder(temp_root("coco") / "shapes", n_images=args.images, n_objects=3)
    ann = load_annotations(path)
    bb = TorchDetector(toy.shapes_detector(), toy.CLASSES)
    images = [np.asarray(Image.open(ann.image_file(im))) for im in ann.images]
    dets = dict(zip([im["id"] for im in ann.images], bb.detect(images), strict=True))
    results = [{"image_id": i, "category_id": int(label) + 1, "bbox": [x0, y0, x1 - x0, y1 - y0], "score": score}
               for i, d in dets.items()
               for (x0, y0, x1, y1), label, score in zip(d.boxes.tolist(), d.labels, d.scores.tolist(), strict=True)]
    got: dict[str, float] = {}

    def ours() -> None:
        got["ours"] = evaluate(ann, dets, toy.CLASSES).map_50_95

    def pycocotools_alone() -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(path))
            ev = COCOeval(gt, gt.loadRes(results), iouType="bbox")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        got["pycocotools"] = float(ev.stats[0])

    print(f"# COCO evaluation, {args.images} images, {len(results)} detections; {machine()}")
    times = interleave({"evaluate (summary + per image)": ours, "pycocotools alone (summary)": pycocotools_alone},
                       args.repeats, warmup=True)
    base = median(times["pycocotools alone (summary)"])
    print(table(["variant", "median s", "ms / image", "this / pycocotools", "min s"],
                [[n, median(t), 1000 * median(t) / args.images, median(t) / base, min(t)] for n, t in times.items()]))
    print(f"mAP@[.5:.95] equal: {got['ours'] == got['pycocotools']} ({got['ours']:.4f})")


if __name__ == "__main__":
    main()

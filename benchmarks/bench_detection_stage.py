"""Benchmark: the detection stages against what a script would do with the libraries alone.

    python benchmarks/bench_detection_stage.py        # 224x224, 1000 masks, 2 images; evaluation: 200 of 64x64
    python benchmarks/bench_detection_stage.py --images 2 --size 64 --masks 50 --eval-images 20 --repeats 2   # tiny

1. ``stage=saliency saliency=drise`` (in process through :func:`xaitk_exp.app.run`, ``logging=low``,
   ``metrics.enabled=false``, ``force=true`` each repeat, on a store that already holds the train and evaluation
   runs, made once, untimed) against a bare xaitk-saliency loop doing the same work: for each explained image, the
   detector once, then ``DRISEStack(n, s, p1, seed, fill, threads=0)(image, boxes, scores, blackbox, objectness)``
   for all its detections. The data are the toy shapes folder (``xaitk_exp.detection.toy.write_coco_folder``), the
   detector the toy MAITE detector behind the project's black box (the same one in both, so the comparison is of
   the stage's own cost: choosing, chunking, recording). The stage's recorded ``saliency_maps.npy`` are checked
   against the bare loop's (atol 1e-6). ``--with-metrics`` adds the stage with ``metrics.enabled=true``.
2. ``stage=evaluation`` (``force=true``) against a script: the detector on every image, then one pycocotools
   ``COCOeval`` (what ``benchmarks/bench_coco.py`` times alone, without loading or detecting). Whole stage vs
   whole script; the mAP@[.5:.95] of both is compared.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import compose, interleave, machine, median, quiet, sqlite_uri, table, temp_root, verdict  # noqa: E402

MAITE = ["model=maite", "model._target_=xaitk_exp.detection.toy.MaiteShapesDetector"]


def prepared_store(root: Path, name: str, n_images: int, size: int, objects: int, seed: int,
                   *stages: str) -> tuple[Any, ...]:
    """A toy shapes COCO folder and a SQLite store that holds ``stages`` (run once, untimed): ``(annotations,
    store folder, data overrides, last context)``."""
    from xaitk_exp.app import run
    from xaitk_exp.detection import toy

    ann, _ = toy.write_coco_folder(root / name, n_images=n_images, size=(size, size), n_objects=objects)
    store = root / f"{name}-store"
    store.mkdir()
    data = ["dataset=coco", f"dataset.annotations={ann}", *MAITE, "logging=low", f"seed={seed}"]
    ctx = None
    with contextlib.redirect_stdout(io.StringIO()):
        for stage in stages:
            ctx = run(compose(sqlite_uri(store), f"stage={stage}", *data), [], store)
    return ann, store, data, ctx


def load_image(ann: Path, row: int, scaled: bool = False) -> Any:
    """Row ``row`` of the annotation file's images, as a script would read it: ``[H, W, 3]`` uint8, or with
    ``scaled`` float in [0, 1] as the stage loads it (D-RISE on uint8 rounds its perturbed images and fill to
    uint8, so its maps differ from the float image's by up to ~0.03)."""
    import json

    import numpy as np
    from PIL import Image

    images = json.loads(ann.read_text())["images"]
    image = np.asarray(Image.open(ann.parent / images[row]["file_name"]).convert("RGB"))
    return image / 255.0 if scaled else image


def recorded_maps(store: Path, run_ids: list[str]) -> dict[tuple[int, int], Any]:
    """``(Image_id, Detection)`` -> the map a saliency run recorded (``[H, W]``)."""
    import numpy as np
    from mlflow.tracking import MlflowClient

    from xaitk_exp import schema

    client = MlflowClient(sqlite_uri(store))
    out = {}
    for rid in run_ids:
        tags = client.get_run(rid).data.tags
        path = client.download_artifacts(rid, f"{schema.NPY_DIR}/{schema.MAPS_NPY}", tempfile.mkdtemp(dir=store))
        out[(int(tags[schema.IMAGE_ID]), int(tags[schema.DETECTION]))] = np.load(path)[0]
    return out


def saliency_part(args: argparse.Namespace, root: Path) -> None:
    import numpy as np
    from xaitk_saliency.impls.gen_object_detector_blackbox_sal.drise import DRISEStack

    from xaitk_exp.app import run

    ann, store, data, ctx = prepared_store(root, "saliency", args.images, args.size, args.objects, args.seed,
                                           "train", "evaluation")
    bb = ctx.model.detector(args.chunk)
    common = [*data, "stage=saliency", "force=true", "saliency=drise", f"saliency.n={args.masks}",
              f"saliency.s={args.grid}", f"query.max_results={args.images}", f"chunk_size={args.chunk}"]
    configs = {"stage": compose(sqlite_uri(store), *common, "metrics.enabled=false")}
    if args.with_metrics:
        configs["stage, metrics on"] = compose(sqlite_uri(store), *common, "metrics.enabled=true")
    last: dict[str, list[str]] = {}

    def stage(name: str) -> Any:
        def go() -> None:
            with contextlib.redirect_stdout(io.StringIO()):
                last[name] = run(configs[name], [], store).results["saliency_run_ids"]
        return go

    stage("stage")()  # untimed: imports, the first saliency experiment; tells which images the stage explains
    rows = sorted({k for k, _ in recorded_maps(store, last["stage"])})
    images = [load_image(ann, k, scaled=True) for k in rows]
    bare_maps: dict[tuple[int, int], Any] = {}

    def bare() -> None:
        for k, image in zip(rows, images, strict=True):
            found = next(iter(bb.detect([image])))
            boxes, scores, objectness = found.xaitk_inputs(bb.n_classes)
            fill = image.reshape(-1, image.shape[2]).mean(axis=0)
            maps = DRISEStack(n=args.masks, s=args.grid, p1=0.5, seed=args.seed, fill=fill, threads=0)(
                image, boxes, scores, bb, objectness)
            for j, m in enumerate(maps):
                bare_maps[(k, j)] = m

    variants = {name: stage(name) for name in configs} | {"bare xaitk-saliency loop": bare}
    print(f"# D-RISE: stage=saliency vs a bare DRISEStack loop; {args.size}x{args.size}, {args.masks} masks "
          f"(s={args.grid}), chunk_size {args.chunk}; {machine()}")
    times = interleave(variants, args.repeats)
    stage_maps = recorded_maps(store, last["stage"])
    same = stage_maps.keys() == bare_maps.keys() and all(
        np.allclose(stage_maps[key], bare_maps[key], rtol=0, atol=1e-6) for key in stage_maps)
    base = median(times["bare xaitk-saliency loop"])
    print(table(["variant", "median s", "this / bare", "min s", "images", "detections", "masks"],
                [[n, median(t), median(t) / base, min(t), len(rows), len(bare_maps), args.masks]
                 for n, t in times.items()]))
    ratio = median(times["stage"]) / base
    print(table(["target", "measured", "status"], [
        ["stage / bare <= 1.15", f"{ratio:.3f}", verdict(ratio <= 1.15)],
        [f"maps equal (atol 1e-6), {len(stage_maps)} recorded", str(same), verdict(same)],
    ]))


def evaluation_part(args: argparse.Namespace, root: Path) -> None:
    import numpy as np
    from mlflow.tracking import MlflowClient
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from xaitk_exp import schema
    from xaitk_exp.app import run

    ann, store, data, ctx = prepared_store(root, "evaluation", args.eval_images, args.eval_size, args.objects,
                                           args.seed, "train")
    cfg = compose(sqlite_uri(store), *data, "stage=evaluation", "force=true", f"chunk_size={args.chunk}")
    got: dict[str, float] = {}

    def stage() -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            done = run(cfg, [], store)
        got["stage"] = MlflowClient(sqlite_uri(store)).get_run(done.evaluation_run_id).data.metrics[schema.MAP_50_95]

    def script() -> None:
        import json

        bb = ctx.model.detector(args.chunk)
        listed = json.loads(ann.read_text())["images"]
        images = [load_image(ann, k) for k in range(len(listed))]
        results = [{"image_id": im["id"], "category_id": int(label) + 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": score}
                   for im, d in zip(listed, bb.detect(images), strict=True)
                   for (x0, y0, x1, y1), label, score in zip(d.boxes.tolist(), d.labels, d.scores.tolist(),
                                                             strict=True)]
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(ann))
            ev = COCOeval(gt, gt.loadRes(results), iouType="bbox")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        got["script"] = float(ev.stats[0])

    print(f"\n# stage=evaluation vs detector + one pycocotools COCOeval; {args.eval_images} images of "
          f"{args.eval_size}x{args.eval_size}, logging=low; {machine()}")
    times = interleave({"stage=evaluation": stage, "detector + pycocotools": script}, args.repeats, warmup=True)
    base = median(times["detector + pycocotools"])
    print(table(["variant", "median s", "ms / image", "this / script", "min s"],
                [[n, median(t), 1000 * median(t) / args.eval_images, median(t) / base, min(t)]
                 for n, t in times.items()]))
    print(f"mAP@[.5:.95] stage {got['stage']:.4f}, script {got['script']:.4f}, "
          f"equal: {bool(np.isclose(got['stage'], got['script'], rtol=0, atol=1e-9))}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--images", type=int, default=2, help="images explained (each with all its detections)")
    ap.add_argument("--objects", type=int, default=3, help="shapes per image")
    ap.add_argument("--masks", type=int, default=1000)
    ap.add_argument("--grid", type=int, default=16, help="D-RISE's s (cells per side)")
    ap.add_argument("--seed", type=int, default=0, help="the config's seed (D-RISE's seed follows it)")
    ap.add_argument("--chunk", type=int, default=256, help="chunk_size: masks (and images) per detector call")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--with-metrics", action="store_true", help="also time the stage with metrics.enabled=true")
    ap.add_argument("--eval-images", type=int, default=200, help="images of the evaluation part (0 skips it)")
    ap.add_argument("--eval-size", type=int, default=64)
    ap.add_argument("--skip-saliency", action="store_true")
    args = ap.parse_args()
    quiet()
    root = temp_root("detstage")
    try:
        if not args.skip_saliency:
            saliency_part(args, root)
        if args.eval_images:
            evaluation_part(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

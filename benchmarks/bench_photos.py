"""Benchmark: the default saliency stage on colour photos of three sizes, beside xaitk-saliency's own defaults.

    python benchmarks/bench_photos.py                  # 64x64, 224x224, 96x384; 6 photos each; a few minutes
    python benchmarks/bench_photos.py --images 6 --sizes 64x64,224x224,96x384

Per size, a small CNN (``tests/models/model_zoo.SmallCNN``, 2 classes) is trained for a few seconds on synthetic
photos whose only evidence of the class is a coloured disc (about 5% of the image) at a random place
(``model_zoo.blob_photos``),
saved as TorchScript and brought in as ``model=torch`` (not trained here: every photo of the folder is evaluated).
Then, on the same ``--images`` photos:

- ``xaitk-exp default (stage)``: ``run_saliency`` with the shipped default (``saliency=sliding_window``, window,
  stride and fill ``auto``) and the default quality metrics, per image: runs, params, ``.npy``, pictures, metrics.
- ``xaitk-exp default (maps only)``: the same generator with the resolved settings, called per image, no tracking.
- ``SlidingWindowStack()``: xaitk-saliency's constructor defaults (window 50x50, stride 20x20; fill left unset).
- ``RISEStack(1000, 8, 0.5)``: the RISE settings of xaitk-saliency's examples (RISEStack has no defaults).
- ``old default (2x2, stride 1)``: what the config shipped before ``auto`` (64x64 only: at 224x224 it is 49,729
  occlusions per image).

Seconds are per image (median over the images; the stage: its total over the images); deletion and insertion AUCs
(the project's metrics, default settings, mean-colour substrate) are medians over the images with the random-order
baseline beside them; ``beats random`` counts the images whose map beats it on both.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "models"))

from _common import compose, machine, quiet, sqlite_uri, table, temp_root  # noqa: E402


def train_cnn(shape: tuple[int, int], seed: int = 0, n: int = 160, epochs: int = 6):
    """SmallCNN with 2 outputs trained on ``n`` blob photos of ``shape`` (inputs in [0, 1], no normalisation)."""
    import model_zoo
    import numpy as np
    import torch

    torch.manual_seed(seed)
    images, labels = model_zoo.blob_photos(n, shape, seed=seed + 100, radius=disc_radius(shape))
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    y = torch.from_numpy(labels.astype(np.int64))
    model = model_zoo.SmallCNN(2)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    torch.set_num_threads(1)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(32):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == y).float().mean())
    return model, accuracy


def disc_radius(shape: tuple[int, int]) -> int:
    """The disc covers about 5% of every photo, whatever its shape (1/8 of the side of a square of its area)."""
    return max(2, round(float(np.sqrt(shape[0] * shape[1])) / 8))


def metrics_of(model, images, maps_per_image, settings) -> list[dict[str, float]]:
    from xaitk_exp.metrics.image import evaluate_map
    from xaitk_exp.models.blackbox import blackbox_for

    bb = blackbox_for(model, 64)
    out = []
    for k, (image, maps) in enumerate(zip(images, maps_per_image, strict=True)):
        cls = int(np.argmax(bb.predict(image[None])[0]))
        out.append(evaluate_map(bb.predict, image, maps[cls], cls, settings, (settings.seed, k)).values)
    return out


def summarise(name: str, seconds: list[float], values: list[dict[str, float]], masks: int | str) -> list:
    med = {k: statistics.median(v[k] for v in values) for k in
           ("Deletion_AUC", "Deletion_AUC_random", "Insertion_AUC", "Insertion_AUC_random")}
    beats = sum(v["Deletion_AUC"] < v["Deletion_AUC_random"] and v["Insertion_AUC"] > v["Insertion_AUC_random"]
                for v in values)
    return [name, masks, statistics.median(seconds), f"{med['Deletion_AUC']:.3f} ({med['Deletion_AUC_random']:.3f})",
            f"{med['Insertion_AUC']:.3f} ({med['Insertion_AUC_random']:.3f})", f"{beats}/{len(values)}"]


def bench_size(shape: tuple[int, int], n_images: int, root: Path) -> tuple[list[list], float]:
    import model_zoo
    from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.rise import RISEStack
    from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.slidingwindow import SlidingWindowStack

    from xaitk_exp.app import run
    from xaitk_exp.models.blackbox import blackbox_for
    from xaitk_exp.settings.metrics import settings_from_config
    from xaitk_exp.settings.saliency import resolve_auto
    from xaitk_exp.settings.nodes import to_dict
    from xaitk_exp.stages.saliency.algorithm import Algorithm, class_maps

    folder = root / f"{shape[0]}x{shape[1]}"
    folder.mkdir()
    cnn, train_accuracy = train_cnn(shape)
    net = model_zoo.save_torchscript(cnn, folder / "blobnet.pt")
    images, labels = model_zoo.blob_photos(n_images, shape, seed=7, radius=disc_radius(shape))
    photos = model_zoo.write_folder(folder / "photos", images, labels)  # folders 0 (red disc), 1 (blue)
    common = ["model=torch", f"model.path={net}", "dataset=image_folder", f"dataset.path={photos}",
              "dataset.grayscale=false", f"dataset.shape=[{shape[0]},{shape[1]}]", "logging=low",
              f"evaluation.num_images={n_images}", f"query.max_results={n_images}", "chunk_size=64"]
    uri = sqlite_uri(folder)
    run(compose(uri, "stage=train", *common), [], folder)  # records the model
    ctx = run(compose(uri, "stage=evaluation", *common), [], folder)
    model, split = ctx.model, ctx.split
    photos_arr = split.test_images[:n_images]
    settings = settings_from_config(ctx.cfg.metrics)
    rows = []

    # the stage, as shipped: sliding_window auto + metrics, every image its run
    from xaitk_exp.stages import Context
    from xaitk_exp.stages.saliency.stage import run_saliency
    from xaitk_exp.tracking.factory import make_tracker
    from xaitk_exp.tracking.stores import resolve_tracking

    cfg = compose(uri, "stage=saliency", *common)
    turi, art = resolve_tracking(cfg)
    sctx = Context(cfg=cfg, tracker=make_tracker("low", turi, art), output_dir=folder)
    t0 = time.perf_counter()
    ids = run_saliency(sctx)
    stage_s = (time.perf_counter() - t0) / len(ids)
    from mlflow import MlflowClient

    client = MlflowClient(turi)
    runs = [client.get_run(r) for r in ids]
    params = runs[0].data.params
    resolved = resolve_auto(to_dict(cfg.saliency), tuple(split.image_shape))
    masks = _positions(shape, resolved["window_size"], resolved["stride"])
    rows.append(summarise(f"xaitk-exp default (stage) w{params['window_size']} s{params['stride']}", [stage_s],
                          [r.data.metrics for r in runs], masks))

    bb = blackbox_for(model, 64)
    variants = {
        "xaitk-exp default (maps only)": (Algorithm(cfg.saliency, split.image_shape), masks),
        "SlidingWindowStack() w(50,50) s(20,20)": (SlidingWindowStack(threads=0),
                                                   _positions(shape, (50, 50), (20, 20))),
        "RISEStack(n=1000, s=8, p1=0.5)": (RISEStack(1000, 8, 0.5, seed=0, threads=0), 1000),
    }
    if shape == (64, 64):
        old = {**to_dict(cfg.saliency), "window_size": [2, 2], "stride": [1, 1], "fill": 0}
        variants["old default w(2,2) s(1,1) fill 0"] = (Algorithm(old, split.image_shape), _positions(shape, (2, 2),
                                                                                                     (1, 1)))
    for name, (gen, n_masks) in variants.items():
        seconds, maps = [], []
        for image in photos_arr:
            t0 = time.perf_counter()
            m = gen.compute(image, bb) if isinstance(gen, Algorithm) else gen(image, bb)
            seconds.append(time.perf_counter() - t0)
            maps.append(class_maps(np.asarray(m)))
        rows.append(summarise(name, seconds, metrics_of(model, photos_arr, maps, settings), n_masks))
    return rows, train_accuracy


def _positions(shape, window, stride) -> int:
    return int(np.prod([(n - k) // s + 1 for n, k, s in zip(shape, window, stride, strict=True)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--sizes", default="64x64,224x224,96x384")
    args = parser.parse_args()
    quiet()
    root = temp_root("photos")
    print(f"{machine()}; {args.images} photos per size; SmallCNN (TorchScript, 1 thread), chunk_size=64")
    headers = ["variant", "masks", "s / image", "deletion (random)", "insertion (random)", "beats random"]
    for size in args.sizes.split(","):
        shape = tuple(int(v) for v in size.split("x"))
        rows, acc = bench_size(shape, args.images, root)
        print(f"\n{size} (the CNN's train accuracy {acc:.2f})")
        print(table(headers, rows))


if __name__ == "__main__":
    import numpy as np

    main()

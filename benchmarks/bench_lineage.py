"""Benchmark: what each lineage addition costs per run, side by side, against the per-image evaluation floor.

    python benchmarks/bench_lineage.py                  # 200 small runs, 30 saliency runs, 4 models; about 4 min
    python benchmarks/bench_lineage.py --runs 100 --saliency 15 --models 3 --repeats 2

Each variant writes to its own fresh copy of one store that holds a trained MLP (see ``_common.TrainedStore``),
in rotating order, ``--repeats`` times; the table gives medians per run. Pairs:

- per-image evaluation run: ``floor`` (``create_run`` with the tags, one ``log_batch``, ``set_terminated``: the
  least MLflow allows) against the same plus a dataset input (``log_inputs``), and plus a link to the logged model
  (``log_inputs`` with the model, the metrics carrying its id). The stage adds neither to per-image runs.
- saliency run (the stage's ``record()`` at ``logging=low`` and ``mid``: tags, params, metrics, the image's
  folder of arrays and figure) against the same plus ``log_image`` of its figure.
- train run: the model folder alone (before) against the folder plus the MLflow 3 logged model (``low``: client
  calls; ``high``: ``mlflow.sklearn.log_model``), then ``register_model`` (a new version + an alias).
- train or evaluation summary run: the dataset input (``log_dataset``, schema and shapes from the split).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import TrainedStore, interleave, machine, median, quiet, sqlite_uri, table, temp_root  # noqa: E402

TAGS = {"Dataset": "digits", "Datasplit": "test", "Run_type": "image", "Model": "MLPClassifier"}


def per_image(uri: str, n: int, extra: str, dataset=None, model_id: str | None = None) -> float:
    """``n`` per-image runs at the API floor, plus ``extra`` (``dataset``, ``model`` or nothing); seconds."""
    from mlflow import MlflowClient
    from mlflow.entities import LoggedModelInput, Metric, RunTag

    client = MlflowClient(uri)
    exp = client.create_experiment(f"bench-{extra}-{time.time_ns()}")
    entity = dataset.to_input("test") if dataset is not None else None
    t0 = time.perf_counter()
    for k in range(n):
        run = client.create_run(exp, run_name=f"ImageID-{k}_conf", tags={**TAGS, "Image_id": str(k)})
        rid, now = run.info.run_id, int(time.time() * 1000)
        linked = model_id if extra == "model" else None
        metrics = [Metric(f"Class_{c}_conf", 0.1 * c, now, 0, model_id=linked) for c in range(10)]
        if extra == "dataset":
            client.log_inputs(rid, datasets=[entity])
        elif extra == "model":
            client.log_inputs(rid, models=[LoggedModelInput(model_id)])
        client.log_batch(rid, metrics=metrics, tags=[RunTag("Predicted_class", "4")], synchronous=True)
        client.set_terminated(rid)
    return time.perf_counter() - t0


def saliency_folder(store: TrainedStore, root: Path) -> Path:
    """One image's folder as the saliency stage leaves it: maps, image, the maps' figure."""
    import numpy as np

    from xaitk_exp.viz.figures import saliency_figure

    folder = root / "image-folder"
    (folder / "saliency_map_np_arrays").mkdir(parents=True)
    image = store.split.test_images[0]
    maps = np.random.default_rng(0).uniform(-1, 1, (10, *image.shape))
    np.save(folder / "saliency_map_np_arrays" / "saliency_maps.npy", maps)
    np.save(folder / "saliency_map_np_arrays" / "image.npy", image)
    saliency_figure(image, maps, [str(c) for c in range(10)], 4, folder / "Image_saliency_maps.png", "bench")
    return folder


def saliency_runs(store: TrainedStore, folder: Path, level: str, n: int, image_folder: Path, with_image: bool) -> float:
    """``n`` saliency runs recorded as ``record()`` does (one batch, one folder upload), plus ``log_image``."""
    ctx = store.context(folder, level)
    tracker = ctx.tracker
    exp = tracker.experiment(f"bench saliency {level} {with_image}")
    params = {"window_size": "(2, 2)", "stride": "(1, 1)", "algorithm": "sliding_window"}
    t0 = time.perf_counter()
    for k in range(n):
        with tracker.run(exp, f"ImageID-{k}_saliency_maps", tags={**TAGS, "Image_id": k}) as run_id:
            tracker.log(run_id, params=params, metrics={"Predicted_class_conf": 0.9, "Deletion_AUC": 0.2})
            tracker.log_artifacts(run_id, str(image_folder))
            if with_image:
                tracker.log_image(run_id, image_folder / "Image_saliency_maps.png", "saliency/sliding_window")
    return time.perf_counter() - t0


def models(store: TrainedStore, folder: Path, level: str, n: int, what: str) -> float:
    """``n`` train runs' model logging: ``folder`` (sklearn-model/ only, as before), ``logged`` (the folder and
    the logged model) or ``register`` (logged, then a new registered version with an alias, timed alone)."""
    from xaitk_exp.schema import MODEL_DIR
    from xaitk_exp.tracking.model_io import save_sklearn_model

    ctx = store.context(folder, level)
    tracker = ctx.tracker
    exp = tracker.experiment(f"bench models {level} {what}")
    X = store.split.train_images.reshape(len(store.split.train_images), -1)[:2]
    spent = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        saved = str(save_sklearn_model(store.model, Path(tmp, MODEL_DIR), X))
        for k in range(n):
            with tracker.run(exp, "train_info") as run_id:
                tracker.log(run_id, params={"alpha": 1e-4}, metrics={"Train accuracy": 0.97})
                t0 = time.perf_counter()
                if what == "folder":
                    tracker._log_artifacts(run_id, saved, MODEL_DIR)
                    spent += time.perf_counter() - t0
                    continue
                model_id = tracker._log_model(run_id, store.model, X, saved)
                if what == "logged":
                    spent += time.perf_counter() - t0
                    continue
                t0 = time.perf_counter()
                tracker.register_model(model_id, run_id, "bench-mlp", "champion")
                spent += time.perf_counter() - t0
    return spent


def datasets(store: TrainedStore, folder: Path, level: str, n: int) -> float:
    """``n`` train runs' dataset input (``log_dataset`` with the train split), timed alone."""
    from xaitk_exp.tracking.lineage import DatasetRecord

    ctx = store.context(folder, level)
    tracker = ctx.tracker
    exp = tracker.experiment(f"bench datasets {level}")
    split = store.split
    spent = 0.0
    for _ in range(n):
        with tracker.run(exp, "train_info") as run_id:
            t0 = time.perf_counter()
            record = DatasetRecord("digits", split.fingerprint(), "http", "https://example.org/digits",
                                   split.train_images, split.train_labels)
            tracker.log_dataset(run_id, record, "train")
            spent += time.perf_counter() - t0
    return spent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=200, help="per-image runs per variant")
    ap.add_argument("--saliency", type=int, default=30, help="saliency runs per variant")
    ap.add_argument("--models", type=int, default=4, help="train runs per model variant")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    quiet()
    root = temp_root("lineage")
    print(f"building the template store in {root} ...", file=sys.stderr)
    store = TrainedStore(root)
    from xaitk_exp.stages.lineage import split_dataset

    ctx = store.context(store.folder, "low")
    dataset = split_dataset(ctx, "test")
    model_id = ctx.tracker.logged_model_of(store.train_run_id)
    image_folder = saliency_folder(store, root)
    n, ns, nm = args.runs, args.saliency, args.models

    def fresh(label: str, fn):
        return lambda: fn(store.fresh(label))

    variants = {
        "per-image: floor": fresh("floor", lambda f: per_image(sqlite_uri(f), n, "none")),
        "per-image: floor + dataset input": fresh("ds", lambda f: per_image(sqlite_uri(f), n, "dataset", dataset)),
        "per-image: floor + model link": fresh("ml", lambda f: per_image(sqlite_uri(f), n, "model", None, model_id)),
    }
    for level in ("low", "mid"):
        variants[f"saliency run ({level})"] = fresh(
            f"sal-{level}", lambda f, lv=level: saliency_runs(store, f, lv, ns, image_folder, False))
        variants[f"saliency run ({level}) + log_image"] = fresh(
            f"img-{level}", lambda f, lv=level: saliency_runs(store, f, lv, ns, image_folder, True))
    variants["train: model folder only (before)"] = fresh("mf", lambda f: models(store, f, "low", nm, "folder"))
    for level in ("low", "mid", "high"):
        variants[f"train: folder + logged model ({level})"] = fresh(
            f"lm-{level}", lambda f, lv=level: models(store, f, lv, nm, "logged"))
    variants["train: register_model + alias (low)"] = fresh("reg", lambda f: models(store, f, "low", nm, "register"))
    for level in ("low", "mid"):
        variants[f"train/summary: dataset input ({level})"] = fresh(
            f"dsi-{level}", lambda f, lv=level: datasets(store, f, lv, nm))
    times = interleave(variants, args.repeats)

    count = {k: n if k.startswith("per-image") else ns if k.startswith("saliency") else nm for k in variants}
    ms = {k: 1000 * median(v) / count[k] for k, v in times.items()}
    floor = ms["per-image: floor"]
    base = {
        "per-image: floor + dataset input": "per-image: floor",
        "per-image: floor + model link": "per-image: floor",
        "saliency run (low) + log_image": "saliency run (low)",
        "saliency run (mid) + log_image": "saliency run (mid)",
        "train: folder + logged model (low)": "train: model folder only (before)",
        "train: folder + logged model (mid)": "train: model folder only (before)",
        "train: folder + logged model (high)": "train: model folder only (before)",
    }
    rows = []
    for k in variants:
        added = ms[k] - ms[base[k]] if k in base else (ms[k] if "register" in k or "dataset input (" in k else None)
        rows.append([
            k, count[k], ms[k], f"{ms[k] / ms[base[k]]:.2f}x" if k in base else "-",
            f"{added:.1f}" if added is not None else "-", f"{added / floor:.2f}" if added is not None else "-",
        ])
    print(f"\n## Lineage additions per run: medians of {args.repeats} repeats, SQLite ({machine()})\n")
    print(table(["variant", "runs", "ms / run", "vs its baseline", "added ms / run", "added / per-image floor"],
                rows))
    print(f"\nper-image evaluation floor: {floor:.1f} ms / run; stores kept in {root}")


if __name__ == "__main__":
    main()

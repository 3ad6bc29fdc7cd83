"""Benchmark: recording an ONNX / PyTorch model in a train run, and loading it back, as an MLflow flavour vs the
plain file recorded before.

    python benchmarks/bench_model_records.py                 # 2 models x 3 formats, 3 repeats (~1 min here)
    python benchmarks/bench_model_records.py --repeats 5 --level low

Models: ``tests/models/model_zoo.SmallCNN`` (32x32 colour input, ~21 KB of weights) and a wide linear classifier
(128x128 colour input, 100 classes, ~20 MB of weights). Each is an ONNX file, a TorchScript file and an ``nn.Module``
class with its state_dict (``model_zoo.SmallCNN`` / a ``Linear``), seeded random weights.

- record, file: ``log_artifact`` of the file (what the train stage did before flavours);
  record, flavour: :func:`xaitk_exp.models.recorded.save` + ``log_model_folder`` (run folder and logged model).
- load, file: the model built from its local file (what evaluation did: the config's file, no download);
  load, flavour: ``model/`` downloaded from the store, then :func:`xaitk_exp.models.recorded.load`.
- size: bytes under the run's ``model/`` folder; the flavour also stores a copy as the logged model (``+ logged``).
Every time includes building the ``ImageModel`` (session or module) and one probe image through it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "models"))

from _common import machine, median, quiet, table, temp_root  # noqa: E402


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def make_models(root: Path) -> dict[str, tuple[int, dict[str, dict]]]:
    """{model: (image size, {format: model node})}, the files written under ``root``."""
    import model_zoo
    import numpy as np
    import torch

    torch.manual_seed(0)
    out: dict[str, tuple[int, dict[str, dict]]] = {}
    cnn = model_zoo.SmallCNN().eval()
    weights = {k: v.detach().numpy() for k, v in cnn.state_dict().items()}
    out["small CNN"] = (32, {
        "onnx": {"source": "onnx", "path": str(model_zoo.cnn_onnx(weights, root / "cnn.onnx"))},
        "torchscript": {"source": "torch", "path": str(model_zoo.save_torchscript(cnn, root / "cnn.pt"))},
        "torch class": {"source": "torch", "_target_": "model_zoo.SmallCNN",
                        "weights": str(model_zoo.save_state_dict(cnn, root / "cnn_state.pt"))},
    })
    size, n = 128, 100
    onnx_path = model_zoo.linear_onnx(root / "wide.onnx", n, size)
    import onnx
    from onnx import numpy_helper

    init = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(onnx_path)).graph.initializer}
    wide = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * size * size, n)).eval()
    with torch.no_grad():
        wide[1].weight.copy_(torch.from_numpy(np.ascontiguousarray(init["W"].T)))
        wide[1].bias.copy_(torch.from_numpy(init["b"]))
    torch.save(wide.state_dict(), root / "wide_state.pt")
    out["wide linear"] = (size, {
        "onnx": {"source": "onnx", "path": str(onnx_path)},
        "torchscript": {"source": "torch", "path": str(model_zoo.save_torchscript(wide, root / "wide.pt"))},
        "torch class": {"source": "torch", "_target_": "bench_model_records.wide_linear",
                        "weights": str(root / "wide_state.pt")},
    })
    return out


def wide_linear() -> object:
    """The wide linear classifier as an ``nn.Module`` class target (``_target_`` of the torch class variant)."""
    import torch

    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 128 * 128, 100))


def one(tracker, exp: str, node: dict, size: int, work: Path, flavoured: bool) -> tuple[float, float, int, int]:
    """(record seconds, load seconds, run folder bytes, logged model bytes) of one model, one way."""
    from xaitk_exp.models import recorded
    from xaitk_exp.models.sources import build_image_model

    allowed = ("model_zoo.", "bench_model_records.")
    shape = (size, size, 3)
    model = build_image_model({**node, "name": "m"}, allowed)
    model.check_images(shape)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    t0 = time.perf_counter()
    with tracker.run(exp, "train_info") as run_id:
        if flavoured:
            fmt = recorded.save(model, work / "model", shape)
            assert recorded.flavoured(fmt), fmt
            tracker.log_model_folder(run_id, str(work / "model"), "model", "m")
        else:
            tracker.log_artifact(run_id, model.file, "model")
    t_record = time.perf_counter() - t0
    run = tracker.client.get_run(run_id)
    local = Path(run.info.artifact_uri.removeprefix("file://"), "model")
    logged = 0
    if flavoured:
        (m,) = tracker.client.search_logged_models([exp], filter_string=f"source_run_id = '{run_id}'")
        logged = _folder_bytes(Path(m.artifact_location.removeprefix("file://")))
    t0 = time.perf_counter()
    if flavoured:
        dst = work / "download"
        tracker.download(run_id, "model", str(dst))
        back = recorded.load(dst / "model", node, model.sha256, "m", allowed)
    else:
        back = build_image_model({**node, "name": "m"}, allowed)
    back.check_images(shape)
    t_load = time.perf_counter() - t0
    return t_record, t_load, _folder_bytes(local), logged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--level", default="mid", choices=["high", "mid", "low"])
    args = parser.parse_args()
    quiet()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import torch

    torch.set_num_threads(1)
    from xaitk_exp.tracking.factory import make_tracker

    root = temp_root("records")
    sys.modules.setdefault("bench_model_records", sys.modules[__name__])
    models = make_models(root)
    tracker = make_tracker(args.level, f"sqlite:///{root / 'mlflow.db'}", str(root / "artifacts"))
    exp = tracker.experiment("bench - Train")
    rows = []
    for name, (size, formats) in models.items():
        for fmt, node in formats.items():
            for flavoured in (False, True):
                results = [one(tracker, exp, node, size, root / "work", flavoured) for _ in range(args.repeats)]
                rec, load = median([r[0] for r in results]), median([r[1] for r in results])
                run_kb, logged_kb = results[-1][2] / 1024, results[-1][3] / 1024
                rows.append([name, fmt, "flavour" if flavoured else "file", rec * 1000, load * 1000, run_kb,
                             logged_kb if flavoured else "-"])
    print(f"{machine()}; logging.level={args.level}; median of {args.repeats}")
    print(table(["model", "format", "recorded as", "record ms", "load ms", "model/ KB", "+ logged KB"], rows))
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

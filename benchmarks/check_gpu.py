"""Check that ``model.device=cuda`` really runs the model on the GPU, for ONNX Runtime and PyTorch.

    python benchmarks/check_gpu.py                 # 224x224, 512 images per runtime and device
    python benchmarks/check_gpu.py --size 64 --images 2048

For each runtime (``model=onnx``, ``model=torch``) the script loads the same small CNN (``tests/models/model_zoo``,
seeded weights, written as ONNX and TorchScript) through the loader the stages use, once with ``device=cpu`` and once
with ``device=cuda``, and then asks the runtime itself where the model is:

- ONNX Runtime: the providers the *session* got (``InferenceSession.get_providers()``), not the ones that were
  asked for: an ``onnxruntime-gpu`` without its CUDA libraries silently falls back to the CPU;
- PyTorch: the device of the module's parameters (TorchScript modules included).

It prints one row per runtime and device: where the model ran, images per second over ``--images`` images scored
``--chunk`` at a time, and the largest difference from the CPU's scores. It exits 1 when ``device=cuda`` was
accepted but the model did not run on a CUDA device, and 0 otherwise; on a machine without a GPU the ``cuda`` rows
show the one-line error a user gets for ``model.device=cuda``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "models"))

from _common import table  # noqa: E402


def make_files(root: Path, size: int) -> dict[str, str]:
    import model_zoo
    import torch

    torch.manual_seed(0)
    cnn = model_zoo.SmallCNN().eval()
    weights = {k: v.detach().numpy() for k, v in cnn.state_dict().items()}
    return {
        "onnx": str(model_zoo.cnn_onnx(weights, root / "cnn.onnx", size=size)),
        "torch": str(model_zoo.save_torchscript(cnn, root / "cnn.pt")),
    }


def main() -> int:
    import numpy as np

    from xaitk_exp.errors import ConfigError
    from xaitk_exp.models.sources import build_image_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--chunk", type=int, default=64)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    images = rng.random((args.images, args.size, args.size, 3), dtype=np.float32)
    rows, failed = [], False
    with tempfile.TemporaryDirectory() as tmp:
        files = make_files(Path(tmp), args.size)
        for source, path in files.items():
            reference = None
            for device in ("cpu", "cuda"):
                node = {"source": source, "path": path, "device": device, "outputs": "logits"}
                try:
                    model = build_image_model(node)
                    ran_on = model.runtime_device()
                except ConfigError as exc:
                    rows.append([source, device, "refused", "-", "-", str(exc)])
                    continue
                start = time.perf_counter()
                scores = np.concatenate(
                    [model.scores(images[i : i + args.chunk]) for i in range(0, len(images), args.chunk)]
                )
                seconds = time.perf_counter() - start
                if reference is None:
                    reference = scores
                diff = float(np.max(np.abs(scores - reference)))
                on_gpu = "cuda" in ran_on.lower()
                note = ""
                if device == "cuda" and not on_gpu:
                    failed, note = True, "device=cuda accepted but the model ran on the CPU"
                rows.append([source, device, ran_on, f"{len(images) / seconds:.1f}", f"{diff:.2e}", note])
    print(table(["runtime", "model.device", "ran on", "images / s", "max |score - cpu|", "note"], rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

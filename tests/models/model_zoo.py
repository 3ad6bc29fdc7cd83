"""Small real models for the model-source tests, made here without downloads.

A small CNN is trained for a few seconds on scikit-learn's digits, upsampled to colour ``[S, S, 3]`` images and
tinted per image; it is saved as TorchScript, as a ``state_dict`` for :class:`SmallCNN`, and as ONNX (written
node by node with ``onnx.helper`` from the same weights, so no exporter is involved); :func:`maite_cnn` wraps it as
a MAITE image-classification model. :func:`write_folder` writes the images as PNG files in class sub-folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SIZE = 32
CLASSES = [str(i) for i in range(10)]


def colour_digits(n: int | None = None, size: int = SIZE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``[N, size, size, 3]`` float32 images in [0, 1] (digits upsampled, tinted by a random colour) and labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images, labels = bunch.images / 16.0, bunch.target
    if n is not None:
        images, labels = images[:n], labels[:n]
    big = np.kron(images, np.ones((1, size // 8, size // 8)))  # nearest-neighbour upsampling
    tint = np.random.default_rng(seed).uniform(0.4, 1.0, size=(len(big), 1, 1, 3))
    rgb = big[..., None] * tint + 0.05
    return np.clip(rgb, 0, 1).astype(np.float32), labels.astype(int)


def small_cnn_class() -> Any:
    import torch
    from torch import nn

    class SmallCNN(nn.Module):
        """conv(3->8, 3x3, stride 2) relu maxpool2 conv(8->16, 3x3) relu maxpool2 adaptive-avg-pool(2x2)
        linear(64->n_classes).

        Input ``[N, 3, H, W]`` with H, W multiples of 16; output ``[N, n_classes]`` logits."""

        def __init__(self, n_classes: int = 10) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
            self.fc = nn.Linear(64, n_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
            x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
            x = nn.functional.adaptive_avg_pool2d(x, 2)
            return self.fc(torch.flatten(x, 1))

    return SmallCNN


def SmallCNN(n_classes: int = 10) -> Any:  # noqa: N802 - a class for config's _target_
    """The CNN (an ``nn.Module``), for ``model._target_=model_zoo.SmallCNN``."""
    return small_cnn_class()(n_classes)


MEAN = (0.2, 0.2, 0.2)
STD = (0.3, 0.3, 0.3)


def train_cnn(epochs: int = 3, size: int = SIZE, seed: int = 0) -> Any:
    """The CNN trained for ``epochs`` passes over every colour digit (inputs normalised by :data:`MEAN`,
    :data:`STD`), seeded: the same weights on every run (a few seconds on one core); in eval mode."""
    import torch

    torch.manual_seed(seed)
    images, labels = colour_digits(size=size, seed=seed)
    x = torch.from_numpy(((images - np.float32(MEAN)) / np.float32(STD)).transpose(0, 3, 1, 2).copy())
    y = torch.from_numpy(labels)
    model = SmallCNN()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    gen = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a busy shared machine one thread is several times faster than spinning two
    try:
        for _ in range(epochs):
            for idx in torch.randperm(len(x), generator=gen).split(64):
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def save_torchscript(model: Any, path: Path) -> Path:
    import warnings

    import torch

    with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; users still hold such files
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=DeprecationWarning)
        torch.jit.save(torch.jit.script(model), str(path))
    return path


def save_state_dict(model: Any, path: Path) -> Path:
    import torch

    torch.save(model.state_dict(), str(path))
    return path


def cnn_onnx(weights: dict[str, np.ndarray], path: Path, size: int = SIZE, names: list[str] | None = None) -> Path:
    """The CNN as an ONNX graph built with ``onnx.helper`` from its ``state_dict`` arrays, for ``[N, 3, size,
    size]`` inputs (the adaptive pooling becomes a fixed ``size/16`` average pool); ``names``: class names in the
    model's metadata."""
    import json

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.asarray(v, dtype=np.float32), name=k.replace(".", "_"))
             for k, v in weights.items()]
    k = size // 16
    nodes = [
        helper.make_node("Conv", ["x", "conv1_weight", "conv1_bias"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "conv2_weight", "conv2_bias"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("AveragePool", ["p2"], ["a"], kernel_shape=[k, k], strides=[k, k]),
        helper.make_node("Flatten", ["a"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc_weight", "fc_bias"], ["logits"], transB=1),
    ]
    n_classes = int(np.asarray(weights["fc.bias"]).shape[0])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, size])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", n_classes])
    graph = helper.make_graph(nodes, "small_cnn", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    if names:
        helper.set_model_props(model, {"class_names": json.dumps(names)})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def linear_onnx(path: Path, n_classes: int, size: int, seed: int = 0) -> Path:
    """A random linear classifier on ``[N, 3, size, size]`` images (no torch): ``n_classes`` logits."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    d = 3 * size * size
    W = rng.normal(0, 1.0 / np.sqrt(d), size=(d, n_classes)).astype(np.float32) * 20
    b = rng.normal(0, 0.1, size=n_classes).astype(np.float32)
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b"),
             numpy_helper.from_array(np.array([-1, d], dtype=np.int64), "shape")]
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "W", "b"], ["logits"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, size])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", n_classes])
    model = helper.make_model(helper.make_graph(nodes, "linear", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


class MaiteCNN:
    """The CNN behind MAITE's image-classification ``Model`` protocol: called on a sequence of float32
    ``(C, H, W)`` arrays, returns one ``(10,)`` logits array per image; ``metadata`` holds ``id`` and
    ``index2label``."""

    def __init__(self, script_path: str) -> None:
        import warnings

        import torch

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=DeprecationWarning)
            self.module = torch.jit.load(script_path, map_location="cpu").eval()
        self.metadata = {"id": f"small-cnn:{Path(script_path).name}",
                         "index2label": {i: f"digit-{i}" for i in range(10)}}
        self.calls = 0

    def __call__(self, batch: Any) -> list[np.ndarray]:
        import torch

        self.calls += 1
        x = torch.from_numpy(np.stack([np.asarray(a, dtype=np.float32) for a in batch]))
        with torch.inference_mode():
            return list(self.module(x).numpy())


def maite_cnn(script_path: str) -> MaiteCNN:
    """The factory ``model=maite model._target_=model_zoo.maite_cnn model.args.script_path=...`` names."""
    return MaiteCNN(script_path)


def write_folder(root: Path, images: np.ndarray, labels: np.ndarray | None, names: list[str] | None = None) -> Path:
    """``images`` ``[N, H, W, 3]`` in [0, 1] as PNG files: ``root/<class name>/<i>.png``, or ``root/<i>.png`` when
    ``labels`` is None."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        folder = root if labels is None else root / (names[labels[i]] if names else str(labels[i]))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(im * 255).astype(np.uint8)).save(folder / f"{i:04d}.png")
    return root


class MaiteDigits:
    """Colour digits behind MAITE's image-classification ``Dataset`` protocol: ``ds[i]`` is a uint8 ``(3, H, W)``
    image, a one-hot ``(10,)`` target and ``{"id": i}``; ``metadata`` names the classes."""

    def __init__(self, n: int = 40, size: int = SIZE, seed: int = 2) -> None:
        images, self.labels = colour_digits(n=n, size=size, seed=seed)
        self.images = np.round(images * 255).astype(np.uint8).transpose(0, 3, 1, 2)
        self.metadata = {"id": "maite-digits", "index2label": {i: str(i) for i in range(10)}}

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, dict]:
        return self.images[i], np.eye(10, dtype=np.float32)[self.labels[i]], {"id": i}


#: the pid of the only process a :class:`DyingMaiteCNN` answers in (set by the test that runs the stage)
HOME_PID = "XAITK_EXP_TEST_HOME_PID"
SLOW_HOME = "XAITK_EXP_TEST_SLOW_HOME"


class DyingMaiteCNN(MaiteCNN):
    """:class:`MaiteCNN` that ends any other process than ``$XAITK_EXP_TEST_HOME_PID`` it is called in with
    ``os._exit(9)``, as a crash or the OOM killer would: every ``n_jobs`` worker dies on its first image. At home,
    while ``$XAITK_EXP_TEST_SLOW_HOME`` is set, each call takes a second more."""

    def __call__(self, batch: Any) -> list[np.ndarray]:
        import os
        import time

        if os.environ.get(HOME_PID) != str(os.getpid()):
            os._exit(9)
        if os.environ.get(SLOW_HOME):
            time.sleep(1.0)  # at home, slowly: the workers start and take images before this process is done
        return super().__call__(batch)


def dying_maite_cnn(script_path: str) -> DyingMaiteCNN:
    return DyingMaiteCNN(script_path)


def blob_photos(
    n: int, shape: tuple[int, int], seed: int = 0, radius: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``[n, H, W, 3]`` colour "photos" in [0, 1] and labels 0/1: a smooth random-colour background with a disc at a
    random place, red-ish for class 0 and blue-ish for class 1 (the only evidence of the class: small and local),
    its radius ``radius`` (default: about 1/8 of the short side)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    images, labels = [], []
    for i in range(n):
        label = i % 2
        coarse = rng.uniform(0.25, 0.75, size=(4, 4, 3))  # low-frequency background: upsampled 4x4 colours
        rows = np.minimum(yy * 4 // h, 3)
        cols = np.minimum(xx * 4 // w, 3)
        image = coarse[rows, cols] + rng.normal(0, 0.04, size=(h, w, 3))
        r = radius or max(2, min(h, w) // 8)
        cy, cx = rng.integers(r, h - r), rng.integers(r, w - r)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        colour = np.array([0.95, 0.15, 0.1]) if label == 0 else np.array([0.1, 0.2, 0.95])
        image[disc] = colour + rng.normal(0, 0.03, size=(int(disc.sum()), 3))
        images.append(np.clip(image, 0, 1))
        labels.append(label)
    return np.asarray(images, dtype=np.float32), np.asarray(labels)

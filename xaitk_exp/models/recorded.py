"""ONNX and PyTorch models as MLflow models, in MLflow's own flavours: what the train stage records in
``<Model> - Train`` and what evaluation and saliency load back.

- ``model=onnx``: flavour ``onnx`` (``mlflow.onnx``); ONNX Runtime loads the stored ``model.onnx`` itself.
- ``model=torch``: flavour ``pytorch``. A TorchScript module is stored as TorchScript (``data/model.pth``) and loaded
  with ``torch.jit.load``, never ``torch.load``; an ``nn.Module`` (class + state_dict, or a ``.pt2`` program) is
  exported with ``torch.export`` (``data/model.pt2``, MLflow's pickle-free format) and loaded by MLflow with pickle
  refused, so loading it needs neither the class nor the allow-list.
- ``model=maite``: any Python object, no flavour: the record stays ``model_info.json`` and the config's factory.

Formats (tag ``Model_format``): :data:`FLAVOURED` ones load from the store; ``file`` (runs recorded before flavours,
or a module ``torch.export`` refused) and ``none`` (MAITE) load from the config as before.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xaitk_exp.errors import ConfigError, UnsafeConfigError
from xaitk_exp.models.image_model import SHARED_KEYS, ImageModel, file_sha256
from xaitk_exp.models.onnx import OnnxModel
from xaitk_exp.models.torch import TorchModel

ONNX = "mlflow.onnx"
TORCHSCRIPT = "mlflow.pytorch/torchscript"
PT2 = "mlflow.pytorch/pt2"
FILE = "file"
NONE = "none"
FLAVOURED = (ONNX, TORCHSCRIPT, PT2)

#: ONNX files above this size keep their tensors in an external data file (protobuf's 2 GB limit)
ONNX_EXTERNAL_DATA_BYTES = 1 << 30


def source_digest(node: Mapping[str, Any]) -> str | None:
    """The SHA-256 of the file a ``model`` node names (``model.weights`` for a torch class, else ``model.path``),
    without loading it; None for MAITE factories and missing files (building the model then says why)."""
    source = node.get("source")
    if source not in ("onnx", "torch"):
        return None
    key = "weights" if source == "torch" and node.get("_target_") else "path"
    value = node.get(key)
    if not value or value == "???":
        return None
    path = Path(str(value)).expanduser()
    return file_sha256(path) if path.is_file() else None


# ----- saving -------------------------------------------------------------------------------------------------------
def save(model: ImageModel, folder: Path, image_shape: Sequence[int]) -> str:
    """Save a loaded, checked ``model`` as an MLflow model in ``folder`` (created); returns its format. A MAITE model
    returns :data:`NONE`; a module ``torch.export`` cannot trace returns :data:`FILE` after a one-line note."""
    if model.source == "onnx":
        _save_onnx(model, folder, image_shape)
        return ONNX
    if model.source == "torch":
        return _save_torch(model, folder, image_shape)
    return NONE


def _requirements(*packages: str) -> list[str]:
    """Pinned requirements written beside the model (MLflow's own inference imports and runs the model)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in ("mlflow", *packages, "numpy"):
        try:
            out.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            out.append(pkg)
    return out


def _signature(model: ImageModel, image_shape: Sequence[int]) -> Any:
    """Tensor signature: ``[-1, <preprocessed image shape>]`` float32 in, ``[-1, Cl]`` float32 out."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    one = model.preprocess(np.zeros((1, *image_shape), dtype=np.float32))
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *one.shape[1:]))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, int(model.n_outputs or 0)))]),
    )


def _save_onnx(model: ImageModel, folder: Path, image_shape: Sequence[int]) -> None:
    import mlflow.onnx
    import onnx

    proto = onnx.load(str(model.file))  # with its external data, if it has any
    big = Path(str(model.file)).stat().st_size > ONNX_EXTERNAL_DATA_BYTES or _has_external_data(proto)
    mlflow.onnx.save_model(
        proto,
        str(folder),
        signature=_signature(model, image_shape),
        pip_requirements=_requirements("onnx", "onnxruntime"),
        save_as_external_data=big,  # small models: one model.onnx, the same name every time
    )


def _has_external_data(proto: Any) -> bool:
    from onnx.external_data_helper import uses_external_data

    return any(uses_external_data(t) for t in proto.graph.initializer)


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """MLflow warns that pickle runs code when it stores a TorchScript module, which is not pickled: silence it."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _save_torch(model: ImageModel, folder: Path, image_shape: Sequence[int]) -> str:
    import mlflow.pytorch
    import torch

    module = model._runtime
    requirements = _requirements("torch")
    if isinstance(module, torch.jit.ScriptModule):
        with _quiet("mlflow.pytorch"):
            mlflow.pytorch.save_model(module, str(folder), serialization_format="pickle",
                                      signature=_signature(model, image_shape), pip_requirements=requirements)
        return TORCHSCRIPT
    example = model.preprocess(np.zeros((2, *image_shape), dtype=np.float32))  # batch 2: a dynamic batch axis
    try:
        mlflow.pytorch.save_model(module, str(folder), serialization_format="pt2", input_example=example,
                                  pip_requirements=requirements)
    except Exception as exc:
        import shutil

        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        print(f"[train] note: torch.export cannot trace {model.display_name} ({type(exc).__name__}: {first}); "
              "recording its file instead of an MLflow pytorch model")
        shutil.rmtree(folder, ignore_errors=True)
        return FILE
    return PT2


# ----- loading ------------------------------------------------------------------------------------------------------
def load(
    folder: Path, node: Mapping[str, Any], sha256: str, name: str, extra_allowed: Sequence[str] = ()
) -> ImageModel:
    """The :class:`ImageModel` of an MLflow model folder written by :func:`save`, with the ``model`` node's shared
    settings (outputs, device, threads, preprocess, class names), ``name`` and the recorded source ``sha256``."""
    import yaml

    mlmodel = Path(folder, "MLmodel")
    where = str(folder)
    if not mlmodel.is_file():
        raise ConfigError("train_run_id", where, "a train run whose model/ folder holds an MLflow model (no MLmodel)")
    flavours = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors") or {}
    for flavour in flavours.values():
        if isinstance(flavour, Mapping) and flavour.get("code"):  # MLflow would put that code first on sys.path
            raise UnsafeConfigError(f"the stored model in {where} ships code ({flavour['code']!r}); it is not loaded")
    shared = {k: node[k] for k in SHARED_KEYS if k in node and k != "source"}
    shared["name"] = name
    if "onnx" in flavours:
        path = Path(folder, flavours["onnx"].get("data") or "model.onnx")
        model: ImageModel = OnnxModel({**shared, "source": "onnx", "path": str(path)}, extra_allowed)
    elif "pytorch" in flavours:
        data = Path(folder, flavours["pytorch"].get("model_data") or "data")
        path = data / "model.pt2" if (data / "model.pt2").is_file() else data / "model.pth"
        model = RecordedTorchModel({**shared, "source": "torch", "path": str(path)}, extra_allowed)
    else:
        raise ConfigError("train_run_id", where, f"an MLflow onnx or pytorch model (flavours: {sorted(flavours)})")
    model.sha256 = sha256  # the identity is the user's file; the stored copy is MLflow's serialisation of it
    return model


class RecordedTorchModel(TorchModel):
    """A PyTorch model loaded back from an MLflow ``pytorch`` folder: TorchScript through ``torch.jit.load``; a
    ``torch.export`` program through ``mlflow.pytorch.load_model`` with pickled payloads refused."""

    def _load_runtime(self) -> Any:
        if self.path is None or self.path.suffix != ".pt2":
            return super()._load_runtime()
        import mlflow.pytorch

        from xaitk_exp.models.torch import import_torch

        torch = import_torch()
        if self.threads is not None and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        with _env("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false"):  # MLflow 3.17 allows it unless told otherwise
            try:
                module = mlflow.pytorch.load_model(str(self.path.parent.parent), device=self.device)
            except Exception as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                raise ConfigError(
                    "train_run_id", str(self.path), f"a pickle-free torch.export model ({first})"
                ) from exc
        return module


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old

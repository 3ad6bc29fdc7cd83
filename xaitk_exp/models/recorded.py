"""Models made elsewhere as MLflow models, in MLflow's own flavours: what the train stage records in
``<Model> - Train`` and what evaluation and saliency load back. Each source's recorder lives in its own module
(its ``SOURCE``, see :mod:`xaitk_exp.models.registry`); this module dispatches to it and holds what they share.

- ``model=onnx``: flavour ``onnx`` (``mlflow.onnx``); ONNX Runtime loads the stored ``model.onnx`` itself.
- ``model=torch``: flavour ``pytorch``. A TorchScript module is stored as TorchScript (``data/model.pth``) and loaded
  with ``torch.jit.load``, never ``torch.load``; an ``nn.Module`` (class + state_dict, or a ``.pt2`` program) is
  exported with ``torch.export`` (``data/model.pt2``, MLflow's pickle-free format) and loaded by MLflow with pickle
  refused, so loading it needs neither the class nor the allow-list.
- ``model=maite``: any Python object, no flavour: the record stays ``model_info.json`` and the config's factory.

Formats (tag ``Model_format``): :func:`flavoured` ones load from the store; ``file`` (runs recorded before flavours,
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
from xaitk_exp.models import registry
from xaitk_exp.models.image_model import SHARED_KEYS, ImageModel, file_sha256
from xaitk_exp.models.registry import FILE, NONE

__all__ = ["FILE", "NONE", "flavoured", "load", "save", "source_digest"]


def flavoured(fmt: object) -> bool:
    """True for a format (tag ``Model_format``) whose runs hold an MLflow model that loads back from the store."""
    return fmt in registry.stored_formats()


def source_digest(node: Mapping[str, Any]) -> str | None:
    """The SHA-256 of what a ``model`` node names, without loading it (its source's ``digest``); None when the
    source learns it by loading (a factory) or the file is missing (building the model then says why)."""
    try:
        source = registry.source_for(node)
    except ConfigError:
        return None
    return source.digest(node)


def file_digest(node: Mapping[str, Any], key: str) -> str | None:
    """The SHA-256 of the file ``model.<key>`` names; None when it is unset or missing."""
    value = node.get(key)
    if not value or value == "???":
        return None
    path = Path(str(value)).expanduser()
    return file_sha256(path) if path.is_file() else None


# ----- saving -------------------------------------------------------------------------------------------------------
def save(model: ImageModel, folder: Path, image_shape: Sequence[int]) -> str:
    """Save a loaded, checked ``model`` as an MLflow model in ``folder`` (created) with its source's recorder;
    returns its format. A source without a recorder (MAITE) returns :data:`NONE`."""
    source = registry.source_named(model.source)
    if getattr(model, "task", "classification") != "classification":  # a detector: its file, or its factory
        return FILE if model.file else NONE
    if source is None or source.record is None:
        return NONE
    return source.record(model, folder, image_shape)


def requirements(*packages: str) -> list[str]:
    """Pinned requirements written beside the model (MLflow's own inference imports and runs the model)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in ("mlflow", *packages, "numpy"):
        try:
            out.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            out.append(pkg)
    return out


def signature(model: ImageModel, image_shape: Sequence[int]) -> Any:
    """Tensor signature: ``[-1, <preprocessed image shape>]`` float32 in, ``[-1, Cl]`` float32 out."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    one = model.preprocess(np.zeros((1, *image_shape), dtype=np.float32))
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *one.shape[1:]))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, int(model.n_outputs or 0)))]),
    )


@contextlib.contextmanager
def quiet(logger: str) -> Iterator[None]:
    """MLflow warns that pickle runs code when it stores a TorchScript module, which is not pickled: silence it."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


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
    source = registry.with_flavour(flavours)
    if source is None or source.load_recorded is None:
        allowed = " or ".join(s.flavour for s in registry.sources() if s.flavour) or "recorded"
        raise ConfigError("train_run_id", where, f"an MLflow {allowed} model (flavours: {sorted(flavours)})")
    model: ImageModel = source.load_recorded(folder, flavours[source.flavour or ""], shared, extra_allowed)
    model.sha256 = sha256  # the identity is the user's file; the stored copy is MLflow's serialisation of it
    return model


@contextlib.contextmanager
def env(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old

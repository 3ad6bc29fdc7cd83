"""``model=torch``: a TorchScript file (``model.path``), or an ``nn.Module`` class (``model._target_``, constructor
arguments in ``model.args``) with a ``state_dict`` file (``model.weights``). PyTorch is an extra:
``pip install 'xaitk-exp[torch]'``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xaitk_exp.errors import ConfigError
from xaitk_exp.models.image_model import ImageModel, existing_file, file_sha256
from xaitk_exp.models.registry import FILE, ModelSource


def import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise ConfigError(
            "model", "torch", "a model source whose library is installed: pip install 'xaitk-exp[torch]'"
        ) from exc
    return torch


def _load_file(torch: Any, path: str, device: str) -> Any:
    """A TorchScript file (``torch.jit.save``), or a ``torch.export`` program (``.pt2``, ``torch.export.save``)."""
    import warnings

    if path.endswith(".pt2"):
        return torch.export.load(path).module().to(device)
    with warnings.catch_warnings():
        # torch 2.13 deprecates TorchScript, yet users hold TorchScript files: loading them is what is asked
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=DeprecationWarning)
        return torch.jit.load(path, map_location=device)


class TorchModel(ImageModel):
    """A PyTorch classifier in eval mode, run under ``torch.inference_mode()`` (no gradients) on ``model.device``.

    Its forward takes a float32 ``[N, C, H, W]`` tensor (NCHW layout) and returns ``[N, Cl]`` scores.
    """

    source = "torch"

    def __init__(self, node: Mapping[str, Any], extra_allowed: Sequence[str] = ()) -> None:
        target = node.get("_target_")
        self.path: Path | None
        self.weights: Path | None
        if target:
            self.path = None
            self.weights = existing_file(node, "weights", f"a state_dict for {target} (torch.save(model.state_dict()))")
            digest_of = self.weights
        else:
            self.path = existing_file(node, "path", "a TorchScript model (torch.jit.save), or set model._target_")
            self.weights = None
            digest_of = self.path
        super().__init__(node, extra_allowed)
        self.sha256 = file_sha256(digest_of)

    @property
    def file(self) -> str:
        return str(self.path or self.weights)

    @property
    def device(self) -> str:
        torch = import_torch()
        if self.device_setting == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device_setting == "cuda" and not torch.cuda.is_available():
            raise ConfigError("model.device", "cuda", "cpu or auto: torch sees no CUDA device here")
        return self.device_setting

    def runtime_device(self) -> str:
        self.load()
        params = list(self._runtime.parameters()) if hasattr(self._runtime, "parameters") else []
        return str(params[0].device) if params else self.device

    @property
    def display_name(self) -> str:
        if self.node.get("name"):
            return str(self.node["name"])
        if self.node.get("_target_"):
            return str(self.node["_target_"]).rsplit(".", 1)[-1]
        return super().display_name

    def _load_runtime(self) -> Any:
        torch = import_torch()
        device = self.device
        if self.threads is not None and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)  # a fixed thread count: the same float bits in every process
        if self.path is not None:
            try:
                module = _load_file(torch, str(self.path), device)
            except Exception as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                raise ConfigError(
                    "model.path", str(self.path), f"a TorchScript file torch.jit.load can read ({first})"
                ) from exc
        else:
            module = self._module_from_class(torch, device)
        if hasattr(module, "eval"):
            module.eval()
        return module

    def _module_from_class(self, torch: Any, device: str) -> Any:
        from xaitk_exp.security.targets import instantiate

        target = str(self.node["_target_"])
        args = dict(self.node.get("args") or {})
        module = instantiate({"_target_": target, **args}, "model", self.extra_allowed)
        if not isinstance(module, torch.nn.Module):
            raise ConfigError("model._target_", target, "a torch.nn.Module class")
        try:
            state = torch.load(str(self.weights), map_location=device, weights_only=True)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ConfigError(
                "model.weights", str(self.weights), f"a state_dict saved by torch.save ({first})"
            ) from exc
        try:
            module.load_state_dict(state)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ConfigError("model.weights", str(self.weights), f"a state_dict that fits {target} ({first})") from exc
        return module.to(device)

    def _scores(self, runtime: Any, batch: np.ndarray) -> np.ndarray:
        torch = import_torch()
        with torch.inference_mode():
            out = runtime(torch.from_numpy(batch).to(self.device))
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.detach().to("cpu").numpy()


# ----- the source: recorded as MLflow's pytorch flavour -------------------------------------------------------------
#: formats (tag ``Model_format``) of runs that stored the model as an MLflow pytorch model
TORCHSCRIPT = "mlflow.pytorch/torchscript"
PT2 = "mlflow.pytorch/pt2"


def save_torch(model: ImageModel, folder: Path, image_shape: Sequence[int]) -> str:
    """Store the module as an MLflow pytorch model in ``folder``: TorchScript as TorchScript, an ``nn.Module`` as a
    ``torch.export`` program; a module ``torch.export`` cannot trace returns ``file`` after a one-line note."""
    import mlflow.pytorch
    import torch

    from xaitk_exp.models.recorded import quiet, requirements, signature

    module = model._runtime
    reqs = requirements("torch")
    if isinstance(module, torch.jit.ScriptModule):
        with quiet("mlflow.pytorch"):
            mlflow.pytorch.save_model(module, str(folder), serialization_format="pickle",
                                      signature=signature(model, image_shape), pip_requirements=reqs)
        return TORCHSCRIPT
    example = model.preprocess(np.zeros((2, *image_shape), dtype=np.float32))  # batch 2: a dynamic batch axis
    try:
        mlflow.pytorch.save_model(module, str(folder), serialization_format="pt2", input_example=example,
                                  pip_requirements=reqs)
    except Exception as exc:
        import shutil

        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        print(f"[train] note: torch.export cannot trace {model.display_name} ({type(exc).__name__}: {first}); "
              "recording its file instead of an MLflow pytorch model")
        shutil.rmtree(folder, ignore_errors=True)
        return FILE
    return PT2


class RecordedTorchModel(TorchModel):
    """A PyTorch model loaded back from an MLflow ``pytorch`` folder: TorchScript through ``torch.jit.load``; a
    ``torch.export`` program through ``mlflow.pytorch.load_model`` with pickled payloads refused."""

    def _load_runtime(self) -> Any:
        if self.path is None or self.path.suffix != ".pt2":
            return super()._load_runtime()
        import mlflow.pytorch

        from xaitk_exp.models.recorded import env

        torch = import_torch()
        if self.threads is not None and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        with env("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false"):  # MLflow 3.17 allows it unless told otherwise
            try:
                module = mlflow.pytorch.load_model(str(self.path.parent.parent), device=self.device)
            except Exception as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                raise ConfigError(
                    "train_run_id", str(self.path), f"a pickle-free torch.export model ({first})"
                ) from exc
        return module


def load_torch(folder: Path, flavour: Mapping[str, Any], shared: dict[str, Any], extra_allowed: Sequence[str]) -> Any:
    data = Path(folder, flavour.get("model_data") or "data")
    path = data / "model.pt2" if (data / "model.pt2").is_file() else data / "model.pth"
    return RecordedTorchModel({**shared, "source": "torch", "path": str(path)}, extra_allowed)


def _digest(node: Mapping[str, Any]) -> str | None:
    """``model.weights`` for a module class, else ``model.path``."""
    from xaitk_exp.models.recorded import file_digest

    return file_digest(node, "weights" if node.get("_target_") else "path")


SOURCE = ModelSource(
    name="torch",
    load=TorchModel,
    framework="torch",
    extra="torch",
    digest=_digest,
    record=save_torch,
    flavour="pytorch",
    load_recorded=load_torch,
    formats=(TORCHSCRIPT, PT2),
)

"""``model=onnx``: an ONNX file run by ONNX Runtime (a core dependency)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xaitk_exp.errors import ConfigError
from xaitk_exp.models.image_model import ImageModel, existing_file, file_sha256
from xaitk_exp.models.registry import ModelSource

#: metadata keys (``onnx.helper.set_model_props``) read as class names: a JSON list, or a JSON {index: name} map
NAME_KEYS = ("class_names", "index2label")


class OnnxModel(ImageModel):
    """``model.path``: an ``.onnx`` file whose first input takes a float32 batch (``[N, C, H, W]`` for the NCHW
    layout) and whose first output is ``[N, Cl]``. A model exported with a fixed batch of 1 is run image by image."""

    source = "onnx"

    def __init__(self, node: Mapping[str, Any], extra_allowed: Sequence[str] = ()) -> None:
        self.path = existing_file(node, "path", "an ONNX model (.onnx)")
        super().__init__(node, extra_allowed)
        self.sha256 = file_sha256(self.path)

    @property
    def file(self) -> str:
        return str(self.path)

    @property
    def device(self) -> str:
        return "cuda" if "CUDAExecutionProvider" in self._providers() else "cpu"

    def runtime_device(self) -> str:
        self.load()
        return "cuda" if self._runtime.get_providers()[0] == "CUDAExecutionProvider" else "cpu"

    def _providers(self) -> list[str]:
        import onnxruntime as ort

        available = ort.get_available_providers()
        cuda = "CUDAExecutionProvider" in available
        if self.device_setting == "cuda" and not cuda:
            raise ConfigError("model.device", "cuda", f"cpu or auto: this onnxruntime offers {', '.join(available)}")
        if self.device_setting in ("cuda", "auto") and cuda:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    def _load_runtime(self) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if self.threads is not None:  # a fixed thread count: the same float bits in every process
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(self.path), sess_options=options, providers=self._providers())
        except ConfigError:
            raise
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ConfigError("model.path", str(self.path), f"an ONNX model ONNX Runtime can load ({first})") from exc
        if self.device_setting == "cuda" and session.get_providers()[0] != "CUDAExecutionProvider":
            # onnxruntime-gpu without its CUDA libraries falls back to the CPU without a word
            raise ConfigError("model.device", "cuda", "cpu or auto: ONNX Runtime could not start its CUDA provider")
        inputs = session.get_inputs()
        if not inputs or not session.get_outputs():
            raise ConfigError("model.path", str(self.path), "an ONNX model with an image input and a score output")
        self._input = inputs[0].name
        batch = inputs[0].shape[0] if inputs[0].shape else None
        self._fixed_batch = batch if isinstance(batch, int) and batch > 0 else None
        self._meta = dict(session.get_modelmeta().custom_metadata_map or {})
        return session

    def model_names(self) -> list[str] | None:
        for key in NAME_KEYS:
            if key in self._meta:
                try:
                    value = json.loads(self._meta[key])
                except ValueError:
                    continue
                if isinstance(value, dict):
                    return [str(value[k]) for k in sorted(value, key=lambda k: int(k))]
                if isinstance(value, list):
                    return [str(v) for v in value]
        return None

    def _scores(self, runtime: Any, batch: np.ndarray) -> np.ndarray:
        if self._fixed_batch is None or self._fixed_batch == len(batch):
            return runtime.run(None, {self._input: batch})[0]
        step = self._fixed_batch
        if len(batch) % step:
            raise RuntimeError(f"the ONNX input takes batches of exactly {step} images")
        return np.concatenate([runtime.run(None, {self._input: batch[i : i + step]})[0]
                               for i in range(0, len(batch), step)])


# ----- the source: recorded as MLflow's onnx flavour ----------------------------------------------------------------
#: the format (tag ``Model_format``) of a run that stored the model as an MLflow onnx model
ONNX = "mlflow.onnx"
#: ONNX files above this size keep their tensors in an external data file (protobuf's 2 GB limit)
ONNX_EXTERNAL_DATA_BYTES = 1 << 30


def save_onnx(model: ImageModel, folder: Path, image_shape: Sequence[int]) -> str:
    """Store the model's file as an MLflow onnx model in ``folder``; ONNX Runtime loads ``model.onnx`` back."""
    import mlflow.onnx
    import onnx

    from xaitk_exp.models.recorded import requirements, signature

    proto = onnx.load(str(model.file))  # with its external data, if it has any
    big = Path(str(model.file)).stat().st_size > ONNX_EXTERNAL_DATA_BYTES or _has_external_data(proto)
    mlflow.onnx.save_model(
        proto,
        str(folder),
        signature=signature(model, image_shape),
        pip_requirements=requirements("onnx", "onnxruntime"),
        save_as_external_data=big,  # small models: one model.onnx, the same name every time
    )
    return ONNX


def _has_external_data(proto: Any) -> bool:
    from onnx.external_data_helper import uses_external_data

    return any(uses_external_data(t) for t in proto.graph.initializer)


def load_onnx(folder: Path, flavour: Mapping[str, Any], shared: dict[str, Any], extra_allowed: Sequence[str]) -> Any:
    path = Path(folder, flavour.get("data") or "model.onnx")
    return OnnxModel({**shared, "source": "onnx", "path": str(path)}, extra_allowed)


def _digest(node: Mapping[str, Any]) -> str | None:
    from xaitk_exp.models.recorded import file_digest

    return file_digest(node, "path")


SOURCE = ModelSource(
    name="onnx",
    load=OnnxModel,
    framework="onnxruntime",
    extra=None,  # onnxruntime is a core dependency
    digest=_digest,
    record=save_onnx,
    flavour="onnx",
    load_recorded=load_onnx,
    formats=(ONNX,),
)

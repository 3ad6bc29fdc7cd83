"""The base every non-scikit-learn source builds on: :class:`ImageModel` (class indices and names, batched
``predict_proba`` on images in ``[0, 1]``) and the file helpers the sources share."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xaitk_exp.errors import ConfigError
from xaitk_exp.models.preprocess import Preprocess

OUTPUTS = ("auto", "logits", "probabilities")
#: how far a row of probabilities may sum from 1 (float32 softmax outputs of a 1000-class network stay well within)
PROBABILITY_TOLERANCE = 1e-3


DEVICES = ("cpu", "cuda", "auto")


#: keys every source shares; the rest of a source's node is its own (``path``, ``weights``, ``args``, ...)
SHARED_KEYS = ("source", "name", "class_names", "outputs", "device", "preprocess", "threads")


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file, read in 1 MB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def probe_images(call: Callable[[], Any], dataset_key: str, shape: Sequence[int],
                 allowed: Callable[[str], str]) -> Any:
    """``call()`` (a model run on probe images of ``shape``); any error but a :class:`ConfigError` becomes one line
    naming ``dataset_key`` with the image size, ``allowed(why)`` saying what fits, ``why`` the error's first line."""
    try:
        return call()
    except ConfigError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ConfigError(dataset_key, list(shape[:2]), allowed(f"{type(exc).__name__}: {first}")) from exc


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``[N, Cl]`` scores, in float64 (stable: the row maximum is subtracted first)."""
    z = np.asarray(scores, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    return z / z.sum(axis=1, keepdims=True)


class ImageModel:
    """A loaded image classifier, as the stages see it.

    ``classes_``: class indices ``0 .. Cl-1`` (the model's output order); ``class_names``: a name per index
    (``"0"``, ``"1"``, ... when the model and the config name none). The runtime (an ONNX Runtime session, a torch
    module) is dropped when the object is pickled for a worker process and loaded again there.
    """

    source = ""

    def __init__(self, node: Mapping[str, Any], extra_allowed: Sequence[str] = ()) -> None:
        self.node = dict(node)
        self.extra_allowed = tuple(extra_allowed)
        self.preprocess = Preprocess.from_config(self.node.get("preprocess"))
        #: ``model.outputs`` as configured (``auto``, ``logits``, ``probabilities``); ``outputs`` is what the scores
        #: are read as: auto is decided on the first scores (:meth:`check_images`)
        self.outputs_setting = str(self.node.get("outputs") or "auto")
        if self.outputs_setting not in OUTPUTS:
            raise ConfigError("model.outputs", self.node.get("outputs"), f"one of {', '.join(OUTPUTS)}")
        self.outputs = self.outputs_setting
        self.device_setting = str(self.node.get("device") or "cpu")
        if self.device_setting not in DEVICES:
            raise ConfigError("model.device", self.node.get("device"), f"one of {', '.join(DEVICES)}")
        threads = self.node.get("threads", 1)
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
            raise ConfigError("model.threads", threads, "a positive integer, or null for the runtime's default")
        self.threads: int | None = threads
        self.configured_names = _names_from_config(self.node.get("class_names"))
        self.n_outputs: int | None = None
        self.class_names: list[str] = list(self.configured_names or [])
        self.sha256 = ""
        self._runtime: Any = None
        self.load()
        if self.class_names:
            self.n_outputs = len(self.class_names)

    # ----- what a source implements -----------------------------------------------------------------------------
    def _load_runtime(self) -> Any:
        """Load the model; return the runtime object :meth:`_scores` uses."""
        raise NotImplementedError

    def _scores(self, runtime: Any, batch: np.ndarray) -> np.ndarray:
        """A preprocessed float32 batch (``[N, C, H, W]`` or ``[N, H, W, C]``) -> ``[N, Cl]`` raw outputs."""
        raise NotImplementedError

    def model_names(self) -> list[str] | None:
        """Class names the model itself carries (MAITE ``index2label``, ONNX metadata), else None."""
        return None

    @property
    def device(self) -> str:
        return "cpu"

    def runtime_device(self) -> str:
        """Where the loaded runtime itself says the model runs (``cpu``, ``cuda:0``, ...): a check on ``device``."""
        return "cpu"

    @property
    def file(self) -> str | None:
        """The file that holds the model (recorded by the train stage), if there is one."""
        return None

    @property
    def display_name(self) -> str:
        """What ``<Model> - Train`` and the other experiments are named after: ``model.name``, else the file's stem,
        else the class or factory's name."""
        if self.node.get("name"):
            return str(self.node["name"])
        if self.file:
            return Path(self.file).stem
        return str(self.node.get("_target_") or self.source).rsplit(".", 1)[-1]

    # ----- shared -----------------------------------------------------------------------------------------------
    def load(self) -> None:
        """Load the runtime (and the model's own class names) now; one-line :class:`ConfigError` on failure."""
        if self._runtime is None:
            self._runtime = self._load_runtime()
            names = self.model_names()
            if names and not self.configured_names:
                self.class_names = list(names)

    @property
    def classes_(self) -> list[int]:
        if self.n_outputs is None:
            raise RuntimeError("the model's output size is unknown until check_images() has run")
        return list(range(self.n_outputs))

    def scores(self, images: np.ndarray) -> np.ndarray:
        """``[N, H, W(, C)]`` images in ``[0, 1]`` -> ``[N, Cl]`` raw model outputs, one runtime call, no gradients."""
        self.load()
        out = np.asarray(self._scores(self._runtime, self.preprocess(images)))
        if out.ndim != 2 or len(out) != len(images):
            raise RuntimeError(
                f"model returned an array of shape {list(out.shape)} for {len(images)} images; expected "
                f"[{len(images)}, n_classes]"
            )
        return out

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """``[N, H, W(, C)]`` images in ``[0, 1]`` -> ``[N, Cl]`` float64 probabilities (softmax of logits)."""
        out = self.scores(images)
        if self.outputs == "auto":  # not probed yet (check_images): decided on these scores
            self.read_outputs(out)
        return softmax(out) if self.outputs == "logits" else out.astype(np.float64)

    def check_images(
        self, image_shape: Sequence[int], dataset_key: str = "dataset.shape", samples: np.ndarray | None = None
    ) -> None:
        """Run one black image of ``image_shape`` (``[H, W]`` or ``[H, W, C]``) and ``samples`` (a few of the
        dataset's images) through the model: the output size is learnt (or checked against ``model.class_names``),
        ``outputs=auto`` is decided (:meth:`read_outputs`); a shape the model refuses is one :class:`ConfigError`."""
        shape = tuple(int(d) for d in image_shape)
        channels = shape[2] if len(shape) == 3 else 1
        for key, values in (("mean", self.preprocess.mean), ("std", self.preprocess.std)):
            if values is not None and len(values) > 1 and len(values) != channels:
                raise ConfigError(
                    f"model.preprocess.{key}", list(values),
                    f"one value per image channel (or one for all): the images have {channels} "
                    f"(dataset.grayscale={channels == 1}), {len(values)} values given",
                )
        probe = np.zeros((1, *shape), dtype=np.float32)
        if samples is not None and len(samples):
            probe = np.concatenate([probe, np.asarray(samples, dtype=np.float32).reshape(-1, *shape)])
        out = probe_images(
            lambda: self.scores(probe), dataset_key, shape,
            lambda why: f"an image size the model accepts: {self.source} refused [1, {', '.join(map(str, shape))}] "
                        f"images in [N, H, W, C] ({why}); set dataset.shape / dataset.grayscale to the model's input",
        )
        n = int(out.shape[1])
        if self.class_names and len(self.class_names) != n:
            key = "model.class_names" if self.configured_names else "model"
            raise ConfigError(
                key, _short_list(self.class_names),
                f"one class name per model output: the model has {n} outputs, {len(self.class_names)} names given",
            )
        if not self.class_names:
            self.class_names = [str(i) for i in range(n)]
        self.n_outputs = n
        self.read_outputs(out)

    def read_outputs(self, scores: np.ndarray) -> str:
        """Decide ``outputs`` from ``[N, Cl]`` raw scores: rows in ``[0, 1]`` that sum to 1 (within
        :data:`PROBABILITY_TOLERANCE`) are probabilities, anything else logits. With ``outputs=auto`` that is the
        answer; an explicit setting the scores contradict gets a one-line warning on stderr (probabilities outside
        ``[0, 1]`` are refused). Returns what the scores are read as."""
        import sys

        scores = np.asarray(scores, dtype=np.float64)
        in_range = bool(np.all(scores >= -1e-6) and np.all(scores <= 1 + 1e-6))
        sums_to_one = in_range and bool(np.all(np.abs(scores.sum(axis=1) - 1.0) <= PROBABILITY_TOLERANCE))
        looks = "probabilities" if sums_to_one else "logits"
        if self.outputs_setting == "auto":
            self.outputs = looks
        elif self.outputs_setting == "probabilities" and not in_range:
            raise ConfigError("model.outputs", "probabilities", "logits or auto: the model's outputs are not in [0, 1]")
        elif self.outputs_setting != looks:
            why = "rows in [0, 1] that sum to 1" if sums_to_one else "rows that do not sum to 1"
            print(f"xaitk-exp: warning: model.outputs={self.outputs_setting}, but the model's scores look like {looks} "
                  f"({why}); model.outputs=auto reads them as {looks}", file=sys.stderr)
        return self.outputs

    def info(self) -> dict[str, Any]:
        """What the train stage records about the model (params, tags and ``model/model_info.json``)."""
        return {
            "source": self.source,
            "name": self.display_name,
            "file": Path(self.file).name if self.file else None,
            "sha256": self.sha256,
            "outputs": self.outputs,
            "outputs_setting": self.outputs_setting,
            "device": self.device_setting,
            "preprocess": self.preprocess.config(),
            "n_classes": self.n_outputs,
            "class_names": list(self.class_names),
            "target": self.node.get("_target_"),
        }

    def get_config(self) -> dict[str, Any]:
        return {"source": self.source, "name": self.display_name, "sha256": self.sha256[:16], "outputs": self.outputs}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_runtime"] = None  # sessions and modules do not travel to worker processes: loaded again there
        return state


def _names_from_config(value: Any) -> list[str] | None:
    """``model.class_names``: null, a list of names, or a text file with one name per line."""
    if value is None:
        return None
    if isinstance(value, str):
        path = Path(value).expanduser()
        if not path.is_file():
            raise ConfigError("model.class_names", value, "null, a list of names or a text file with one name a line")
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    elif isinstance(value, (list, tuple)):
        names = [str(v) for v in value]
    else:
        raise ConfigError("model.class_names", value, "null, a list of names or a text file with one name a line")
    if not names or len(set(names)) != len(names):
        raise ConfigError("model.class_names", _short_list(names), "distinct names, one per model output")
    return names


def _short_list(names: Sequence[Any]) -> Any:
    return list(names) if len(names) <= 6 else [*list(names)[:5], f"... ({len(names)} names)"]


def existing_file(node: Mapping[str, Any], key: str, what: str) -> Path:
    """``node[key]`` as an existing file, else :class:`ConfigError` naming ``model.<key>``."""
    value = node.get(key)
    if not value or value == "???":
        raise ConfigError(f"model.{key}", value, f"the path of {what}")
    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise ConfigError(f"model.{key}", str(value), f"the path of an existing file holding {what}")
    return path

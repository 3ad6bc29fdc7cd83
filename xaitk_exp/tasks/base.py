"""The interface every task implements (see the package's docstring for what each part decides)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from xaitk_exp.errors import ConfigError
from xaitk_exp.settings.metrics import MetricSettings


class EvaluationRecords(Protocol):
    """What one evaluation records, built by :meth:`Task.evaluation` from the model's outputs on the whole split."""

    def image(self, k: int) -> tuple[dict[str, Any], dict[str, float]]:
        """Tags and metrics of image ``k``'s run."""
        ...

    def headline(self, k: int) -> tuple[str, float, str]:
        """What image ``k``'s note says: the model's answer, its score and the ground truth (``unknown``)."""
        ...

    def log_image(self, tracker: Any, run_id: str, k: int) -> None:
        """Image ``k``'s artifacts, into its finished run ``run_id`` (detection: its detections table and picture;
        classification: none)."""
        ...

    def summary(self, n: int) -> dict[str, float]:
        """The summary run's metrics, ``n`` the number of evaluated images."""
        ...

    def log_artifacts(self, tracker: Any, run_id: str, title: str) -> None:
        """The summary run's artifacts (figures, tables), ``title`` naming the split."""
        ...

    def outcome(self, split_name: str) -> str:
        """The stage's closing words on the split (accuracy, or why there is none)."""
        ...


@runtime_checkable
class SavesOutputs(Protocol):
    """Optional on :class:`EvaluationRecords`: the raw model outputs of some images, so that a sharded evaluation's
    merge builds the summary from what the shards computed (:meth:`Task.evaluation_from_outputs`) instead of running
    the model on the whole split again."""

    def outputs(self, rows: Sequence[int]) -> dict[str, Any]:
        """Numeric numpy arrays (no objects: they are stored and read back without pickle) holding ``rows``'s
        outputs, as :meth:`Task.evaluation_from_outputs` reads them."""
        ...


class Task(ABC):
    """A kind of model and what the stages record about it; one instance per task, ``TASK`` in its module."""

    #: the ``task`` config value
    name: str
    #: dotted path of the xaitk-saliency interface a saliency generator of this task implements
    generator_interface: str
    #: the quality metrics (``metrics/names.py``) its saliency runs may record
    quality_metrics: tuple[str, ...]
    #: the metric evaluation image runs are listed by, best first (``metrics.<name> DESC``)
    order_by: str
    #: what one saliency run explains: ``images`` (one run per image, a map per class) or ``detections`` (one run
    #: per detection of each chosen image: ``stages/saliency/detection.py``)
    explains: str = "images"

    @abstractmethod
    def check_model(self, model: Any, key: str = "model") -> None:
        """Refuse, in one line naming ``key``, a built model whose outputs this task cannot read."""

    @abstractmethod
    def blackbox(self, model: Any, chunk_size: int) -> Any:
        """The black box xaitk-saliency queries for ``model``, ``chunk_size`` images per model call."""

    @abstractmethod
    def evaluation(self, split: Any, model: Any, split_name: str, blackbox: Any,
                   rows: Sequence[int] | None = None) -> EvaluationRecords:
        """The records of one evaluation of ``model`` on ``split_name``: the model runs on every image of it here,
        or, given ``rows`` (a shard's images), on the black box's chunks that hold them, cut as for the whole split
        so that each image's outputs are the same bits; only those rows' image records are then asked for."""

    @abstractmethod
    def output_labels(self, model: Any, class_names: Sequence[str]) -> list[str]:
        """The name each of ``model``'s outputs is recorded under in a saliency run, in the black box's output order:
        its maps' targets (``Map_classes``) and what an evaluation run's ``Predicted_class`` is matched against.
        ``class_names`` are the dataset's. Classification: the class labels (an image model's class indices);
        detection would name each detection's slot (its index in the detections of the image)."""

    @abstractmethod
    def output_names(self, model: Any) -> list[str] | None:
        """The name a user reads for each output where it differs from :meth:`output_labels` (the pictures' titles,
        ``query.predicted_class`` by label), else None. Classification: an image model's class names, None for a
        scikit-learn model; detection would give each detection's class name and box."""

    @abstractmethod
    def explained_outputs(self, blackbox: Any, image: Any, top_k: int | None) -> tuple[Any, list[int] | None]:
        """Which outputs of ``blackbox`` (from :meth:`blackbox`) get maps for ``image``: the black box reporting
        only those, and their indices among :meth:`output_labels` (None: every output, in order, the black box
        unchanged). ``top_k`` is ``maps.top_k``. Classification: the predicted class first, then by decreasing
        confidence (``maps.top_k``); detection would keep the image's detections above a score, best first."""

    def evaluation_from_outputs(self, split: Any, model: Any, split_name: str, blackbox: Any,
                                parts: Sequence[Mapping[str, Any]]) -> EvaluationRecords | None:
        """The records of the whole split from saved outputs (one :meth:`SavesOutputs.outputs` per shard), equal to
        :meth:`evaluation`'s; None when this task cannot (no hook) or ``parts`` miss an image: the merge then runs
        the model again."""
        return None

    def takes_generator(self, target: str) -> bool:
        """True when the class at dotted path ``target`` implements :attr:`generator_interface` (imported)."""
        import importlib

        module, _, cls_name = target.rpartition(".")
        cls = getattr(importlib.import_module(module), cls_name, None)
        base_module, _, base_name = self.generator_interface.rpartition(".")
        base = getattr(importlib.import_module(base_module), base_name)
        return isinstance(cls, type) and issubclass(cls, base)

    def saliency_options(self) -> list[str]:
        """The shipped ``saliency=<option>`` configs whose generator this task takes (classification: ``rise``,
        ...; detection: ``drise``, ``detector_random_grid``)."""
        from importlib.resources import files

        import yaml

        shipped = sorted((p for p in files("xaitk_exp.conf").joinpath("saliency").iterdir()
                          if p.name.endswith(".yaml")), key=lambda p: p.name)
        return [p.name.removesuffix(".yaml") for p in shipped
                if self.takes_generator(str(yaml.safe_load(p.read_text())["_target_"]))]

    def check_saliency(self, node: Mapping[str, Any], extra_allowed: tuple[str, ...] = ()) -> None:
        """Refuse a ``saliency`` node whose generator does not implement :attr:`generator_interface` (the class is
        imported behind the allow-list)."""
        from xaitk_exp.security.targets import check_targets

        target = str(node.get("_target_", ""))
        check_targets({"_target_": target}, extra_allowed, "saliency")
        base_name = self.generator_interface.rpartition(".")[2]
        if not self.takes_generator(target):
            raise ConfigError(
                "saliency._target_", target,
                f"a {self.name} saliency generator (a {base_name}) for task={self.name}",
                f"saliency={node.get('name')} explains another kind of model",
            )

    def check_metrics(self, metrics: MetricSettings) -> None:
        """Refuse quality metrics switched on that this task does not record."""
        if metrics.enabled and metrics.sanity and "Sanity_permuted_labels_xcorr" not in self.quality_metrics:
            raise ConfigError("metrics.sanity", True, f"false for task={self.name}: it has no sanity metrics")
        if metrics.enabled and metrics.complexity and "Complexity" not in self.quality_metrics:
            raise ConfigError("metrics.complexity", True, f"false for task={self.name}: it has no Complexity")

"""The stages' hooks for ONNX / PyTorch / MAITE models: what ``train`` records instead of training, how evaluation
and saliency find the recorded model, how classes show up in tags and metrics, and which classes keep a map.

Each stage calls one function here; nothing here talks to MLflow except through the stage's tracker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from xaitk_exp import schema
from xaitk_exp.errors import ConfigError, TrackingError
from xaitk_exp.models.image_model import ImageModel
from xaitk_exp.models.sources import (
    MANY_CLASSES,
    build_image_model,
    classes_kept,
    display_name,
    is_image_model,
    top_classes,
)

MODEL_DIR = "model"


def build(ctx: Any) -> ImageModel:
    """The ``model`` node's :class:`ImageModel`, loaded; refuses settings that need a scikit-learn model."""
    from xaitk_exp.settings.nodes import to_dict

    node = to_dict(ctx.cfg.model)
    metrics = ctx.settings.metrics
    if metrics.enabled and metrics.sanity:
        raise ConfigError(
            "metrics.sanity", True,
            f"false for model={node.get('source')}: its permuted-label check retrains the model, which only "
            "scikit-learn models are",
        )
    return build_image_model(node, ctx.extra_allowed)


def model_name(node: Any) -> str:
    return display_name(node)


def check(ctx: Any, model: ImageModel) -> None:
    """Before any run opens: the model takes the dataset's images, its outputs match its class names, and every
    class of the dataset is one of the model's (by name, through ``dataset.class_map``)."""
    model.check_images(ctx.split.image_shape)
    for split_name in ("test", "train"):
        truth_for(ctx.split, model, split_name)


def record(ctx: Any) -> str:
    """``train`` for a model file: no training, a ``train_info`` run in ``<Model> - Train`` that holds the model
    file (``model/``), its SHA-256 (param ``sha256``, tag ``Model_sha256``), its class names and settings. A FINISHED
    run with the same config and the same file is reused unless ``force=true``."""
    model = ctx.model if isinstance(ctx.model, ImageModel) else build(ctx)
    check(ctx, model)
    ctx.model = model
    if not ctx.cfg.force:
        previous = ctx.find_latest("Train", "train", f"tags.Model_sha256 = '{model.sha256}'")
        if previous is not None:
            ctx.train_run_id, ctx.train_exp_id = previous.info.run_id, previous.info.experiment_id
            print(f"[train] reusing run {previous.info.run_id} (same config and model file; force=true re-records)")
            return previous.info.run_id
    tracker = ctx.tracker
    exp_id = tracker.experiment(ctx.experiment_name(schema.TRAIN), framework=ctx.framework)
    info = model.info()
    tags = {
        "Dataset": ctx.dataset_name,
        "Model_source": model.source,
        "Model_sha256": model.sha256,
        **ctx.provenance_tags("train"),
    }
    params = {
        "source": model.source,
        "file": info["file"],
        "sha256": model.sha256,
        "outputs": model.outputs,
        "device": model.device_setting,
        "preprocess": model.preprocess.config(),
        "n_classes": model.n_outputs,
        "target": info["target"],
    }
    with tracker.run(exp_id, schema.TRAIN_RUN, tags=tags) as run_id:
        tracker.log(run_id, params=params)
        ctx.record_config(run_id)
        if model.file:
            tracker.log_artifact(run_id, model.file, MODEL_DIR)
        tracker.log_dict(run_id, info, f"{MODEL_DIR}/model_info.json")
    ctx.train_run_id, ctx.train_exp_id = run_id, exp_id
    print(f"[train] {model.source} model {model.display_name} recorded (not trained): run {run_id} in "
          f"'{ctx.experiment_name('Train')}'")
    return run_id


def ensure(ctx: Any) -> ImageModel:
    """The model evaluation and saliency use: built from the config, checked, and linked to the train run that
    recorded the same file (``train_run_id``, else the latest FINISHED one with this config and SHA-256)."""
    if isinstance(ctx.model, ImageModel) and ctx.train_run_id:
        return ctx.model
    model = ctx.model if isinstance(ctx.model, ImageModel) else build(ctx)
    check(ctx, model)
    ctx.model = model
    if ctx.cfg.get("train_run_id"):
        run = ctx.get_run_in(str(ctx.cfg.train_run_id), "train_run_id", ctx.experiment_name("Train"))
        recorded = run.data.tags.get("Model_sha256")
        if recorded != model.sha256:
            raise ConfigError(
                "train_run_id", str(ctx.cfg.train_run_id),
                f"a train run that recorded this model (it recorded sha256 {str(recorded)[:12]}..., the file now "
                f"has {model.sha256[:12]}...)",
            )
    else:
        run = ctx.find_latest("Train", "train", f"tags.Model_sha256 = '{model.sha256}'")
        if run is None:
            raise TrackingError(
                f"no FINISHED run in '{ctx.experiment_name('Train')}' recorded this model and dataset config in "
                f"{ctx.tracker.display_uri}; run stage=train first (it records the model), or pass train_run_id=<id>"
            )
    ctx.train_run_id, ctx.train_exp_id = run.info.run_id, run.info.experiment_id
    return model


# ----- classes in tags and metrics ---------------------------------------------------------------------------------
def truth_for(split: Any, model: Any, split_name: str) -> np.ndarray | None:
    """The true class of each image of ``split_name`` in the model's ``classes_``; None without ground truth.

    scikit-learn models were trained on the split's own labels. For an :class:`ImageModel` the dataset's class
    names (folder names after ``dataset.class_map``) are looked up among the model's class names."""
    if not getattr(split, "has_labels", True):
        return None
    labels = np.asarray(split.labels(split_name))
    if not isinstance(model, ImageModel):
        return labels
    index = {name: i for i, name in enumerate(model.class_names)}
    names = [str(c) for c in split.class_names]
    missing = [n for n in names if n not in index]
    if missing:
        shown = model.class_names[:5] + (["..."] if len(model.class_names) > 5 else [])
        raise ConfigError(
            "dataset.class_map", getattr(split, "class_map", None),
            f"a map from folder names to the model's class names: {missing[:3]} are not among the model's "
            f"classes {shown}",
        )
    lookup = np.asarray([index[n] for n in names], dtype=int)
    return lookup[labels] if len(labels) else labels


@dataclass
class ClassView:
    """How one model's classes appear in the evaluation's tags and metrics.

    ``labels``: per model class, the value of ``Predicted_class`` / ``GT_class`` and the ``<c>`` of
    ``Class_<c>_conf`` (scikit-learn: the dataset's class name; image models: the class index); ``names``: per model
    class, the name shown beside the index (tag ``Predicted_label``; None for scikit-learn); ``truth``: per image,
    the true class as an index into ``labels`` (None without ground truth); ``dataset_names``: the scikit-learn
    path's ``GT_class`` names, indexed by the split's labels.
    """

    labels: list[str]
    names: list[str] | None
    truth: np.ndarray | None
    dataset_names: list[str]
    n_metric: int

    @property
    def show_confusion(self) -> bool:
        """A confusion matrix needs ground truth, and is legible for at most 20 classes (any for scikit-learn)."""
        return self.truth is not None and (self.names is None or len(self.labels) <= MANY_CLASSES)

    def tags(self, k: int, probs: np.ndarray, raw_label: Any = None) -> dict[str, Any]:
        top = int(np.argmax(probs))
        out: dict[str, Any] = {}
        if self.truth is not None:
            if self.names is None:
                out["GT_class"] = self.dataset_names[int(raw_label)]
            else:
                out["GT_class"] = self.labels[int(self.truth[k])]
                out["GT_label"] = self.names[int(self.truth[k])]
        out["Predicted_class"] = self.labels[top]
        if self.names is not None:
            out["Predicted_label"] = self.names[top]
        return out

    def metrics(self, probs: np.ndarray) -> dict[str, float]:
        """``Predicted_class_conf`` and ``Class_<c>_conf`` for every class up to 20, else the 5 most confident."""
        top = int(np.argmax(probs))
        out = {"Predicted_class_conf": float(probs[top])}
        for c in top_classes(probs, self.n_metric):
            out[f"Class_{self.labels[c]}_conf"] = float(probs[c])
        return out


def class_view(split: Any, model: Any, split_name: str, labels: Sequence[str]) -> ClassView:
    """The :class:`ClassView` of ``model`` on ``split_name``; ``labels`` are the scikit-learn path's display labels
    (ignored for image models, whose labels are their class indices)."""
    names = None
    if isinstance(model, ImageModel):
        labels = [str(c) for c in model.classes_]
        names = list(model.class_names)
    truth = truth_for(split, model, split_name)
    return ClassView(list(labels), names, truth, [str(c) for c in split.class_names],
                     classes_kept(len(labels), None))


def display_labels(model: Any, labels: Sequence[str]) -> list[str]:
    """The saliency stage's labels: the class indices of an image model, else ``labels`` unchanged."""
    return [str(c) for c in model.classes_] if isinstance(model, ImageModel) else list(labels)


# ----- which classes keep a map ------------------------------------------------------------------------------------
def restrict_to_top(blackbox: Any, image: np.ndarray, top_k: int | None) -> tuple[Any, list[int] | None]:
    """``blackbox`` reporting only the classes whose maps are kept (``maps.top_k``), with their model class
    indices: the predicted class first, then by decreasing confidence on ``image``. ``(blackbox, None)`` when every
    class is kept (their natural order, no extra model call)."""
    n = len(blackbox.all_labels)
    k = classes_kept(n, top_k)
    if k >= n:
        return blackbox, None
    probs = blackbox.predict_all(np.asarray(image)[None])[0]
    kept = top_classes(probs, k)
    return blackbox.restricted(kept), kept


__all__ = [
    "ClassView", "build", "check", "class_view", "display_labels", "ensure", "is_image_model", "model_name",
    "record", "restrict_to_top", "truth_for",
]

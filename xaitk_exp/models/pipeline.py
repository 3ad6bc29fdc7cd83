"""The stages' hooks for ONNX / PyTorch / MAITE models: what ``train`` records instead of training, how evaluation
and saliency find the recorded model, how classes show up in tags and metrics, and which classes keep a map.

Each stage calls one function here; nothing here talks to MLflow except through the stage's tracker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xaitk_exp import schema
from xaitk_exp.errors import ConfigError, TrackingError
from xaitk_exp.models.image_model import ImageModel
from xaitk_exp.models.sources import (
    MANY_CLASSES,
    classes_kept,
    display_name,
    is_image_model,
    top_classes,
)

MODEL_DIR = schema.IMAGE_MODEL_DIR


def build(ctx: Any) -> ImageModel:
    """The ``model`` node's :class:`ImageModel`, loaded; refuses settings that need a scikit-learn model."""
    from xaitk_exp.settings.nodes import to_dict

    from xaitk_exp.models.detector import build_for_task

    node = to_dict(ctx.cfg.model)
    _refuse_sanity(ctx, node)
    return build_for_task(node, ctx.extra_allowed, ctx.settings.task, ctx.split.image_shape)


def _refuse_sanity(ctx: Any, node: dict[str, Any]) -> None:
    metrics = ctx.settings.metrics
    if metrics.enabled and metrics.sanity:
        raise ConfigError(
            "metrics.sanity", True,
            f"false for model={node.get('source')}: its permuted-label check retrains the model, which only "
            "scikit-learn models are",
        )


def model_name(node: Any) -> str:
    return display_name(node)


def check(ctx: Any, model: ImageModel) -> None:
    """Before any run opens: the model takes the dataset's images, its outputs match its class names, and every
    class of the dataset is one of the model's (by name, through ``dataset.class_map``)."""
    model.check_images(ctx.split.image_shape, samples=ctx.split.test_images[:8])  # outputs=auto decided here
    for split_name in ("test", "train"):
        truth_for(ctx.split, model, split_name)


def record(ctx: Any) -> str:
    """``train`` for a model file: no training, a ``train_info`` run in ``<Model> - Train`` that holds the model as an
    MLflow model in ``model/`` (flavour ``onnx`` or ``pytorch``, also the run's logged model; a MAITE model has
    none), its SHA-256 (param ``sha256``, tag ``Model_sha256``), its class names and settings
    (``model/model_info.json``). The stages after it run the recorded model. A FINISHED run with the same config and
    the same file is reused unless ``force=true``."""
    from xaitk_exp.models import recorded

    model = ctx.model if isinstance(ctx.model, ImageModel) else build(ctx)
    check(ctx, model)
    ctx.model = model
    if not ctx.settings.force:
        previous = ctx.find_latest(schema.TRAIN, "train", f"tags.{schema.MODEL_SHA256} = '{model.sha256}'")
        if previous is not None:
            ctx.train_run_id, ctx.train_exp_id = previous.info.run_id, previous.info.experiment_id
            ctx.model = _recorded_model(ctx, previous) or model
            print(f"[train] reusing run {previous.info.run_id} (same config and model file; force=true re-records)")
            return previous.info.run_id
    folder = _local_folder(ctx, f"{model.source}-{model.sha256[:16]}")
    fmt = recorded.save(model, folder, ctx.split.image_shape)  # before the run opens: a failure leaves no run
    tracker = ctx.tracker
    exp_id = tracker.experiment(ctx.experiment_name(schema.TRAIN), framework=ctx.framework)
    info = {**model.info(), "format": fmt}
    tags = {
        schema.DATASET: ctx.dataset_name,
        "Model_source": model.source,
        schema.MODEL_SHA256: model.sha256,
        schema.MODEL_FORMAT: fmt,
        **ctx.provenance_tags("train"),
    }
    params = {
        "source": model.source,
        "file": info["file"],
        "sha256": model.sha256,
        "outputs": model.outputs,  # what the scores are read as (outputs=auto: decided on the dataset's images)
        "outputs_setting": model.outputs_setting,
        "device": model.device_setting,
        "preprocess": model.preprocess.config(),
        "n_classes": model.n_outputs,
        "target": info["target"],
    }
    with tracker.run(exp_id, schema.TRAIN_RUN, tags=tags) as run_id:
        tracker.log(run_id, params=params)
        ctx.record_config(run_id)
        if recorded.flavoured(fmt):
            tracker.log_model_folder(run_id, str(folder), MODEL_DIR, _logged_name(model))
        elif model.file:
            tracker.log_artifact(run_id, model.file, MODEL_DIR)
        tracker.log_dict(run_id, info, f"{MODEL_DIR}/model_info.json")
    ctx.train_run_id, ctx.train_exp_id = run_id, exp_id
    if recorded.flavoured(fmt):
        ctx.model = _load_recorded(ctx, folder, model.sha256, model)
    how = f"as an MLflow model ({fmt})" if recorded.flavoured(fmt) else "(not trained)"
    print(f"[train] {model.source} model {model.display_name} recorded {how}: run {run_id} in "
          f"'{ctx.experiment_name(schema.TRAIN)}'")
    return run_id


def _logged_name(model: ImageModel) -> str:
    """The logged model's name: the display name, unless it is the run's folder name (``model.onnx``'s stem), which
    MLflow 3.17 would then list twice and resolve through the process-wide tracking URI."""
    name = model.display_name
    return f"{name}-{model.source}" if name == MODEL_DIR else name


def ensure(ctx: Any) -> ImageModel:
    """The model evaluation and saliency use, linked to the train run that recorded the same file
    (``train_run_id``, else the latest FINISHED one with this config and SHA-256): the MLflow model that run stored,
    or, for runs recorded as a file (before flavours) and MAITE models, the config's file or factory as before. With
    ``train_run_id`` and a stored MLflow model, the config's file may be gone (reproduction from the store alone)."""
    from xaitk_exp.models.recorded import flavoured, source_digest
    from xaitk_exp.settings.nodes import to_dict

    if isinstance(ctx.model, ImageModel) and ctx.train_run_id:
        return ctx.model
    node = to_dict(ctx.cfg.model)
    _refuse_sanity(ctx, node)
    built = ctx.model if isinstance(ctx.model, ImageModel) else None
    digest = built.sha256 if built is not None else source_digest(node)
    if ctx.settings.train_run_id:
        run = ctx.get_run_in(ctx.settings.train_run_id, "train_run_id", ctx.experiment_name(schema.TRAIN))
        recorded = run.data.tags.get(schema.MODEL_SHA256)
        if digest is None and not flavoured(run.data.tags.get(schema.MODEL_FORMAT)):
            built = build(ctx)
            digest = built.sha256
        if digest is not None and recorded != digest:
            raise ConfigError(
                "train_run_id", ctx.settings.train_run_id,
                f"a train run that recorded this model (it recorded sha256 {str(recorded)[:12]}..., the file now "
                f"has {digest[:12]}...)",
            )
    else:
        if digest is None:
            built = build(ctx)
            digest = built.sha256
        run = ctx.find_latest(schema.TRAIN, "train", f"tags.{schema.MODEL_SHA256} = '{digest}'")
        if run is None:
            raise TrackingError(
                f"no FINISHED run in '{ctx.experiment_name(schema.TRAIN)}' recorded this model and dataset config in "
                f"{ctx.tracker.display_uri}; run stage=train first (it records the model), or pass train_run_id=<id>"
            )
    model = _recorded_model(ctx, run)
    if model is None:
        model = built or build(ctx)
        check(ctx, model)
    ctx.model = model
    ctx.train_run_id, ctx.train_exp_id = run.info.run_id, run.info.experiment_id
    return model


def _local_folder(ctx: Any, key: str) -> Path:
    """Where a job keeps a model's MLflow folder (worker processes load it from there): ``<output_dir>/models/``."""
    import shutil

    folder = Path(ctx.output_dir, "models", key, MODEL_DIR)
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    return folder


def _recorded_model(ctx: Any, run: Any) -> ImageModel | None:
    """The MLflow model train run ``run`` stored, downloaded and loaded; None when it stored none (a file record
    made before flavours, a MAITE model)."""
    from xaitk_exp.models.recorded import flavoured

    if not flavoured(run.data.tags.get(schema.MODEL_FORMAT)):
        return None
    folder = _local_folder(ctx, run.info.run_id)
    try:
        ctx.tracker.download(run.info.run_id, MODEL_DIR, str(folder.parent))
    except Exception as exc:
        raise TrackingError(
            f"train run {run.info.run_id} has no readable {MODEL_DIR}/ folder in {ctx.tracker.display_uri} "
            f"({type(exc).__name__}); record the model again with stage=train force=true"
        ) from exc
    return _load_recorded(ctx, folder, run.data.tags.get(schema.MODEL_SHA256, ""), None)


def _load_recorded(ctx: Any, folder: Path, sha256: str, original: ImageModel | None) -> ImageModel:
    """The :class:`ImageModel` of a stored MLflow model folder. With ``original`` (the model it was saved from), its
    outputs on a few test images must equal the original's: what is recorded is what ran."""
    from xaitk_exp.models.recorded import load
    from xaitk_exp.settings.nodes import to_dict

    node = to_dict(ctx.cfg.model)
    name = original.display_name if original is not None else display_name(node)
    model = load(folder, node, sha256, name, ctx.extra_allowed)
    check(ctx, model)
    if original is not None:
        images = np.asarray(ctx.split.test_images[:3] if len(ctx.split.test_images) else
                            np.zeros((1, *ctx.split.image_shape)), dtype=np.float32)
        a, b = original.scores(images), model.scores(images)
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-4, atol=1e-5):
            raise TrackingError(
                f"the MLflow model recorded from {original.file} gives other outputs than the file itself "
                f"(max |difference| {float(np.max(np.abs(a - b))) if a.shape == b.shape else 'shape'}); "
                "please report it with the model"
            )
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
                out[schema.GT_CLASS] = self.dataset_names[int(raw_label)]
            else:
                out[schema.GT_CLASS] = self.labels[int(self.truth[k])]
                out[schema.GT_LABEL] = self.names[int(self.truth[k])]
        out[schema.PREDICTED_CLASS] = self.labels[top]
        if self.names is not None:
            out[schema.PREDICTED_LABEL] = self.names[top]
        return out

    def metrics(self, probs: np.ndarray) -> dict[str, float]:
        """``Predicted_class_conf`` and ``Class_<c>_conf`` for every class up to 20, else the 5 most confident."""
        top = int(np.argmax(probs))
        out = {schema.PREDICTED_CLASS_CONF: float(probs[top])}
        for c in top_classes(probs, self.n_metric):
            out[schema.class_conf(self.labels[c])] = float(probs[c])
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

"""``task=classification``: a model returns one score per class for each image (scikit-learn's ``predict_proba``, an
image model's probabilities); an evaluation records the predicted class and its confidence per image, and the
accuracy and a confusion matrix per split; every xaitk-saliency image-classifier generator applies, and every
quality metric of ``metrics/names.py``."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xaitk_exp import schema
from xaitk_exp.errors import ConfigError
from xaitk_exp.metrics.names import METRICS
from xaitk_exp.tasks.base import Task


def label_name(c: object, names: list[str]) -> str:
    """A class as users see it: the dataset's class name for an integer label, else the label itself."""
    if isinstance(c, (int, np.integer)) and 0 <= int(c) < len(names):
        return names[int(c)]
    return str(c)


def confusion(truth: np.ndarray, predicted: np.ndarray, classes: list[Any]) -> np.ndarray:
    """``[true, predicted]`` counts over ``classes`` (a truth outside them is not counted)."""
    index = {c: i for i, c in enumerate(classes)}
    m = np.zeros((len(classes), len(classes)), dtype=int)
    for t, p in zip(truth, predicted, strict=True):
        if t in index:
            m[index[t], index[p]] += 1
    return m


class ClassificationRecords:
    """One evaluation's class scores on the whole split and what they make of each run."""

    def __init__(self, split: Any, model: Any, split_name: str, blackbox: Any,
                 rows: Sequence[int] | None = None) -> None:
        from xaitk_exp.models.blackbox import predict_rows
        from xaitk_exp.models.pipeline import class_view

        images = split.images(split_name)
        self.n_split = len(images)
        self.raw_labels = split.labels(split_name)
        # the whole split, for the summary; or a shard's rows (NaN elsewhere); chunked either way
        self.probs = blackbox.predict(images) if rows is None else predict_rows(blackbox, images, rows)
        names = [str(c) for c in split.class_names]
        # tags and metrics per class: image models tag indices (names in *_label), top 5 above 20 classes
        self.view = class_view(split, model, split_name, [label_name(c, names) for c in blackbox.get_labels()])
        self.predicted = np.asarray(blackbox.get_labels())[self.probs.argmax(axis=1)]
        self.classes = list(model.classes_)

    def image(self, k: int) -> tuple[dict[str, Any], dict[str, float]]:
        return self.view.tags(k, self.probs[k], self.raw_labels[k]), self.view.metrics(self.probs[k])

    def headline(self, k: int) -> tuple[str, float, str]:
        tags = self.view.tags(k, self.probs[k], self.raw_labels[k])
        predicted = str(tags.get(schema.PREDICTED_LABEL) or tags[schema.PREDICTED_CLASS])
        truth = str(tags.get(schema.GT_LABEL) or tags.get(schema.GT_CLASS) or "unknown")
        return predicted, float(self.probs[k].max()), truth

    def log_image(self, tracker: Any, run_id: str, k: int) -> None:
        """No artifacts per image run: its tags and metrics say it all."""

    def summary(self, n: int) -> dict[str, float]:
        out: dict[str, float] = {
            schema.MEAN_PREDICTED_CLASS_CONF: float(self.probs.max(axis=1).mean()),
            schema.EVALUATED_IMAGES: n,
            schema.SPLIT_IMAGES: self.n_split,
        }
        truth = self.view.truth
        if truth is not None:  # a folder without class sub-folders has no ground truth: no accuracy
            out[schema.ACCURACY] = float(np.mean(self.predicted == truth))
            out[schema.ACCURACY_EVALUATED] = float(np.mean(self.predicted[:n] == truth[:n]))
        return out

    def log_artifacts(self, tracker: Any, run_id: str, title: str) -> None:
        if not self.view.show_confusion:  # with ground truth, and at most 20 classes for an image model
            return
        from xaitk_exp.viz.figures import confusion_figure

        assert self.view.truth is not None
        matrix = confusion(self.view.truth, self.predicted, self.classes)
        with tempfile.TemporaryDirectory() as tmp:
            figure = Path(tmp, schema.CONFUSION_FIGURE)
            confusion_figure(matrix, self.view.labels, figure, title)
            tracker.log_artifact(run_id, str(figure))
        tracker.log_dict(run_id, {"labels": self.view.labels, "matrix": matrix.tolist()}, schema.CONFUSION_TABLE)

    def outcome(self, split_name: str) -> str:
        if self.view.truth is None:
            return "no ground truth"
        return f"accuracy on {split_name}: {np.mean(self.predicted == self.view.truth):.3f}"


class Classification(Task):
    name = "classification"
    generator_interface = (
        "xaitk_saliency.interfaces.gen_image_classifier_blackbox_sal.GenerateImageClassifierBlackboxSaliency"
    )
    quality_metrics = METRICS
    order_by = f"metrics.{schema.PREDICTED_CLASS_CONF} DESC"

    def check_model(self, model: Any, key: str = "model") -> None:
        from xaitk_exp.models.image_model import ImageModel

        if getattr(model, "task", self.name) != self.name:  # a detector (models/detector.py)
            raise ConfigError("task", self.name, f"{model.task}: model={model.source} answers with detections")
        if not isinstance(model, ImageModel) and not hasattr(model, "predict_proba"):
            kind = f"{type(model).__module__}.{type(model).__name__}"
            raise ConfigError(key, kind, "a classifier with predict_proba (class scores) for task=classification")

    def blackbox(self, model: Any, chunk_size: int) -> Any:
        from xaitk_exp.models.blackbox import blackbox_for

        return blackbox_for(model, chunk_size)

    def evaluation(self, split: Any, model: Any, split_name: str, blackbox: Any,
                   rows: Sequence[int] | None = None) -> ClassificationRecords:
        return ClassificationRecords(split, model, split_name, blackbox, rows)

    def output_labels(self, model: Any, class_names: Sequence[str]) -> list[str]:
        from xaitk_exp.models.pipeline import display_labels

        names = [str(c) for c in class_names]
        return display_labels(model, [label_name(c, names) for c in model.classes_])  # image models: class indices

    def output_names(self, model: Any) -> list[str] | None:
        from xaitk_exp.models.image_model import ImageModel

        return list(model.class_names) if isinstance(model, ImageModel) else None

    def explained_outputs(self, blackbox: Any, image: Any, top_k: int | None) -> tuple[Any, list[int] | None]:
        from xaitk_exp.models.pipeline import restrict_to_top

        return restrict_to_top(blackbox, image, top_k)


TASK = Classification()

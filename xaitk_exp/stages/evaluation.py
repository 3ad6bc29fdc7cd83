"""Evaluation: one run per image in ``<Model> - Evaluation``, under a summary run for the split."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from xaitk_exp.stages.context import Context
from xaitk_exp.stages.upstream import ensure_model


def run_evaluation(ctx: Context) -> str:
    from tqdm import tqdm

    from xaitk_exp.models.blackbox import blackbox_for
    from xaitk_exp.models.pipeline import class_view
    from xaitk_exp.render import confusion_figure

    cfg, tracker, split = ctx.cfg, ctx.tracker, ctx.split
    model = ensure_model(ctx)
    ctx.check_image_shape(model)
    if not cfg.force:
        flt = f"tags.Run_type = 'summary' and tags.Train_run_id = '{ctx.train_run_id or ''}'"
        previous = ctx.find_latest("Evaluation", "evaluation", flt)
        if previous is not None:
            ctx.evaluation_run_id = previous.info.run_id
            print(f"[evaluation] reusing run {previous.info.run_id} (same config; force=true reruns)")
            return previous.info.run_id
    split_name = str(cfg.evaluation.split)
    images, labels = split.images(split_name), split.labels(split_name)
    n = min(int(cfg.evaluation.num_images), len(images))
    blackbox = blackbox_for(model, int(cfg.chunk_size))
    probs = blackbox.predict(images)  # the whole split, for the summary; chunked
    names = [str(c) for c in split.class_names]
    class_labels = [label_name(c, names) for c in blackbox.get_labels()]
    # tags and metrics per class: image models tag indices (names in *_label), top 5 above 20 classes, no ground truth
    view = class_view(split, model, split_name, class_labels)
    class_labels = view.labels
    exp_id = tracker.experiment(ctx.experiment_name("Evaluation"))
    base_tags = {
        "Dataset": ctx.dataset_name,
        "Datasplit": split_name,
        "Train_exp_id": ctx.train_exp_id or "",
        "Train_run_id": ctx.train_run_id or "",
    }
    summary_tags = {**base_tags, "Run_type": "summary", **ctx.provenance_tags("evaluation")}
    with tracker.run(exp_id, f"Evaluation_{split_name}_summary", tags=summary_tags) as parent:
        ctx.record_config(parent)

        def image_runs():  # (run name, tags, metrics) per image, made as the tracker asks for them
            for k in tqdm(range(n), desc="evaluation runs", unit="img", disable=not cfg.progress):
                tags = {**base_tags, "Run_type": "image", "Image_id": k, **view.tags(k, probs[k], labels[k])}
                if split.test_paths is not None and split_name == "test":
                    tags["Image_path"] = split.test_paths[k]
                metrics = view.metrics(probs[k])
                yield f"ImageID-{k}_conf", tags, metrics

        # one run per image, few store calls each; with n_jobs > 1 the low level spreads them over processes
        tracker.log_runs(exp_id, image_runs(), parent_run_id=parent, processes=ctx.processes)
        predicted = np.asarray(blackbox.get_labels())[probs.argmax(axis=1)]
        truth = view.truth
        top_conf = probs.max(axis=1)
        summary = {
            "Mean_predicted_class_conf": float(top_conf.mean()), "Evaluated_images": n, "Split_images": len(images)
        }
        if truth is not None:  # a folder without class sub-folders has no ground truth: no accuracy
            summary["Accuracy"] = float(np.mean(predicted == truth))
            summary["Accuracy_evaluated"] = float(np.mean(predicted[:n] == truth[:n]))
        tracker.log(parent, metrics=summary)
        if view.show_confusion:  # with ground truth, and at most 20 classes for an image model
            matrix = _confusion(truth, predicted, list(model.classes_))
            with tempfile.TemporaryDirectory() as tmp:
                confusion_figure(matrix, class_labels, Path(tmp, "confusion_matrix.png"), f"{split_name} split, {len(images)} images")
                tracker.log_artifact(parent, str(Path(tmp, "confusion_matrix.png")))
            tracker.log_dict(parent, {"labels": class_labels, "matrix": matrix.tolist()}, "confusion_matrix.json")
    ctx.evaluation_run_id = parent
    accuracy = f"accuracy on {split_name}: {np.mean(predicted == truth):.3f}" if truth is not None else "no ground truth"
    print(f"[evaluation] {n} image runs + summary {parent} in '{ctx.experiment_name('Evaluation')}' ({accuracy})")
    return parent


def label_name(c: object, names: list[str]) -> str:
    """A class as users see it: the dataset's class name for an integer label, else the label itself."""
    if isinstance(c, (int, np.integer)) and 0 <= int(c) < len(names):
        return names[int(c)]
    return str(c)


def _confusion(truth: np.ndarray, predicted: np.ndarray, classes: list) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    m = np.zeros((len(classes), len(classes)), dtype=int)
    for t, p in zip(truth, predicted, strict=True):
        if t in index:
            m[index[t], index[p]] += 1
    return m

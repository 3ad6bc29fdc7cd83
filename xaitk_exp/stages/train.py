"""Train: fit the estimator, record its parameters, loss curve and the model, in ``<Model> - Train``."""

from __future__ import annotations

import warnings
from typing import Any

from xaitk_exp import schema
from xaitk_exp.models.sklearn import check_fit_memory
from xaitk_exp.models.sources import is_image_model
from xaitk_exp.stages.context import Context
from xaitk_exp.stages.describe import print_where, recorded_model_note, train_note
from xaitk_exp.stages.lineage import record_trained_model, split_dataset
from xaitk_exp.tracking.model_io import load_model


def run_train(ctx: Context) -> str | None:
    if is_image_model(ctx.cfg.model):  # model=onnx|torch|maite: recorded with its hash, not trained
        from xaitk_exp.models.pipeline import record

        run_id = record(ctx)  # the logged model (none for MAITE, or a run recorded before flavours)
        record_trained_model(ctx, run_id, ctx.tracker.logged_model_of(run_id))
        run = ctx.tracker.get_run(run_id)
        if not run.data.tags.get(schema.NOTE):  # also a run recorded before descriptions
            ctx.tracker.log(run_id, tags={schema.NOTE: recorded_model_note(ctx, run.data.tags)})
        print_where(ctx, "train", run.info.experiment_id, [run_id])
        return run_id
    if ctx.pretrained_uri:
        ctx.load_pretrained()
        print(f"[train] model=pretrained: using {ctx.pretrained_uri}, nothing to train")
        return None
    split = ctx.split
    model = ctx.build_model()
    ctx.model = model
    if not ctx.settings.force:
        previous = ctx.find_latest(schema.TRAIN, "train")
        if previous is not None and _reuse(ctx, previous):
            return ctx.train_run_id
    X = split.train_images.reshape(len(split.train_images), -1)
    check_fit_memory(model, X.shape[1], len(set(split.train_labels.tolist())))  # before the run opens
    tracker = ctx.tracker
    exp_id = tracker.experiment(ctx.experiment_name(schema.TRAIN), framework=ctx.framework)
    tags = {schema.DATASET: ctx.dataset_name, **ctx.provenance_tags("train"), schema.NOTE: train_note(ctx, len(X))}
    with tracker.run(exp_id, schema.TRAIN_RUN, tags=tags) as run_id:
        tracker.log(run_id, params=_params(model))
        tracker.log_dataset(run_id, split_dataset(ctx, "train"), "train")
        ctx.record_config(run_id)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(X, split.train_labels)
        if any(str(w.message) == "Training interrupted by user." for w in caught):
            # scikit-learn's MLP swallows Ctrl-C and returns a half-trained model: the run must end KILLED
            raise KeyboardInterrupt
        if caught:
            tracker.log(run_id, tags={"fit_warnings": "; ".join(sorted({str(w.message)[:200] for w in caught}))})
        if hasattr(model, "loss_curve_"):
            tracker.log_metric_history(run_id, schema.TRAIN_LOSS, list(model.loss_curve_))
        tracker.log(run_id, metrics={schema.TRAIN_ACCURACY: float(model.score(X, split.train_labels))})
        model_id = tracker.log_model(run_id, model, X[:2])
        record_trained_model(ctx, run_id, model_id)
    ctx.train_run_id, ctx.train_exp_id = run_id, exp_id
    print(f"[train] {type(model).__name__} on {ctx.dataset_name}: run {run_id} in '{ctx.experiment_name(schema.TRAIN)}'")
    print_where(ctx, "train", exp_id, [run_id])
    return run_id


def _reuse(ctx: Context, run: Any) -> bool:
    """Load the model of a FINISHED train run with the same config hash instead of training again."""
    uri = f"runs:/{run.info.run_id}/{schema.MODEL_DIR}"
    ctx.model = load_model(uri, ctx.tracker.uri)
    ctx.train_run_id, ctx.train_exp_id = run.info.run_id, run.info.experiment_id
    print(f"[train] reusing run {run.info.run_id} (same config; force=true retrains)")
    record_trained_model(ctx, run.info.run_id, ctx.tracker.logged_model_of(run.info.run_id))
    print_where(ctx, "train", run.info.experiment_id, [run.info.run_id])
    return True


def _params(model: Any) -> dict[str, Any]:
    """``get_params()`` with nested estimators named by class (what ran, as MLflow string params)."""
    out = {}
    for k, v in model.get_params(deep=False).items():
        out[k] = type(v).__name__ if hasattr(v, "get_params") else v
    return out

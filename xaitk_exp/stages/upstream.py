"""Find the runs a stage builds on: the trained model for evaluation, the evaluation for saliency."""

from __future__ import annotations

from typing import Any

from xaitk_exp import schema
from xaitk_exp.errors import TrackingError
from xaitk_exp.models.sources import is_image_model
from xaitk_exp.stages.context import Context
from xaitk_exp.tracking.model_io import load_model


def ensure_model(ctx: Context) -> Any:
    """The model to evaluate or explain: in memory after train, else ``train_run_id``, else the latest FINISHED
    train run with this model and dataset config, else ``model.uri`` for ``model=pretrained``."""
    if is_image_model(ctx.cfg.model):  # model=onnx|torch|maite: the config's file, linked to its train run
        from xaitk_exp.models.pipeline import ensure

        return ensure(ctx)
    if ctx.model is not None and (ctx.train_run_id or ctx.pretrained_uri):
        return ctx.model
    if ctx.pretrained_uri:
        return ctx.load_pretrained()
    if ctx.settings.train_run_id:
        run = ctx.get_run_in(ctx.settings.train_run_id, "train_run_id", ctx.experiment_name(schema.TRAIN))
    else:
        run = ctx.find_latest(schema.TRAIN, "train")
        if run is None:
            raise TrackingError(
                f"no FINISHED run in '{ctx.experiment_name(schema.TRAIN)}' matches this model and dataset config in "
                f"{ctx.tracker.display_uri}; run stage=train first, or pass train_run_id=<id>"
            )
    ctx.model = load_model(f"runs:/{run.info.run_id}/{schema.MODEL_DIR}", ctx.tracker.uri)
    ctx.train_run_id, ctx.train_exp_id = run.info.run_id, run.info.experiment_id
    return ctx.model


def ensure_evaluation(ctx: Context) -> Any:
    """The evaluation summary run whose image runs the saliency query searches."""
    if ctx.evaluation_run_id:
        return ctx.tracker.get_run(ctx.evaluation_run_id)
    name = ctx.experiment_name(schema.EVALUATION)
    if ctx.settings.evaluation_run_id:
        run = ctx.get_run_in(ctx.settings.evaluation_run_id, "evaluation_run_id", name)
        if run.data.tags.get(schema.RUN_TYPE) != "summary":  # an image run: its summary
            parent = summary_of(run)
            run = ctx.tracker.get_run(parent) if parent else run
    else:
        flt = f"tags.{schema.RUN_TYPE} = 'summary'"
        if ctx.train_run_id:
            flt += f" and tags.{schema.TRAIN_RUN_ID} = '{ctx.train_run_id}'"
        run = ctx.find_latest(schema.EVALUATION, "evaluation", flt)
        if run is None:
            raise TrackingError(
                f"no FINISHED evaluation in '{name}' matches this config in {ctx.tracker.display_uri}; "
                "run stage=evaluation first, or pass evaluation_run_id=<id>"
            )
    ctx.evaluation_run_id = run.info.run_id
    return run


#: how an image run names its evaluation summary: by tag, or (stores written before) as its MLflow parent
IMAGE_RUN_LINKS = (schema.EVALUATION_SUMMARY_RUN_ID, schema.PARENT_RUN_ID)


def summary_of(image_run: Any) -> str | None:
    """The evaluation summary run an image run belongs to, in either layout."""
    tags = image_run.data.tags
    return next((tags[link] for link in IMAGE_RUN_LINKS if tags.get(link)), None)


def image_runs_filters(summary_run_id: str) -> list[str]:
    """Filter strings selecting a summary's image runs, the current layout first (MLflow filters have no OR: a
    reader tries them in turn; one summary's runs are all written in one layout)."""
    return [f"tags.`{link}` = '{summary_run_id}'" for link in IMAGE_RUN_LINKS]

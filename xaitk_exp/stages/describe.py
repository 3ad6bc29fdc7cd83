"""What a person reads about a run: its description (MLflow's run note, Markdown) and where to find it in the UI.

Descriptions say what the run is (model, dataset, algorithm, image) and link the runs it builds on, so that runs
with the seed's shared names (``train_info``, ``ImageID-8_saliency_maps``) can be told apart in the UI.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from xaitk_exp import schema
from xaitk_exp.stages.context import Context
from xaitk_exp.tracking.ui import run_url, runs_table_url, ui_command


def run_link(label: str, experiment_id: str | None, run_id: str | None) -> str:
    """A Markdown link to a run's page, relative to the UI that shows the note (works on any host and port)."""
    if not run_id:
        return label
    return f"[{label}](#/experiments/{experiment_id}/runs/{run_id})" if experiment_id else f"{label} `{run_id}`"


def train_note(ctx: Context, n_images: int) -> str:
    shape = "x".join(str(d) for d in ctx.split.image_shape)
    return (
        f"**{ctx.model_class}** trained on **{ctx.dataset_name}** ({n_images} images of {shape}).  \n"
        f"Config hash `{ctx.hash_for('train')}`: evaluations with the same model and dataset config reuse this run."
    )


def recorded_model_note(ctx: Context, tags: Mapping[str, str]) -> str:
    """A model from a file or a factory (ONNX, PyTorch, MAITE): recorded, not trained here."""
    source = tags.get("Model_source", "model")
    stored = tags.get(schema.MODEL_FORMAT, "")
    return (
        f"**{ctx.model_class}**, a {source} model recorded as it is (not trained here), for **{ctx.dataset_name}**.  \n"
        f"SHA-256 `{tags.get(schema.MODEL_SHA256, '?')}`; stored as `{stored or 'its config'}` in "
        f"`{schema.IMAGE_MODEL_DIR}/`. Config hash `{ctx.hash_for('train')}`: evaluations of the same model file and "
        "config reuse this run."
    )


def evaluation_summary_note(
    ctx: Context, split: str, n_runs: int, n_split: int, experiment_id: str, run_id: str
) -> str:
    flt = f"tags.{schema.EVALUATION_SUMMARY_RUN_ID} = '{run_id}'"
    link = f"#/experiments/{experiment_id}/runs?searchFilter={quote(flt, safe=chr(39) + '=')}"  # ' and = kept
    images = f"[{n_runs} image runs]({link})"
    return (
        f"Evaluation of **{ctx.model_class}** on **{ctx.dataset_name}** / {split}: {images} (tagged "
        f"`{flt}`); its metrics cover all {n_split} images of the split.  \n"
        f"Model: {run_link('train run', ctx.train_exp_id, ctx.train_run_id)}."
    )


def evaluation_image_note(
    ctx: Context, split: str, image_id: int, predicted: str, conf: float, truth: str,
    summary: tuple[str, str] | None = None,
) -> str:
    """``summary``: (experiment id, run id) of the evaluation summary the image run belongs to."""
    part_of = f"  \nPart of {run_link('the evaluation summary', *summary)}." if summary else ""
    return (
        f"Image {image_id} of **{ctx.dataset_name}** / {split}: predicted **{predicted}** ({conf:.3f}), "
        f"ground truth {truth}; model **{ctx.model_class}** ({run_link('train run', ctx.train_exp_id, ctx.train_run_id)})."
        + part_of
    )


def saliency_note(
    ctx: Context, algorithm: str, image_id: int | str, evaluation: Mapping[str, Any], predicted: str
) -> str:
    tags = evaluation.get("tags") or {}
    conf = evaluation.get("conf")
    conf_text = f" ({float(conf):.3f})" if isinstance(conf, (int, float)) else ""
    return (
        f"**{algorithm}** saliency maps of image {image_id} of **{ctx.dataset_name}** / "
        f"{tags.get(schema.DATASPLIT, 'test')}, for **{ctx.model_class}**: predicted **{predicted}**{conf_text}, "
        f"ground truth {tags.get(schema.GT_CLASS, '?')}.  \n"
        f"From {run_link('evaluation run', str(evaluation.get('experiment_id')), str(evaluation.get('run_id')))} "
        f"of {run_link('train run', ctx.train_exp_id, ctx.train_run_id)}."
    )


def print_where(
    ctx: Context,
    stage: str,
    experiment_id: str,
    run_ids: list[str],
    search_filter: str | None = None,
    order_by: str | None = None,
) -> None:
    """After a stage: the runs table (with the query as ``searchFilter``) and, for one run, its page."""
    uri = ctx.tracker.uri
    table = runs_table_url(uri, experiment_id, search_filter, order_by)
    if table is None:
        return
    print(f"[{stage}] runs table: {table}")
    if len(run_ids) == 1:
        print(f"[{stage}] run: {run_url(uri, experiment_id, run_ids[0])}")


def print_ui_hint(uri: str) -> None:
    """How to open the UI on a local store, runnable as typed (the links above assume its port)."""
    command = ui_command(uri)
    if command:
        print(f"View the runs: {command}   (then open the links above)")

"""What the stages record as lineage MLflow shows by itself: the data a run used (dataset inputs), the trained
model as a logged model and, on ``model.register``, a registered version; the evaluation's link to that model.

Everything goes through the tracker (stages never call ``mlflow``). State shared between stages lives in
``ctx.results`` under :data:`LOGGED_MODEL_ID` and :data:`MODEL_REF`.
"""

from __future__ import annotations

from typing import Any

from xaitk_exp import schema
from xaitk_exp.stages.context import LOGGED_MODEL_ID, MODEL_REF, Context
from xaitk_exp.tracking.lineage import DatasetRecord, ModelRef


def dataset_source(node: Any) -> tuple[str, str]:
    """(source type, source) of a dataset config, as its registered kind says (:mod:`xaitk_exp.data.registry`): its
    folder for image folders, the OpenML page for OpenML, the file scikit-learn ships for digits, else the loader's
    class."""
    from xaitk_exp.data.registry import dataset_source as source_of
    from xaitk_exp.settings.nodes import to_dict

    return source_of(to_dict(node))


def split_dataset(ctx: Context, split_name: str) -> DatasetRecord:
    """The dataset input of one split: the job's dataset name, digest ``data_fingerprint`` (the whole split),
    and the split's images and labels for the schema and shapes MLflow shows."""
    split = ctx.split
    source_type, source = dataset_source(ctx.cfg.dataset)
    return DatasetRecord(
        name=ctx.dataset_name,
        digest=split.fingerprint(),
        source_type=source_type,
        source=source,
        features=split.images(split_name),
        targets=split.labels(split_name),
    )


def record_trained_model(ctx: Context, run_id: str, model_id: str | None) -> None:
    """After a train run (new or reused): remember its logged model and, with ``model.register``, register it as a
    version of that name (and point the alias at it); the train run gets ``Registered_model`` / ``Model_version``."""
    ctx.results[LOGGED_MODEL_ID] = model_id
    register = ctx.settings.register
    if register is None:
        return
    name, alias = register
    if model_id is None:
        from xaitk_exp.errors import TrackingError

        raise TrackingError(
            f"model.register={ctx.cfg.model.get('register')!r}: train run {run_id} has no MLflow logged model to "
            "register (it was recorded before logged models were); rerun it with force=true"
        )
    ref = ctx.tracker.register_model(model_id, run_id, name, alias)
    ctx.results[MODEL_REF] = ref
    ctx.tracker.log(run_id, tags={schema.REGISTERED_MODEL: ref.name, schema.MODEL_VERSION: ref.version})
    where = f"@{alias} -> " if alias else ""
    print(f"[train] registered as '{name}' {where}version {ref.version} (model.uri=models:/{name}/{ref.version})")


def evaluated_model(ctx: Context) -> tuple[str | None, dict[str, str]]:
    """The logged model the evaluation uses (None for a train run recorded without one) and the tags naming the
    registered version it came from, if any."""
    ref: ModelRef | None = ctx.results.get(MODEL_REF)
    model_id = ctx.results.get(LOGGED_MODEL_ID) or (ref.model_id if ref else None)
    if model_id is None and ctx.train_run_id:
        model_id = ctx.tracker.logged_model_of(ctx.train_run_id)
    tags = {schema.REGISTERED_MODEL: str(ref.name), schema.MODEL_VERSION: ref.version} if ref and ref.version else {}
    return model_id, tags

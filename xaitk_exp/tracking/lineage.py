"""Lineage that MLflow itself shows: dataset inputs, MLflow 3 logged models, registered model versions.

The pieces every logging level shares: what a dataset input is made of, how a logged model's folder and metrics
are linked to its run (what ``mlflow.<flavor>.log_model`` does, redone for the levels that do not call it), and
reading ``models:/`` URIs back with errors that say what exists. Each level writes them with its own API
(:mod:`.high`, :mod:`.mid`, :mod:`.low`). ``mlflow`` is imported inside the functions only.
"""

from __future__ import annotations

import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xaitk_exp.errors import ConfigError


@dataclass(frozen=True)
class DatasetRecord:
    """The data a run used, as an MLflow dataset input: ``name``, ``digest`` (the run's ``data_fingerprint``),
    where it came from (``source_type`` ``local``, ``http`` or ``code``; ``source`` a file URI, a URL or the loader's
    class) and the arrays whose
    schema and shape MLflow records (never their contents)."""

    name: str
    digest: str
    source_type: str
    source: str
    features: Any
    targets: Any

    def to_mlflow(self) -> Any:
        """An ``mlflow.data`` numpy dataset (what ``mlflow.log_input`` takes); the digest is ours, not recomputed."""
        from mlflow.data.code_dataset_source import CodeDatasetSource
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.numpy_dataset import from_numpy

        if self.source_type == "code":
            source: Any = CodeDatasetSource({"mlflow.source.name": self.source})
        else:
            with warnings.catch_warnings():
                # MLflow 3.17 registers its local-file source twice and warns that a file URI is ambiguous
                warnings.filterwarnings("ignore", "The specified dataset source can be interpreted in multiple ways")
                source = resolve_dataset_source(self.source)
        return from_numpy(
            self.features, source=source, targets=self.targets, name=self.name, digest=self.digest
        )

    def to_input(self, context: str) -> Any:
        """The ``DatasetInput`` entity ``MlflowClient.log_inputs`` takes, with ``context`` as MLflow's context tag."""
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        return DatasetInput(self.to_mlflow()._to_mlflow_entity(), [InputTag(MLFLOW_DATASET_CONTEXT, context)])


@dataclass(frozen=True)
class ModelRef:
    """What a ``models:/`` URI names: a registered model version (``name``, ``version``) or a logged model alone."""

    name: str | None
    version: str | None
    run_id: str | None
    model_id: str | None


# ----- logged models: what the flavour's log_model does besides writing files ------------------------------------------
def logged_model_folder(saved_dir: str, target: Path, model: Any, run_id: str) -> Path:
    """A copy of a saved MLflow model folder whose ``MLmodel`` names the logged model (``model_id``, ``run_id``,
    ``artifact_path``), as the files ``mlflow.sklearn.log_model`` uploads do."""
    from mlflow.models import Model

    shutil.copytree(saved_dir, target)
    meta = Model.load(str(target / "MLmodel"))
    meta.model_id = meta.model_uuid = model.model_id
    meta.run_id = run_id
    meta.artifact_path = model.artifact_location
    meta.save(str(target / "MLmodel"))
    return target


def link_step_metrics(client: Any, run_id: str, model_id: str, step: int = 0) -> None:
    """The run's metrics at ``step`` logged again for the model (same values and times): the model's page lists
    them, and the run's own histories stay as they were. ``mlflow.<flavor>.log_model`` does this."""
    from mlflow.entities import Metric

    metrics = []
    for key in client.get_run(run_id).data.metrics:
        for m in client.get_metric_history(run_id, key):
            if m.step == step and m.model_id is None:
                metrics.append(Metric(m.key, m.value, m.timestamp, m.step, model_id=model_id,
                                      dataset_name=m.dataset_name, dataset_digest=m.dataset_digest, run_id=run_id))
    if metrics:
        client.log_batch(run_id, metrics=metrics, synchronous=True)


def logged_model_of_run(client: Any, experiment_id: str, run_id: str) -> str | None:
    """The id of the READY logged model that run ``run_id`` produced, if any (the latest)."""
    models = client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'", max_results=50)
    ready = [m for m in models if str(m.status) in ("READY", "LoggedModelStatus.READY")]
    ready.sort(key=lambda m: m.creation_timestamp or 0)
    return ready[-1].model_id if ready else None


def model_id_of_version(version: Any) -> str | None:
    """The logged model a registered version was made from (``models:/<model_id>`` source), if any."""
    if getattr(version, "model_id", None):
        return str(version.model_id)
    source = str(getattr(version, "source", "") or "").rstrip("/")
    match = re.fullmatch(r"models:/(m-[0-9a-f]+)", source) or re.search(r"/models/(m-[0-9a-f]+)/artifacts$", source)
    return match.group(1) if match else None


# ----- models:/ URIs ---------------------------------------------------------------------------------------------------
def resolve_model_uri(client: Any, uri: str, key: str = "model.uri") -> ModelRef | None:
    """What a ``models:/<name>/<version>``, ``models:/<name>@<alias>`` or ``models:/<model_id>`` URI names; None
    for other URIs (``runs:/``). An unknown name, version or alias is a :class:`ConfigError` listing what exists."""
    from mlflow.exceptions import MlflowException

    if not uri.startswith("models:/"):
        return None
    rest = uri[len("models:/"):].strip("/")
    if "@" in rest:
        name, _, alias = rest.partition("@")
        version = None
    else:
        name, _, version = rest.partition("/")
        alias = None
    if not version and alias is None and re.fullmatch(r"m-[0-9a-f]+", name):  # a logged model by id
        try:
            model = client.get_logged_model(name)
        except MlflowException:
            raise ConfigError(key, uri, "an existing logged model id (models:/m-...)") from None
        return ModelRef(None, None, model.source_run_id, model.model_id)
    try:
        registered = client.get_registered_model(name)
    except MlflowException:
        names = sorted(m.name for m in client.search_registered_models(max_results=100))
        raise ConfigError(
            key, uri, f"an existing registered model; registered models: {', '.join(names) or 'none'}"
        ) from None
    versions = sorted(
        (v for v in client.search_model_versions(f"name = '{_quote(name)}'", max_results=1000)),
        key=lambda v: int(v.version),
    )
    aliases = dict(getattr(registered, "aliases", None) or {})
    exists = (
        f"versions of '{name}': {', '.join(str(v.version) for v in versions) or 'none'}; aliases: "
        + (", ".join(f"@{a} -> {v}" for a, v in sorted(aliases.items())) or "none")
    )
    if alias is not None:
        if alias not in aliases:
            raise ConfigError(key, uri, f"an existing alias; {exists}")
        version = str(aliases[alias])
    elif version == "latest" and versions:
        version = str(versions[-1].version)
    found = next((v for v in versions if str(v.version) == version), None)
    if found is None:
        raise ConfigError(key, uri, f"an existing version; {exists}")
    return ModelRef(name, str(found.version), found.run_id, model_id_of_version(found))


def _quote(text: str) -> str:
    return text.replace("'", "\\'")

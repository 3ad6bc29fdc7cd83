"""The three logging levels leave equivalent records: ids and times aside, the stores are the same."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ID_TAGS = (
    "mlflow.parentRunId", "Train_run_id", "Train_exp_id", "Evaluation_run_id", "Evaluation_exp_id",
    "Evaluation_summary_run_id", "Sweep_run_id",
)


NOTE = "mlflow.note.content"
_RUN_ID = re.compile(r"[0-9a-f]{32}")
#: ``mlflow.log_image`` names files ``images/<key>+step+<n>+timestamp+<ms>+<uuid>...``: compare them without time and uuid
_IMAGE_STAMP = re.compile(r"\+timestamp\+\d+\+[0-9a-f-]+")


def _artifact_paths(client, run_id, path=None):
    out = []
    for f in client.list_artifacts(run_id, path):
        out.extend(_artifact_paths(client, run_id, f.path) if f.is_dir else [_IMAGE_STAMP.sub("", f.path)])
    return out


def _inputs(run, model_names):
    """A run's dataset inputs (everything MLflow keeps of them) and model inputs/outputs, models named by their run."""
    inputs, outputs = run.inputs, run.outputs
    datasets = sorted(
        (d.dataset.name, d.dataset.digest, d.dataset.source_type, d.dataset.source, d.dataset.schema,
         d.dataset.profile, tuple(sorted((t.key, t.value) for t in d.tags)))
        for d in (inputs.dataset_inputs if inputs else [])
    )
    models_in = sorted(model_names[m.model_id] for m in (inputs.model_inputs if inputs else []) or [])
    models_out = sorted((model_names[m.model_id], m.step) for m in (outputs.model_outputs if outputs else []) or [])
    return {"datasets": datasets, "model_inputs": models_in, "model_outputs": models_out}


def _logged_models(client, exps, names):
    """Every logged model, keyed by its name and source run, with what the UI shows of it."""
    out, model_names = {}, {}
    for m in client.search_logged_models(list(exps), max_results=1000):
        key = (m.name, names[m.source_run_id])
        assert key not in out, f"two logged models share {key}"
        model_names[m.model_id] = key
        files = sorted(a.path for a in client.list_logged_model_artifacts(m.model_id))
        out[key] = {
            "status": str(m.status), "params": dict(m.params), "tags": dict(m.tags), "files": files,
            "metrics": sorted((x.key, x.step, round(x.value, 12), x.dataset_name, x.dataset_digest, names[x.run_id])
                              for x in m.metrics or []),
        }
    return out, model_names


def _registry(client, names, model_names):
    out = {}
    for rm in client.search_registered_models():
        versions = client.search_model_versions(f"name = '{rm.name}'")
        out[rm.name] = {
            "aliases": dict(rm.aliases),
            "versions": sorted((str(v.version), names[v.run_id], str(v.status),
                                next((k for mid, k in model_names.items() if mid in v.source), None))
                               for v in versions),
        }
    return out


def snapshot(uri: str) -> dict:
    """Everything a user can query in a store, with run and experiment ids replaced by names."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exps = {e.experiment_id: e for e in client.search_experiments() if e.name != "Default"}
    runs = client.search_runs(list(exps), max_results=5000)
    names = {r.info.run_id: (exps[r.info.experiment_id].name, r.info.run_name) for r in runs}
    names.update({eid: e.name for eid, e in exps.items()})
    models, model_names = _logged_models(client, exps, names)
    record = {"experiments": {e.name: dict(e.tags) for e in exps.values()}, "runs": {}, "models": models,
              "registry": _registry(client, names, model_names)}
    for r in runs:
        tags = {k: names.get(v, v) if k in ID_TAGS else v for k, v in r.data.tags.items()}
        if NOTE in tags:  # a description links the runs it builds on by id
            tags[NOTE] = _RUN_ID.sub(lambda m: str(names.get(m.group(0), m.group(0))), tags[NOTE])
        history = {k: [(m.step, m.value) for m in client.get_metric_history(r.info.run_id, k)] for k in r.data.metrics}
        key = (exps[r.info.experiment_id].name, r.info.run_name, tags.get("Image_id"))
        assert key not in record["runs"], f"two runs share {key}"
        record["runs"][key] = {
            "status": r.info.status,
            "params": dict(r.data.params),
            "metrics": history,
            "tags": tags,
            # a logged model named like a run folder would be listed in it too: compare the set of paths
            "artifacts": sorted(set(_artifact_paths(client, r.info.run_id))),
            "inputs": _inputs(client.get_run(r.info.run_id), model_names),  # search_runs leaves model inputs out
        }
    return record


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    from xaitk_exp.app import compose_config, run

    out = {}
    for level in ("high", "mid", "low"):
        folder: Path = tmp_path_factory.mktemp(level)
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        overrides = [f"logging={level}", f"tracking.uri={uri}", "progress=false", "evaluation.num_images=8",
                     "query.max_results=2", "model.register=levels-mlp@champion"]
        run(compose_config(overrides), overrides, folder)
        out[level] = snapshot(uri)
    return out


def test_levels_write_the_same_experiments_and_runs(stores):
    high, mid, low = stores["high"], stores["mid"], stores["low"]
    assert high["experiments"] == mid["experiments"] == low["experiments"]
    assert set(high["runs"]) == set(mid["runs"]) == set(low["runs"])
    assert len(high["runs"]) == 1 + 1 + 8 + 2  # train, evaluation summary, 8 images, 2 saliency runs


@pytest.mark.parametrize("field", ["status", "params", "metrics", "tags", "artifacts", "inputs"])
def test_levels_agree_field_by_field(stores, field):
    for key in stores["mid"]["runs"]:
        values = {}
        for level in ("high", "mid", "low"):
            v = stores[level]["runs"][key][field]
            if field == "metrics":  # the values, not the wall-clock timestamps
                v = {k: [(s, round(x, 12)) for s, x in hist] for k, hist in v.items()}
            values[level] = v
        assert values["high"] == values["mid"] == values["low"], f"{field} differ for {key}"


def test_levels_leave_the_same_logged_models_and_registry(stores):
    """The train run's MLflow 3 logged model (files, params, tags, the metrics linked to it, the evaluation's among
    them) and the registered version are the same whichever API level wrote them."""
    high, mid, low = stores["high"], stores["mid"], stores["low"]
    assert list(high["models"]) == [("MLPClassifier", ("MLPClassifier - Train", "train_info"))]
    assert high["models"] == mid["models"] == low["models"]
    assert high["registry"] == mid["registry"] == low["registry"]
    assert high["registry"]["levels-mlp"]["aliases"] == {"champion": 1}


def test_every_run_finished(stores):
    for level, snap in stores.items():
        assert {r["status"] for r in snap["runs"].values()} == {"FINISHED"}, level


@pytest.mark.slow
def test_n_jobs_leaves_the_same_record(tmp_path_factory):
    """``n_jobs=2``: worker processes write evaluation runs (logging=low) and explain and record saliency runs;
    the store holds what ``n_jobs=1`` leaves, ids and times aside, and start times follow the image order."""
    from mlflow import MlflowClient

    from xaitk_exp.app import compose_config, run

    records, orders = {}, {}
    for n_jobs in (1, 2):
        folder: Path = tmp_path_factory.mktemp(f"jobs{n_jobs}")
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        overrides = ["logging=low", f"tracking.uri={uri}", "progress=false", "evaluation.num_images=120",
                     "query.max_results=6", "saliency=rise", "saliency.n=200", f"n_jobs={n_jobs}"]
        run(compose_config(overrides), overrides, folder)
        records[n_jobs] = snapshot(uri)
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("MLPClassifier - Evaluation")
        runs = client.search_runs([exp.experiment_id], "tags.Run_type = 'image'", max_results=1000,
                                  order_by=["attributes.start_time ASC"])
        orders[n_jobs] = [int(r.data.tags["Image_id"]) for r in runs]
    assert records[1] == records[2]
    assert orders[1] == orders[2] == list(range(120))
    statuses = {r["status"] for r in records[2]["runs"].values()}
    assert statuses == {"FINISHED"}

"""The task is a first-class setting: ``task`` is validated in one line, the classification task decides what a model
must return, which saliency generators and quality metrics apply, and the stages ask it rather than checking
``predict_proba`` themselves."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from xaitk_exp.errors import ConfigError
from xaitk_exp.settings.config import TASKS
from xaitk_exp.settings.metrics import MetricSettings
from xaitk_exp.tasks import Task, task_named, tasks

ROOT = Path(__file__).resolve().parents[2]
DRISE = ["saliency._target_=xaitk_saliency.impls.gen_object_detector_blackbox_sal.drise.DRISEStack",
         "saliency.name=drise"]


def test_the_settings_know_every_task_and_only_those():
    assert tuple(t.name for t in tasks()) == TASKS
    assert task_named("classification").name == "classification"


def test_an_unknown_task_is_refused_in_one_line_naming_the_key(make_cfg):
    from xaitk_exp.settings.validate import validate

    with pytest.raises(ConfigError) as err:
        validate(make_cfg("task=detection"))
    assert str(err.value) == "task='detection' is invalid: one of classification"
    with pytest.raises(ConfigError, match="^task='segmentation' is invalid"):
        task_named("segmentation")


@pytest.mark.parametrize("option", sorted(p.stem for p in (ROOT / "conf" / "saliency").glob("*.yaml")))
def test_every_shipped_saliency_option_is_a_classification_generator(make_cfg, option):
    from xaitk_exp.settings.nodes import to_dict

    task_named("classification").check_saliency(to_dict(make_cfg(f"saliency={option}").saliency))


def test_a_detector_generator_is_refused_for_classification_before_any_run_opens(run_stage, client):
    with pytest.raises(ConfigError) as err:
        run_stage("stage=all", *DRISE)
    message = str(err.value)
    assert message.startswith("saliency._target_='xaitk_saliency.impls.gen_object_detector_blackbox_sal.drise.")
    assert "GenerateImageClassifierBlackboxSaliency" in message and "task=classification" in message
    assert "\n" not in message
    assert client.search_experiments(filter_string="name != 'Default'") == []


def test_classification_needs_class_scores():
    from sklearn.linear_model import LinearRegression, LogisticRegression

    task = task_named("classification")
    task.check_model(LogisticRegression())
    with pytest.raises(ConfigError, match=r"^model='sklearn.linear_model._base.LinearRegression' is invalid: "
                                          r"a classifier with predict_proba"):
        task.check_model(LinearRegression())


class _NoSanity(Task):
    """A task whose saliency runs record faithfulness only (what the base class checks against)."""

    name = "no_sanity"
    generator_interface = "xaitk_saliency.interfaces.gen_image_classifier_blackbox_sal." \
                          "GenerateImageClassifierBlackboxSaliency"
    quality_metrics = ("Deletion_AUC", "Insertion_AUC", "MuFidelity")
    order_by = "metrics.Score DESC"

    def check_model(self, model, key="model"):
        pass

    def blackbox(self, model, chunk_size):
        return model

    def evaluation(self, split, model, split_name, blackbox):
        raise AssertionError("not evaluated here")


def test_quality_metrics_a_task_does_not_record_are_refused_in_one_line():
    task_named("classification").check_metrics(MetricSettings(sanity=True))  # classification records them all
    with pytest.raises(ConfigError, match=r"^metrics.sanity=True is invalid: false for task=no_sanity"):
        _NoSanity().check_metrics(MetricSettings(sanity=True))
    with pytest.raises(ConfigError, match=r"^metrics.complexity=True is invalid"):
        _NoSanity().check_metrics(MetricSettings(complexity=True))
    _NoSanity().check_metrics(MetricSettings(enabled=False, sanity=True, complexity=True))  # metrics off: nothing


def test_no_stage_checks_for_predict_proba_itself():
    found = []
    for path in sorted((ROOT / "xaitk_exp" / "stages").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value == "predict_proba":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            if isinstance(node, ast.Attribute) and node.attr == "predict_proba":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, f"stages that look at predict_proba themselves: {found}"


@pytest.mark.with_upstream
def test_the_evaluation_records_are_the_tasks(run_stage, client):
    # the default evaluation, rerun: its summary holds what the classification records say, nothing else
    ctx = run_stage("stage=evaluation", "force=true", "evaluation.num_images=3")
    exp = client.get_experiment_by_name("MLPClassifier - Evaluation")
    summary = client.get_run(ctx.evaluation_run_id)
    records = ctx.task.evaluation(ctx.split, ctx.model, "test", ctx.task.blackbox(ctx.model, 256))
    assert summary.data.metrics == pytest.approx(records.summary(3))
    link = f"tags.Evaluation_summary_run_id = '{ctx.evaluation_run_id}'"
    images = client.search_runs([exp.experiment_id], link, order_by=["tags.Image_id"])
    assert len(images) == 3
    for run in images:
        tags, metrics = records.image(int(run.data.tags["Image_id"]))
        assert run.data.metrics == pytest.approx(metrics)
        assert {k: run.data.tags[k] for k in tags} == {k: str(v) for k, v in tags.items()}
    assert "confusion_matrix.json" in {a.path for a in client.list_artifacts(ctx.evaluation_run_id)}

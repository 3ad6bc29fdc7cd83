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
        validate(make_cfg("task=segmentation"))
    assert str(err.value) == "task='segmentation' is invalid: one of auto, classification, detection"
    with pytest.raises(ConfigError, match="^task='segmentation' is invalid"):
        task_named("segmentation")


@pytest.mark.parametrize("option", sorted(p.stem for p in (ROOT / "conf" / "saliency").glob("*.yaml")))
def test_every_shipped_saliency_option_is_the_generator_of_one_task(make_cfg, option):
    from xaitk_exp.settings.nodes import to_dict
    from xaitk_exp.tasks import tasks

    node = to_dict(make_cfg(f"saliency={option}").saliency)
    takers = [t.name for t in tasks() if t.takes_generator(node["_target_"])]
    assert len(takers) == 1, takers
    task_named(takers[0]).check_saliency(node)
    assert (takers[0] == "detection") == (option in ("drise", "detector_random_grid"))


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

    def output_labels(self, model, class_names):
        return [str(c) for c in class_names]

    def output_names(self, model):
        return None

    def explained_outputs(self, blackbox, image, top_k):
        return blackbox, None


def test_quality_metrics_a_task_does_not_record_are_refused_in_one_line():
    task_named("classification").check_metrics(MetricSettings(sanity=True))  # classification records them all
    with pytest.raises(ConfigError, match=r"^metrics.sanity=True is invalid: false for task=no_sanity"):
        _NoSanity().check_metrics(MetricSettings(sanity=True))
    with pytest.raises(ConfigError, match=r"^metrics.complexity=True is invalid"):
        _NoSanity().check_metrics(MetricSettings(complexity=True))
    _NoSanity().check_metrics(MetricSettings(enabled=False, sanity=True, complexity=True))  # metrics off: nothing


#: what only a task may call or look at: class scores, the classification black box, the top-k classes
TASK_ONLY = ("predict_proba", "blackbox_for", "restrict_to_top")


def test_no_stage_checks_for_predict_proba_or_makes_its_black_box_itself():
    # stages/ holds stages/saliency/: neither reads class scores, builds a black box or picks the classes with maps;
    # they ask ctx.task (a worker: the task named in its spec)
    found = []
    for path in sorted((ROOT / "xaitk_exp" / "stages").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in TASK_ONLY:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value}")
            elif isinstance(node, ast.Attribute) and node.attr in TASK_ONLY:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.attr}")
            elif isinstance(node, ast.Name) and node.id in TASK_ONLY:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.id}")
            elif isinstance(node, ast.alias) and node.name.rpartition(".")[2] in TASK_ONLY:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} import {node.name}")
    assert not found, f"stages that do their task's part themselves: {found}"


def test_the_scan_finds_a_direct_call():
    # the scan above, on code that does what it forbids: each way of reaching the names is found
    source = "from xaitk_exp.models.blackbox import blackbox_for\nimport xaitk_exp.models.pipeline as p\n" \
             "bb = blackbox_for(m, 3)\np.restrict_to_top(bb, x, 1)\ngetattr(m, 'predict_proba')\n"
    hits = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and node.value in TASK_ONLY:
            hits.add(node.value)
        elif isinstance(node, ast.Attribute) and node.attr in TASK_ONLY:
            hits.add(node.attr)
        elif isinstance(node, (ast.Name, ast.alias)):
            name = node.id if isinstance(node, ast.Name) else node.name
            if name in TASK_ONLY:
                hits.add(name)
    assert hits == set(TASK_ONLY)


def _digits_model(n_classes: int):
    """A logistic regression on the first ``n_classes`` digit classes, and a few of their 8x8 images in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    digits = load_digits(n_class=n_classes)
    images = digits.images[:60] / 16.0
    model = LogisticRegression(max_iter=300).fit(images.reshape(len(images), -1), digits.target[:60])
    return model, images


def test_classification_names_and_picks_the_outputs_that_get_maps():
    from xaitk_exp.models.blackbox import SklearnBlackbox

    task = task_named("classification")
    model, images = _digits_model(6)
    assert task.output_labels(model, ["zero", "one", "two", "three", "four", "five"]) == \
        ["zero", "one", "two", "three", "four", "five"]
    # a class the dataset has no name for: the label itself
    assert task.output_labels(model, ["zero"]) == ["zero", "1", "2", "3", "4", "5"]
    assert task.output_names(model) is None  # a scikit-learn model's tags carry the labels
    blackbox = task.blackbox(model, 7)
    assert isinstance(blackbox, SklearnBlackbox) and blackbox.chunk_size == 7
    # every class up to 20 (None) or 0: every class, the black box unchanged; else the predicted class first
    assert task.explained_outputs(blackbox, images[0], None) == (blackbox, None)
    assert task.explained_outputs(blackbox, images[0], 0) == (blackbox, None)
    probs = model.predict_proba(images[:1].reshape(1, -1))[0]
    kept_box, kept = task.explained_outputs(blackbox, images[0], 2)
    assert kept == [int(i) for i in probs.argsort()[::-1][:2]]
    assert kept_box.get_labels() == [model.classes_[i] for i in kept]


def test_a_saliency_worker_asks_the_task_named_in_its_spec(tmp_path, monkeypatch):
    """The spec a worker gets names its task; the worker looks it up: here a task that keeps one map whatever
    ``maps.top_k`` says, beside classification, which keeps every class (6 classes, top_k auto)."""
    import pickle

    import numpy as np

    from xaitk_exp import tasks as registry
    from xaitk_exp.stages.saliency.image import ExplainSpec, ImageTask, iter_explained
    from xaitk_exp.tasks.classification import Classification

    class BestOnly(Classification):
        name = "best_only"

        def explained_outputs(self, blackbox, image, top_k):
            return super().explained_outputs(blackbox, image, 1)

    registry.tasks()  # the registry filled before one more is added
    monkeypatch.setitem(registry._TASKS, "best_only", BestOnly())
    model, images = _digits_model(6)
    saliency = {"_target_": "xaitk_saliency.impls.gen_image_classifier_blackbox_sal.slidingwindow."
                            "SlidingWindowStack", "name": "sliding_window", "window_size": [4, 4], "stride": [2, 2],
                "threads": 0, "fill": 0}
    labels = [str(c) for c in model.classes_]
    predicted = str(model.predict(images[:1].reshape(1, -1))[0])
    evaluation = {"run_id": "", "experiment_id": "", "tags": {"Predicted_class": predicted}, "conf": None}
    maps = {}
    for name in ("classification", "best_only"):
        spec = ExplainSpec(saliency, (8, 8), (), model, 16, labels, task=name)
        assert pickle.loads(pickle.dumps(spec)).task == name  # the name travels, the task object does not
        (result,) = iter_explained(spec, [ImageTask(0, images[0], evaluation, str(tmp_path / name))])
        maps[name] = np.load(tmp_path / name / "saliency_map_np_arrays" / "saliency_maps.npy")
        assert result.map_classes == (labels if name == "classification" else [predicted])
    assert maps["classification"].shape == (6, 8, 8) and maps["best_only"].shape == (1, 8, 8)
    np.testing.assert_array_equal(maps["best_only"][0], maps["classification"][int(predicted)])
    with pytest.raises(ConfigError, match="^task='segmentation' is invalid"):
        list(iter_explained(ExplainSpec(saliency, (8, 8), (), model, 16, labels, task="segmentation"),
                            [ImageTask(0, images[0], evaluation, str(tmp_path / "none"))]))


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

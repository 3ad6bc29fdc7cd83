"""Datasets are a registry: every shipped dataset option names a registered loader, whose kind says where its data
comes from; a dataset added in this file alone is trained on and evaluated by the stages unchanged, its lineage
recorded as its kind says, against a real SQLite store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from xaitk_exp.data import registry
from xaitk_exp.data.base import ImageSplit, split_arrays
from xaitk_exp.data.registry import DatasetKind

CONF = Path(__file__).resolve().parents[2] / "conf" / "dataset"
SQUARES_PAGE = "https://example.org/squares"


class Squares:
    """``n`` 8x8 images: class 0 has its top half lit, class 1 its bottom half, both under uniform noise."""

    def __init__(self, n: int = 120, test_size: float = 0.25, seed: int = 0) -> None:
        self.n, self.test_size, self.seed = n, test_size, seed

    def load(self) -> ImageSplit:
        rng = np.random.default_rng(self.seed)
        labels = np.arange(self.n) % 2
        images = rng.uniform(0, 0.4, size=(self.n, 8, 8))
        images[labels == 0, :4] += 0.6
        images[labels == 1, 4:] += 0.6
        return split_arrays("squares", images, labels, self.test_size, self.seed)


SQUARES = DatasetKind(name="squares", loader=Squares, lineage=lambda node: ("http", SQUARES_PAGE))


@pytest.fixture
def squares() -> Iterator[DatasetKind]:
    registry.register(SQUARES)
    yield SQUARES
    registry.unregister(SQUARES.name)


@pytest.mark.parametrize("option", sorted(p.stem for p in CONF.glob("*.yaml")))
def test_every_shipped_dataset_option_names_a_registered_loader(option):
    node = yaml.safe_load((CONF / f"{option}.yaml").read_text())
    kind = registry.kind_for(node)
    assert kind is not None, f"conf/dataset/{option}.yaml names no registered loader"
    assert kind.name == option


def test_each_kind_says_where_its_data_comes_from(tmp_path):
    import sklearn.datasets

    digits = registry.dataset_source({"_target_": "xaitk_exp.data.Digits"})
    assert digits == ("local", (Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz").as_uri())
    assert registry.dataset_source({"_target_": "xaitk_exp.data.OpenML", "name": "mnist_784", "version": 1}) == (
        "http", "https://www.openml.org/search?type=data&name=mnist_784&version=1")
    assert registry.dataset_source({"_target_": "xaitk_exp.data.ImageFolder", "path": str(tmp_path)}) == (
        "local", tmp_path.resolve().as_uri())
    assert registry.dataset_source({"_target_": "xaitk_exp.data.MaiteDataset"}) == (
        "code", "xaitk_exp.data.MaiteDataset")
    assert registry.dataset_source({"_target_": "mylab.Loader"}) == ("code", "mylab.Loader")  # registered by none
    assert {k.name: k.extra for k in registry.kinds()}["maite"] == "maite"


def test_a_dataset_registered_here_is_trained_on_and_evaluated_with_its_lineage(squares, run_stage, client):
    job = ["dataset._target_=test_dataset_registry.Squares", "~dataset.name", "allow_targets=[test_dataset_registry.]",
           "model=logistic_regression", "evaluation.num_images=4"]
    run_stage("stage=train", *job)
    run_stage("stage=evaluation", *job)
    train_exp = client.get_experiment_by_name("LogisticRegression - Train")
    (train,) = client.search_runs([train_exp.experiment_id])
    (ds,) = train.inputs.dataset_inputs
    assert ds.dataset.source_type == "http" and SQUARES_PAGE in ds.dataset.source, ds.dataset.source
    exp = client.get_experiment_by_name("LogisticRegression - Evaluation")
    runs = client.search_runs([exp.experiment_id])
    summary = next(r for r in runs if r.data.tags["Run_type"] == "summary")
    assert len(runs) == 5 and summary.data.metrics["Accuracy"] == 1.0  # the halves are far apart

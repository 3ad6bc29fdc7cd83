"""Saliency metrics in the pipeline, against a real SQLite store: per-image runs, the evaluation summary, off."""

from __future__ import annotations

import numpy as np
import pytest

from xaitk_exp.errors import ConfigError
from xaitk_exp.metrics.summary import aggregate, flat_metrics
from xaitk_exp.stages.saliency.quality import CURVES_FIGURE

SALIENCY = "MLPClassifier - Saliency Map Generation"
PER_IMAGE = (
    "Deletion_AUC", "Insertion_AUC", "Deletion_AUC_random", "Insertion_AUC_random",
    "MuFidelity", "Entropy_positive", "Sparseness_gini", "Complexity",
)


def _saliency_runs(client, algorithm):
    exp = client.get_experiment_by_name(SALIENCY)
    return client.search_runs([exp.experiment_id], f"tags.Saliency_algorithm = '{algorithm}'", max_results=1000)


def _mean(runs, key):
    return float(np.mean([r.data.metrics[key] for r in runs]))


@pytest.mark.with_upstream
def test_sliding_window_and_rise_beat_the_random_order_on_digits_and_are_ranked(run_stage, client):
    ctx = run_stage("query.max_results=10", "saliency=rise")
    run_stage("stage=saliency", "query.max_results=10", "saliency=sliding_window", "logging=low")
    for algorithm in ("rise", "sliding_window"):
        runs = _saliency_runs(client, algorithm)
        assert len(runs) == 10
        for r in runs:
            assert set(PER_IMAGE) <= set(r.data.metrics), r.data.metrics
            assert CURVES_FIGURE in {a.path for a in client.list_artifacts(r.info.run_id)}
        assert _mean(runs, "Deletion_AUC") < _mean(runs, "Deletion_AUC_random"), algorithm
        assert _mean(runs, "Insertion_AUC") > _mean(runs, "Insertion_AUC_random"), algorithm
        assert _mean(runs, "MuFidelity") > 0.2, algorithm
    summary = client.get_run(ctx.evaluation_run_id)
    m = summary.data.metrics
    assert sorted((m["Saliency/rise/rank"], m["Saliency/sliding_window/rank"])) == [1.0, 2.0]
    assert m["Saliency/rise/images"] == 10 and m["Saliency/sliding_window/images"] == 10
    rise = _saliency_runs(client, "rise")
    assert m["Saliency/rise/Deletion_AUC_mean"] == pytest.approx(_mean(rise, "Deletion_AUC"))
    std = float(np.std([r.data.metrics["Insertion_AUC"] for r in rise], ddof=1))
    assert m["Saliency/rise/Insertion_AUC_std"] == pytest.approx(std)
    files = {a.path for a in client.list_artifacts(summary.info.run_id, "saliency_metrics")}
    assert files == {"saliency_metrics/comparison.png", "saliency_metrics/summary.json"}
    assert summary.info.status == "FINISHED"


def test_metrics_disabled_leave_no_metric_picture_or_summary(run_stage, client):
    ctx = run_stage("query.max_results=2", "metrics.enabled=false")
    (run, _) = _saliency_runs(client, "sliding_window")
    assert set(run.data.metrics) == {"Predicted_class_conf"}
    assert CURVES_FIGURE not in {a.path for a in client.list_artifacts(run.info.run_id)}
    summary = client.get_run(ctx.evaluation_run_id)
    assert not [k for k in summary.data.metrics if k.startswith("Saliency/")]
    assert not client.list_artifacts(summary.info.run_id, "saliency_metrics")


@pytest.mark.with_upstream
def test_sanity_checks_on_request(run_stage, client):
    ctx = run_stage("query.max_results=2", "metrics.sanity=true", "metrics.step=4")
    runs = _saliency_runs(client, "sliding_window")
    for r in runs:
        m = r.data.metrics
        assert -1 <= m["Sanity_other_class_xcorr"] <= 1 and -1 <= m["Sanity_permuted_labels_xcorr"] <= 1
    # the permuted-label model was trained once for the job, on shuffled labels: it is near chance
    permuted = ctx.results["metrics_permuted_label_model"]
    split = ctx.split
    assert permuted.score(split.train_images.reshape(len(split.train_images), -1), split.train_labels) < 0.3
    summary = client.get_run(ctx.evaluation_run_id).data.metrics
    assert "Saliency/sliding_window/Sanity_permuted_labels_xcorr_mean" in summary


def test_a_bad_metrics_value_stops_the_job_before_any_run(run_stage, client):
    with pytest.raises(ConfigError, match=r"metrics\.substrate='noise' is invalid"):
        run_stage("metrics.substrate=noise")
    assert client.search_experiments(filter_string="name != 'Default'") == []


def test_aggregate_ranks_algorithms_and_keeps_the_latest_run_per_image(client, tmp_path):
    exp = client.create_experiment("agg", artifact_location=(tmp_path / "artifacts").as_uri())  # not ./mlruns

    def run(algorithm, image, **metrics):
        r = client.create_run(exp, tags={"Saliency_algorithm": algorithm, "Image_id": str(image)})
        for k, v in metrics.items():
            client.log_metric(r.info.run_id, k, v)
        client.set_terminated(r.info.run_id)

    run("a", 0, Deletion_AUC=0.9, Insertion_AUC=0.1, MuFidelity=0.0)  # superseded by the next run of image 0
    run("a", 0, Deletion_AUC=0.1, Insertion_AUC=0.8, MuFidelity=0.5)
    run("a", 1, Deletion_AUC=0.3, Insertion_AUC=0.6, MuFidelity=float("nan"))
    run("b", 0, Deletion_AUC=0.4, Insertion_AUC=0.9, MuFidelity=0.1)
    run("b", 1, Deletion_AUC=0.4, Insertion_AUC=0.5, MuFidelity=0.3)
    client.create_run(exp, tags={"Image_id": "0"})  # no algorithm tag: ignored
    rows = aggregate(client.search_runs([exp]))
    assert [r["algorithm"] for r in rows] == ["a", "b"] and [r["rank"] for r in rows] == [1, 2]
    a, b = rows
    assert a["images"] == 2 and a["Deletion_AUC_mean"] == pytest.approx(0.2)
    assert a["Deletion_AUC_std"] == pytest.approx(np.std([0.1, 0.3], ddof=1))
    assert a["MuFidelity_mean"] == pytest.approx(0.5) and a["MuFidelity_std"] == 0.0  # NaN left out
    # a wins deletion (0.2 < 0.4) and MuFidelity (0.5 > 0.2); insertion is a tie (0.7 each: rank 1.5)
    assert (a["Deletion_AUC_rank"], a["Insertion_AUC_rank"], a["MuFidelity_rank"]) == (1.0, 1.5, 1.0)
    assert (b["Deletion_AUC_rank"], b["MuFidelity_rank"]) == (2.0, 2.0)
    flat = flat_metrics(rows)
    assert flat["Saliency/a/rank"] == 1.0 and flat["Saliency/b/Insertion_AUC_mean"] == pytest.approx(0.7)
    assert aggregate([]) == []

    from PIL import Image

    from xaitk_exp.stages.saliency.summary import comparison_picture

    with Image.open(comparison_picture(rows, tmp_path / "cmp.png", "two algorithms")) as im:
        assert im.size[0] > 200 and im.size[1] > 100


def test_the_console_names_a_best_only_among_several_and_says_when_random_is_not_beaten():
    from xaitk_exp.stages.saliency.summary import summary_lines

    good = {"algorithm": "rise", "images": 4, "Deletion_AUC_mean": 0.2, "Deletion_AUC_random_mean": 0.4,
            "Insertion_AUC_mean": 0.8, "Insertion_AUC_random_mean": 0.6}
    poor = {"algorithm": "sliding_window", "images": 4, "Deletion_AUC_mean": 0.519, "Deletion_AUC_random_mean": 0.485,
            "Insertion_AUC_mean": 0.7, "Insertion_AUC_random_mean": 0.6}
    alone = summary_lines([poor], "sliding_window")
    assert not any("best" in line for line in alone)
    assert alone[1] == ("sliding_window does not beat the random pixel order (deletion 0.519 vs random 0.485, lower "
                        "is better): its maps say little about this model here; try another algorithm or its settings")
    assert summary_lines([good], "rise") == ["quality of rise over 4 image(s)"]
    both = summary_lines([good, poor], "sliding_window")
    assert both[0] == ("2 algorithms compared on the 4 image(s) each of them explained: sliding_window ranks 2 of 2; "
                       "best: rise")
    assert len(both) == 2 and both[1].startswith("sliding_window does not beat")

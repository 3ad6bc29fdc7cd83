"""Keys a user types: a key nothing reads is refused in one line naming the closest valid key, never ignored."""

from __future__ import annotations

import pytest
from conftest import run_cli

from xaitk_exp.overrides import precheck_keys, precheck_sweep


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["+evaluation.num_image=50"], ["+evaluation.num_image=50", "closest valid key: evaluation.num_images"]),
        (["++evaluation.num_image=50"], ["++evaluation.num_image=50", "closest valid key: evaluation.num_images"]),
        (["+metrics.mufidelity.subset=64"], ["closest valid key: metrics.mufidelity.subsets"]),
        (["+tracking.http.timeot=5"], ["closest valid key: tracking.http.timeout"]),
        (["+query.min_confidence=0.9"], ["closest valid key: query.min_conf"]),
        (["+evaluation.num_images.x=3"], ["no stage reads 'evaluation.num_images.x'"]),
        (["+foo=1"], ["+foo=1: no stage reads 'foo'"]),
        # model=pretrained builds nothing: no constructor receives free keys
        (["model=pretrained", "model.uri=runs:/x/sklearn-model", "+model.max_depth=8"],
         ["no stage reads 'model.max_depth'"]),
    ],
)
def test_an_added_key_nothing_reads_gets_one_line_with_the_closest_key(argv, fragments):
    message = precheck_keys(argv)
    assert message is not None and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    assert "adds a new one" not in message  # the old hint that led users to this mistake


@pytest.mark.parametrize(
    "argv",
    [
        ["model=estimator", "model._target_=sklearn.tree.DecisionTreeClassifier", "+model.max_depth=8"],
        ["+model.tol=0.1"],  # MLPClassifier's constructor argument
        ["saliency=rise_grid_occlusion", "+saliency.perturber.extra=1"],  # a nested constructor's (it judges)
        ["+dataset.limit=10"],
        ["++evaluation.num_images=5"],  # '++' on an existing key overrides it
        ["++query.predicted_class=4"],  # an existing key whose default is null
        ["saliency=rise", "++saliency.n=100"],
        ["+hydra.job.env_set.FOO=1"],  # Hydra's own node: Hydra's to check
    ],
)
def test_constructor_arguments_and_existing_keys_still_pass(argv):
    assert precheck_keys(argv) is None


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["evaluation.num_image=4"], ["Key 'num_image' is not in struct", "closest valid key: evaluation.num_images"]),
        (["saliency.windowsize=3"], ["closest valid key: saliency.window_size"]),
        (["model=estimator", "model.max_depth=8"],
         ["'+model.max_depth=8' passes a new argument to the model constructor"]),
    ],
)
def test_an_unknown_key_without_plus_names_the_closest_key(argv, fragments):
    message = precheck_keys(argv)
    assert message is not None and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    assert "adds a new one" not in message


@pytest.mark.slow
def test_the_command_refuses_an_unread_key_before_anything_runs(tmp_path):
    proc = run_cli(["+evaluation.num_image=50"], tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xaitk-exp: error: +evaluation.num_image=50"), proc.stderr
    assert "evaluation.num_images" in lines[0]
    assert not (tmp_path / "outputs").exists()  # no store, no run folder


def test_a_key_every_swept_option_has_reaches_the_jobs_as_typed():
    """Hydra composes a sweep's first config from the default saliency (sliding_window, no ``n``) and stopped there;
    the key now goes as ``++`` and each job composes with it set (the jobs' own configs, composed as Hydra will)."""
    from xaitk_exp.app import compose_config

    argv = ["-m", "saliency=rise,mc_rise", "saliency.n=100", "stage=saliency"]
    message, rewritten = precheck_sweep(argv)
    assert message is None and rewritten == ["-m", "saliency=rise,mc_rise", "++saliency.n=100", "stage=saliency"]
    for option in ("rise", "mc_rise"):
        assert compose_config([f"saliency={option}", "++saliency.n=100"]).saliency.n == 100
    # nothing to do: a default that has the key, a value sweep, a single run, a sweep without a group
    for argv in (["-m", "saliency=sliding_window,rise"], ["-m", "saliency=rise", "saliency.n=10,20"],
                 ["saliency=rise", "saliency.n=100"], ["-m", "evaluation.num_images=2,3"],
                 ["-m", "model=random_forest,svc", "evaluation.num_images=3"]):
        assert precheck_sweep(argv) == (None, argv), argv


@pytest.mark.parametrize(
    "argv, fragments",
    [
        # an option of the swept group that lacks the key: which job, which key
        (["-m", "saliency=sliding_window,rise", "saliency.n=100"],
         ["saliency.n=100: the sweep's job 'saliency=sliding_window' has no key 'saliency.n'",
          "'xaitk-exp saliency=sliding_window --cfg job'"]),
        (["-m", "saliency=rise,sliding_window", "saliency.n=100", "model=random_forest,svc"],
         ["job 'saliency=sliding_window model=random_forest' has no key 'saliency.n'"]),
        # a key no option has: the closest valid key, as for a single run
        (["-m", "saliency=rise,mc_rise", "saliency.nn=3"],
         ["the sweep's job 'saliency=rise'", "closest valid key: saliency.n"]),
        (["-m", "model=random_forest,svc", "saliency.n=4"], ["the sweep's job 'model=random_forest'", "saliency.n"]),
        # another swept key, at its first value
        (["-m", "saliency=sliding_window,rise", "saliency.n=10,20"], ["has no key 'saliency.n'"]),
        (["-m", "evaluation.num_image=2,3"], ["closest valid key: evaluation.num_images"]),
    ],
)
def test_a_sweep_whose_job_cannot_compose_is_one_line_naming_the_job(argv, fragments):
    message, rewritten = precheck_sweep(argv)
    assert message is not None and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    assert rewritten == argv


@pytest.mark.slow
def test_the_command_refuses_a_sweep_job_without_the_key_before_anything_runs(tmp_path):
    proc = run_cli(["-m", "saliency=sliding_window,rise", "saliency.n=100"], tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"xaitk-exp: error: {precheck_sweep(['-m', 'saliency=sliding_window,rise', 'saliency.n=100'])[0]}"]
    assert not (tmp_path / "outputs").exists()


def test_allow_list_error_names_each_trusted_prefix_once():
    from xaitk_exp.errors import UnsafeConfigError
    from xaitk_exp.security.targets import check_targets

    for node, extra in [
        ({"_target_": "os.system"}, ()),
        ({"model": {"_target_": "os.system"}}, ()),  # nested: the recursion passed the prefixes on again
        ({"a": {"b": [{"_target_": "os.system"}]}}, ["mylab.models."]),
    ]:
        with pytest.raises(UnsafeConfigError) as info:
            check_targets(node, extra)
        message = str(info.value)
        named = message.split("only classes from ")[1].split(" may be built")[0].split(", ")
        assert len(named) == len(set(named)), message
        assert set(named) == {"sklearn", "xaitk_saliency", "xaitk_exp", *(p.rstrip(".") for p in extra)}, message

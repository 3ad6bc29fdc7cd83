"""The typed settings: one check of the config per run, one-line errors, and hashes that stay what they were."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from xaitk_exp import schema
from xaitk_exp.app import compose_config
from xaitk_exp.errors import ConfigError
from xaitk_exp.settings.config import Settings
from xaitk_exp.settings.validate import validate

# (override, the exact message)
BAD = [
    ("stage=deploy", "stage='deploy' is invalid: one of all, train, evaluation, saliency, reproduce"),
    ("seed=-1", "seed=-1 is invalid: an integer >= 0"),
    ("seed=abc", "seed='abc' is invalid: an integer"),
    ("n_jobs=abc", "n_jobs='abc' is invalid: an integer"),
    ("n_jobs=true", "n_jobs=True is invalid: an integer"),
    ("n_jobs=0", "n_jobs=0 is invalid: a positive integer, or -1 for every core"),
    ("chunk_size=0", "chunk_size=0 is invalid: an integer >= 1"),
    ("force=maybe", "force='maybe' is invalid: true or false"),
    ("force=1", "force=1 is invalid: true or false"),
    ("progress=yes", "progress='yes' is invalid: true or false"),
    ("allow_targets=sklearn",
     "allow_targets='sklearn' is invalid: a list of module prefixes, e.g. [my_package.models]"),
    ("evaluation.num_images=abc", "evaluation.num_images='abc' is invalid: an integer"),
    ("evaluation.num_images=0", "evaluation.num_images=0 is invalid: an integer >= 1"),
    ("evaluation.split=validation", "evaluation.split='validation' is invalid: one of train, test"),
    ("query.min_conf=high", "query.min_conf='high' is invalid: a confidence in [0, 1]"),
    ("query.min_conf=1.5", "query.min_conf=1.5 is invalid: a confidence in [0, 1]"),
    ("query.max_results=1.5", "query.max_results=1.5 is invalid: an integer"),
    ("query.order_by='metrics.x; drop'",
     "query.order_by='metrics.x; drop' is invalid: '<metrics|params|tags|attributes>.<name> [ASC|DESC]'"),
    ("maps.top_k=-1", "maps.top_k=-1 is invalid: auto, 0 (every class) or a positive number of classes"),
    ("metrics.enabled=1", "metrics.enabled=1 is invalid: true or false"),
    ("metrics.sanity=yes", "metrics.sanity='yes' is invalid: true or false"),
    ("metrics.step=0", "metrics.step=0 is invalid: a positive integer (pixels per step) or auto"),
    ("metrics.substrate=noise", "metrics.substrate='noise' is invalid: one of auto, zeros, mean, blur or a number"),
    ("metrics.blur_sigma=-1", "metrics.blur_sigma=-1 is invalid: a positive number of pixels"),
    ("metrics.mufidelity.subsets=2",
     "metrics.mufidelity.subsets=2 is invalid: an integer >= 3 (a rank correlation needs 3 points)"),
    ("metrics.mufidelity.fraction=1.0",
     "metrics.mufidelity.fraction=1.0 is invalid: a fraction strictly between 0 and 1"),
    ("sweep.mode=best", "sweep.mode='best' is invalid: one of auto, max, min"),
    ("sweep.prepare_upstream=no", "sweep.prepare_upstream='no' is invalid: true or false"),
    ("tracking.sqlite_journal=memory", "tracking.sqlite_journal='memory' is invalid: wal or delete"),
    ("tracking.http.timeout=0", "tracking.http.timeout=0 is invalid: a positive number of seconds or null"),
    ("tracking.http.max_retries=-1", "tracking.http.max_retries=-1 is invalid: an integer >= 0"),
    ("logging.level=verbose", "logging.level='verbose' is invalid: one of high, mid, low"),
    ("saliency.window_size=[0,2]", "saliency.window_size=[0, 2] is invalid: two positive integers [height, width]"),
    ("model.register=a/b", "model.register='a/b' is invalid: null, '<name>' or '<name>@<alias>' (name without '/' "
                           "or ':'; alias of letters, digits, _ and -)"),
]


@pytest.mark.parametrize(("override", "message"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_value_gets_its_one_line(override, message):
    with pytest.raises(ConfigError) as info:
        validate(compose_config([override]))
    assert str(info.value) == message


def test_the_default_config_becomes_typed_settings():
    s = validate(compose_config([]))
    assert isinstance(s, Settings)
    assert (s.stage, s.seed, s.force, s.n_jobs, s.chunk_size, s.progress) == ("all", 0, False, 1, 256, True)
    assert (s.evaluation.num_images, s.evaluation.split) == (20, "test")
    assert s.query.order_by == "metrics.Predicted_class_conf DESC" and s.query.max_results == 1
    assert s.metrics.enabled and s.metrics.step is None and (s.metrics.subsets, s.metrics.fraction) == (128, 0.25)
    assert s.maps.top_k is None and s.sweep.mode == "auto" and s.tracking.sqlite_journal == "wal"
    assert s.tracking.http.environment() == {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "20", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    }
    assert s.logging.level == "mid" and s.register is None
    assert s.saliency.name == "sliding_window" and s.saliency.sign == 1 and "name" not in s.saliency.arguments


def test_good_values_are_typed():
    s = validate(compose_config([
        "metrics.substrate=0", "metrics.step=4", "maps.top_k=0", "train_run_id=123", "allow_targets=[my.models]",
        "model.register=digits@prod", "saliency=mc_rise", "query.min_conf=1",
    ]))
    assert s.metrics.substrate == 0.0 and isinstance(s.metrics.substrate, float) and s.metrics.step == 4
    assert s.maps.top_k == 0 and s.train_run_id == "123" and s.allow_targets == ("my.models",)
    assert s.register == ("digits", "prod") and s.saliency.sign == -1 and s.query.min_conf == 1


def test_checking_leaves_the_config_as_composed():
    cfg = compose_config(["query.min_conf=1", "metrics.blur_sigma=3"])
    before = OmegaConf.to_yaml(cfg)
    validate(cfg)
    assert OmegaConf.to_yaml(cfg) == before
    assert cfg.query.min_conf == 1 and type(cfg.query.min_conf) is int  # an int stays an int: its hash is unchanged


def test_a_saved_config_of_an_older_version_still_loads():
    """stage=reproduce replays saved configs: missing keys take the defaults (no metrics: metrics off), keys this
    version does not read are left alone."""
    saved = OmegaConf.to_container(compose_config([]), resolve=True)
    for key in ("metrics", "maps", "sweep", "sweep_run_id"):
        saved.pop(key)
    saved["tracking"].pop("http")
    saved["tracking"].pop("sqlite_journal")
    saved["reproduced_from"] = "0123"
    saved["retired_key"] = {"anything": 1}
    s = validate(saved)
    assert not s.metrics.enabled and s.maps.top_k is None and s.tracking.sqlite_journal == "wal"
    assert s.tracking.http.timeout == 20 and s.sweep_run_id is None


def test_every_stage_name_has_a_runner():
    from xaitk_exp.stages import STAGES

    assert [*STAGES, "reproduce"] == list(schema.STAGES)


def test_the_context_checks_once(monkeypatch):
    from xaitk_exp.settings import validate as module
    from xaitk_exp.stages import Context

    calls = []
    real = module.validate
    monkeypatch.setattr("xaitk_exp.stages.context.validate", lambda cfg: calls.append(1) or real(cfg))
    ctx = Context(cfg=compose_config([]), tracker=None, output_dir=Path("."))
    assert ctx.settings is ctx.settings and ctx.processes == 1 and ctx.extra_allowed == []
    assert len(calls) == 1


# hash_for of the default config and three variants, computed on main before the settings became typed: a change
# here stops every user's existing runs from being reused
PINNED = {
    (): ("7dc3e3631eaa6df3", "d034207079cadf09", "458d8366907a94a9", "302833305a7da39d"),
    ("saliency=rise", "saliency.n=500"): ("7dc3e3631eaa6df3", "d034207079cadf09", "c8b230bf1cb3996e",
                                          "52aa240664648d96"),
    ("query.min_conf=1", "metrics.blur_sigma=3", "metrics.step=4", "maps.top_k=3"): (
        "7dc3e3631eaa6df3", "d034207079cadf09", "431facaae1984c7a", "77569fdc790b84bb"),
    ("metrics.substrate=0.5", "metrics.mufidelity.subsets=10", "evaluation.split=train"): (
        "7dc3e3631eaa6df3", "b8c0b6462d1b2920", "35b21e3cac0ee26a", "b3bbbe20fc3b498f"),
}


@pytest.mark.parametrize("overrides", list(PINNED), ids=lambda o: " ".join(o) or "default")
def test_config_hashes_are_pinned(overrides):
    from xaitk_exp.stages import Context

    ctx = Context(cfg=compose_config(list(overrides)), tracker=None, output_dir=Path("."))
    _ = ctx.settings  # checking the config changes nothing that is hashed
    stages = ("train", "evaluation", "saliency", "saliency_work")
    assert tuple(ctx.hash_for(s) for s in stages) == PINNED[overrides]

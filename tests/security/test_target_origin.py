"""The allow-list checks where a ``_target_`` is defined, not the dotted path that reaches it; untrusted modules
are refused before they are imported; prefixes match by dotted component; blank prefixes are refused."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from xaitk_exp.errors import ConfigError, UnsafeConfigError
from xaitk_exp.security.targets import check_targets, instantiate

CONF = Path(__file__).resolve().parents[2] / "conf"


def _targets(node, key=""):
    if isinstance(node, dict):
        if node.get("_target_") not in (None, "???"):
            yield key, node
        for k, v in node.items():
            yield from _targets(v, f"{key}.{k}" if key else k)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _targets(v, f"{key}[{i}]")


def test_every_shipped_target_passes():
    """Every ``_target_`` the shipped config groups build (Hydra's own ``hydra/`` group is Hydra's to build)."""
    found = []
    for path in sorted(CONF.rglob("*.yaml")):
        if "hydra" in path.relative_to(CONF).parts:
            continue
        for key, node in _targets(yaml.safe_load(path.read_text()) or {}):
            flat = {k: v for k, v in node.items() if not isinstance(v, str) or "${" not in v}  # ${seed}: unresolved
            check_targets({"_target_": node["_target_"]}, key=f"{path.name}:{key}")
            found.append((path.name, flat["_target_"]))
    assert len(found) >= 15, found  # models, datasets, saliency algorithms and their parts
    assert {"sklearn", "xaitk_saliency", "xaitk_exp"} <= {t.split(".")[0] for _, t in found}


@pytest.mark.parametrize(("target", "says"), [
    ("xaitk_exp.cli.logging.FileHandler", "xaitk_exp.cli.logging is the module logging imported there"),
    ("xaitk_exp.teamserver.postgres.subprocess.Popen", "is the module subprocess imported there"),
    ("xaitk_exp.cli.os.system", "is the module os imported there"),
    ("xaitk_exp.security.targets.Mapping", "defined in collections.abc, outside"),
    ("sklearn.base.clone", "not a class"),
    ("xaitk_exp.cli", "a module, not a class"),
])
def test_a_path_through_another_module_is_refused(target, says):
    with pytest.raises(UnsafeConfigError, match=rf"model\._target_='{target}' is not allowed: .*{says}"):
        check_targets({"model": {"_target_": target}})


def test_the_file_handler_bypass_truncates_nothing(tmp_path):
    victim = tmp_path / "notes.txt"
    victim.write_text("kept")
    node = {"_target_": "xaitk_exp.cli.logging.FileHandler", "filename": str(victim), "mode": "w"}
    with pytest.raises(UnsafeConfigError):
        instantiate(node, "model")
    assert victim.read_text() == "kept"


@pytest.fixture
def planted(tmp_path, monkeypatch):
    """Modules ``mylab`` (a package with a class, a function and a re-exported standard-library function) and
    ``mylabevil``, each of which leaves a marker file when imported."""
    for name in ("mylab", "mylabevil"):
        package = tmp_path / name
        package.mkdir()
        (package / "__init__.py").write_text(
            f"from pathlib import Path\nPath({str(tmp_path / (name + '.imported'))!r}).touch()\n"
            "from os import getcwd\n\nclass Net:\n    pass\n\ndef make_model():\n    return Net()\n"
        )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("mylab", "mylabevil"):
        sys.modules.pop(name, None)


def test_an_untrusted_module_is_refused_before_it_is_imported(planted):
    with pytest.raises(UnsafeConfigError, match="only classes from"):
        check_targets({"_target_": "mylabevil.Net"}, ["mylab."])  # mylab. trusts mylab.x, not mylabevil
    with pytest.raises(UnsafeConfigError, match="only classes from"):
        check_targets({"_target_": "mylabevil.Net"}, ["mylab"])
    assert not (planted / "mylabevil.imported").exists() and "mylabevil" not in sys.modules


def test_a_trusted_prefix_admits_its_own_classes_and_functions_only(planted):
    check_targets({"_target_": "mylab.Net"}, ["mylab."])
    check_targets({"_target_": "mylab.make_model"}, ["mylab"])  # functions: where the user trusts them
    check_targets({"_target_": "mylab.make_model"}, ["mylab.make_model"])  # an exact path
    with pytest.raises(UnsafeConfigError, match=r"defined in (posix|os), outside"):
        check_targets({"_target_": "mylab.getcwd"}, ["mylab."])
    assert (planted / "mylab.imported").exists()


@pytest.mark.parametrize("prefix", ["", "  ", ".", "a..b", "my lab.", "..x"])
def test_blank_or_malformed_prefixes_are_refused(prefix):
    with pytest.raises(ConfigError, match=r"^allow_targets=.* is invalid: module prefixes made of dotted Python"):
        check_targets({"_target_": "sklearn.svm.SVC"}, [prefix])


def test_a_blank_prefix_stops_the_job_before_the_store_opens(run_stage, tmp_path):
    with pytest.raises(ConfigError, match=r"^allow_targets='' is invalid"):
        run_stage("allow_targets=['']", "stage=train")
    assert not (tmp_path / "mlflow.db").exists()


def test_a_missing_class_under_a_trusted_prefix_is_one_line():
    with pytest.raises(ConfigError, match=r"^saliency\._target_='xaitk_saliency\.nope\.Y' is invalid: an importable"):
        check_targets({"saliency": {"_target_": "xaitk_saliency.nope.Y"}})

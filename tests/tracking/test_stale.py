"""No run RUNNING for ever: runs record their process; a later stage on the host closes the runs of dead
processes KILLED in one line (other hosts' and live processes' runs untouched); a command closes old RUNNING runs on
any store; a relaunch replaces a killed image run instead of adding a second one. Real SQLite stores."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import run_cli

from xaitk_exp import schema
from xaitk_exp.tracking.factory import make_tracker
from xaitk_exp.tracking.stale import main, parse_age, process_gone, process_tags

HOST = socket.gethostname()


def _dead_process_tags() -> dict[str, str]:
    """The process tags of a Python process that has exited (its pid is free or another process now)."""
    out = subprocess.run([sys.executable, "-c", "import json; from xaitk_exp.tracking.stale import process_tags; "
                          "print(json.dumps(process_tags()))"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize("level", ["high", "mid", "low"])
def test_every_level_records_the_host_and_process(store, client, level):
    tracker = make_tracker(level, store)
    exp = tracker.experiment("Stale - Test")
    with tracker.run(exp, "one") as run_id:
        pass
    ids = tracker.log_runs(exp, [("a", {"Image_id": 0}, {"m": 1.0}), ("b", {"Image_id": 1}, {"m": 2.0})])
    for rid in [run_id, *ids]:
        tags = client.get_run(rid).data.tags
        assert tags[schema.HOST] == HOST and tags[schema.PID] == str(os.getpid()), tags
        boot, namespace, start = tags[schema.PROCESS].split(":")
        assert boot and namespace.isdigit() and start.isdigit()
    assert process_tags() == {k: client.get_run(run_id).data.tags[k] for k in (schema.HOST, schema.PID, schema.PROCESS)}


def test_process_gone_tells_dead_live_reused_and_foreign_processes():
    assert process_gone(_dead_process_tags())
    assert not process_gone(process_tags())  # this process
    reused = {**process_tags(), schema.PROCESS: process_tags()[schema.PROCESS].rsplit(":", 1)[0] + ":1"}
    assert process_gone(reused)  # our pid, another start time: the pid was reused
    assert not process_gone({**_dead_process_tags(), schema.HOST: HOST + "-elsewhere"})
    other_namespace = _dead_process_tags()
    boot, ns, start = other_namespace[schema.PROCESS].split(":")
    assert not process_gone({**other_namespace, schema.PROCESS: f"{boot}:{int(ns) + 1}:{start}"})  # not ours to judge
    assert process_gone({**other_namespace, schema.PROCESS: f"another-boot:{ns}:{start}"})  # rebooted since
    assert not process_gone({schema.PID: "1"})  # no host: an old run, left to the age-based command


def _open_run(client, exp_id: str, name: str, tags: dict[str, str], start_time: int | None = None) -> str:
    return client.create_run(exp_id, run_name=name, tags=tags, start_time=start_time).info.run_id


@pytest.mark.with_upstream
def test_a_later_stage_closes_runs_of_dead_processes_of_this_host(run_stage, client, capsys):
    exp = client.get_experiment_by_name("MLPClassifier - Train").experiment_id
    dead = _open_run(client, exp, "killed", _dead_process_tags())
    foreign = _open_run(client, exp, "elsewhere", {**_dead_process_tags(), schema.HOST: "another-host"})
    alive = _open_run(client, exp, "alive", process_tags())
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        from xaitk_exp.tracking.processes import _process_tags

        other_live = _open_run(client, exp, "other-live", dict(_process_tags(sleeper.pid)))
        run_stage("stage=train")  # reuses the train run; the scan comes first
    finally:
        sleeper.kill()
        sleeper.wait()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "left RUNNING" in line]
    assert lines == ["xaitk-exp: closed 1 run(s) KILLED that a process of this host left RUNNING when it died: "
                     "1 in 'MLPClassifier - Train'"], err
    closed = client.get_run(dead)
    assert closed.info.status == "KILLED" and "process was gone" in closed.data.tags[schema.CLOSED_STALE]
    for run_id in (foreign, alive, other_live):
        assert client.get_run(run_id).info.status == "RUNNING"


@pytest.mark.with_upstream
def test_no_stale_runs_no_line(run_stage, capsys):
    run_stage("stage=train")
    assert "left RUNNING" not in capsys.readouterr().err


def test_the_stale_command_closes_old_running_runs_of_any_host(store, client, capsys, tmp_path):
    tracker = make_tracker("low", store)
    exp = tracker.experiment("Stale - Test")
    other = tracker.experiment("Stale - Other")
    three_hours_ago = int((time.time() - 3 * 3600) * 1000)
    old = _open_run(client, exp, "old", {schema.HOST: "a-laptop-that-is-gone"}, three_hours_ago)
    old_other = _open_run(client, other, "old-other", {}, three_hours_ago)
    young = _open_run(client, exp, "young", {schema.HOST: "a-laptop-that-is-gone"})
    assert main(["--older-than", "2h", "--uri", store, "--dry-run", "--experiment", "Stale - Test"]) == 0
    assert capsys.readouterr().out.strip() == ("would close 1 run(s) KILLED that were RUNNING for more than 2h: "
                                              "1 in 'Stale - Test'")
    assert client.get_run(old).info.status == "RUNNING"
    assert main(["--older-than", "2h", "--uri", store]) == 0
    assert capsys.readouterr().out.strip() == ("closed 2 run(s) KILLED that were RUNNING for more than 2h: "
                                              "1 in 'Stale - Other', 1 in 'Stale - Test'")
    assert client.get_run(old).info.status == client.get_run(old_other).info.status == "KILLED"
    assert "more than 2h" in client.get_run(old).data.tags[schema.CLOSED_STALE]
    assert client.get_run(young).info.status == "RUNNING"
    assert main(["--older-than", "2h", "--uri", store]) == 0
    assert capsys.readouterr().out.startswith("closed 0 run(s)")


@pytest.mark.parametrize(("args", "says"), [
    (["--older-than", "2h", "--uri", "sqlite:///{tmp}/none.db"], "no such SQLite store"),
    (["--older-than", "2h", "--uri", "{store}", "--experiment", "Nope"], "--experiment='Nope' is invalid"),
])
def test_the_stale_command_errors_are_one_line(store, client, capsys, tmp_path, args, says):
    make_tracker("low", store).experiment("Stale - Test")
    args = [a.replace("{tmp}", str(tmp_path)).replace("{store}", store) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("xaitk-exp: error: ") and says in err, err


def test_ages():
    assert [parse_age(a) for a in ("90", "90s", "30m", "2h", "1.5d")] == [90, 90, 1800, 7200, 129600]
    with pytest.raises(Exception, match="an age such as"):
        parse_age("two hours")


@pytest.mark.with_upstream
def test_a_relaunch_replaces_the_killed_run_of_an_image(run_stage, client, capsys):
    """A saliency run left RUNNING by a dead process: the relaunch closes it, redoes that image, and the experiment
    shows one run per image."""
    query = ["saliency=rise", "saliency.n=50", "query.max_results=2"]
    first = run_stage(*query).results["saliency_run_ids"]
    victim = first[0]
    client.update_run(victim, status="RUNNING")  # as a kill -9 in the middle of writing it leaves it
    for key, value in _dead_process_tags().items():
        client.set_tag(victim, key, value)
    capsys.readouterr()
    second = run_stage(*query).results["saliency_run_ids"]
    out, err = capsys.readouterr()
    assert "closed 1 run(s) KILLED" in err and "replacing 1 KILLED run(s)" in out, out + err
    assert second[1] == first[1] and second[0] != victim  # the finished image reused, the killed one redone
    exp = client.get_experiment_by_name("MLPClassifier - Saliency Map Generation").experiment_id
    runs = client.search_runs([exp])
    images = [r.data.tags[schema.IMAGE_ID] for r in runs]
    assert sorted(images) == sorted(set(images)) and len(images) == 2, images
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert client.get_run(victim).info.lifecycle_stage == "deleted"


@pytest.mark.slow
def test_a_real_kill_then_a_relaunch_leaves_one_finished_run_per_image(tmp_path):
    """SIGKILL of an evaluation while it writes its image runs, then the same command again: the dead process's
    runs are closed in one line, the killed evaluation is replaced, and each image has one run."""
    from conftest import exe, local_client

    args = ["stage=evaluation", "evaluation.num_images=150", "logging=mid", "progress=false"]
    assert run_cli(["stage=train", "progress=false"], tmp_path).returncode == 0
    client = local_client(tmp_path)
    # as run_cli does: a tracking URI an earlier test left in this process's environment must not redirect it
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    with (tmp_path / "killed.err").open("w") as err:
        proc = subprocess.Popen([*exe(), *args], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err, env=env)
    deadline, exp = time.time() + 300, None
    while time.time() < deadline and proc.poll() is None:
        found = client.get_experiment_by_name("MLPClassifier - Evaluation")
        if found is not None:
            exp = found.experiment_id
            if len(client.search_runs([exp], "tags.Run_type = 'image'", max_results=20)) >= 10:
                break
        time.sleep(0.1)
    if proc.poll() is not None:  # it must still be writing its image runs
        pytest.fail(f"the evaluation ended (exit {proc.returncode}) before it was killed, with "
                    f"{len(client.search_runs([exp], max_results=1000)) if exp else 0} runs: "
                    f"{(tmp_path / 'killed.err').read_text()[-2000:]}")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert exp is not None and client.search_runs([exp], "attributes.status = 'RUNNING'"), "killed too late"
    again = run_cli(args, tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    closed = [line for line in again.stderr.splitlines() if "left RUNNING when it died" in line]
    assert len(closed) == 1 and "in 'MLPClassifier - Evaluation'" in closed[0], again.stderr
    assert "replacing a KILLED evaluation" in again.stdout
    runs = client.search_runs([exp], max_results=1000)
    images = [r.data.tags[schema.IMAGE_ID] for r in runs if r.data.tags.get(schema.RUN_TYPE) == "image"]
    assert len(images) == 150 == len(set(images))
    assert {r.info.status for r in runs} == {"FINISHED"} and len(runs) == 151

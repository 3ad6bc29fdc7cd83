"""Faults a sweep meets: a job killed mid-stage, a tracking server that does not answer, an exception inside a
stage, and parallel jobs on a fresh SQLite store. Nothing recorded is lost; no run is left RUNNING."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_store, exe, run_cli
from sklearn.base import BaseEstimator, ClassifierMixin

from xaitk_exp.teamserver import free_port

TRAIN_EXP = "MLPClassifier - Train"


def _client(db: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{db}")


def _runs(client, name: str):
    exp = client.get_experiment_by_name(name)
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=1000)


# ----- a job killed mid-stage ----------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_killed_job_ends_its_run_and_a_rerun_completes(tmp_path, sig):
    import os

    db = tmp_path / "outputs" / "mlflow.db"
    # an MLP that would train for many minutes: no early stopping, a huge epoch budget
    slow = ["stage=train", "progress=false", "force=true", "model.max_iter=1000000", "+model.tol=0",
            "+model.n_iter_no_change=1000000"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    db.parent.mkdir(parents=True)
    _client(db).search_experiments()  # migrate the store here, so that polling it below races no migration
    # a shell that starts the test run in the background makes its children ignore SIGINT; a user's terminal does not
    proc = subprocess.Popen([*exe(), *slow], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        running = _wait_for_running(proc, db, timeout=240)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=300)  # generous: CI machines can be busy
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    run = _client(db).get_run(running)
    assert run.info.status in ("KILLED", "FAILED"), run.info.status
    assert run.info.end_time is not None
    again = run_cli(["stage=train", "progress=false"], cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    statuses = sorted(r.info.status for r in _runs(_client(db), TRAIN_EXP))
    assert statuses == sorted(["FINISHED", run.info.status]), statuses


def _wait_for_running(proc: subprocess.Popen, db: Path, timeout: float) -> str:
    """The id of the job's train run once it is RUNNING (and the fit is under way)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the job ended before it was killed: {proc.communicate()[1][-2000:]}")
        if db.exists():
            try:
                runs = [r for r in _runs(_client(db), TRAIN_EXP) if r.info.status == "RUNNING"]
            except Exception:  # the store is being created right now
                runs = []
            if runs and "hidden_layer_sizes" in runs[0].data.params:
                time.sleep(1.0)  # into model.fit
                return runs[0].info.run_id
        time.sleep(0.5)
    raise AssertionError("no RUNNING train run appeared")


SALIENCY_EXP = "MLPClassifier - Saliency Map Generation"


@pytest.mark.slow
@pytest.mark.parametrize("n_jobs", [1, 2])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_killed_saliency_leaves_no_run_open(tmp_path, sig, n_jobs, upstream_store):
    """``n_jobs=2``: the worker processes record the runs; ``n_jobs=1``: a thread records each run while the next
    image is explained. SIGTERM reaches the stage's process alone, Ctrl-C the whole process group; either way the
    job stops, and every run is FINISHED or closed KILLED/FAILED."""
    import os

    db = tmp_path / "outputs" / "mlflow.db"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    # the train run and a 60-image evaluation, made once in-process (not twice per case by the command)
    db.parent.mkdir()
    copy_store(upstream_store("evaluation.num_images=60"), db.parent)
    slow = ["stage=saliency", "progress=false", "evaluation.num_images=60", f"n_jobs={n_jobs}", "saliency=rise",
            "saliency.n=6000", "query.max_results=60"]
    proc = subprocess.Popen([*exe(), *slow], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"the job ended before it was killed: {proc.communicate()[1][-2000:]}")
            done = [r for r in _runs(_client(db), SALIENCY_EXP) if r.info.status == "FINISHED"]
            if len(done) >= 2:
                break
            time.sleep(0.3)
        else:
            raise AssertionError("no saliency run finished")
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)  # a terminal's Ctrl-C: the stage's process and its workers
        else:
            proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode != 0
    if sig == signal.SIGTERM:
        assert proc.returncode == 143 and "xaitk-exp: stopped (received signal 15)" in stderr, stderr[-2000:]
    time.sleep(1.0)  # a worker that outlived the job would still write now
    runs = _runs(_client(db), SALIENCY_EXP)
    statuses = [r.info.status for r in runs]
    assert "RUNNING" not in statuses, (statuses, stderr[-2000:])
    assert 2 <= statuses.count("FINISHED") < 60, statuses
    assert all(r.info.end_time is not None for r in runs)


# ----- a tracking server that does not answer ------------------------------------------------------------------
@pytest.fixture
def silent_server():
    """A loopback port whose socket accepts connections (kernel backlog) but never replies."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["accepts-never-replies", "nothing-listening"])
def test_unanswering_tracking_server_fails_fast_in_one_line(tmp_path, silent_server, kind):
    url = silent_server if kind == "accepts-never-replies" else f"http://127.0.0.1:{free_port()}"
    timeout, retries, backoff = 2, 1, 0.5
    # what the settings allow: every attempt times out, plus the backoff sleeps between them
    request_bound = (retries + 1) * timeout + sum(backoff * 2**i for i in range(retries))
    startup = 60  # interpreter, imports and the data on a busy 2-core machine
    start = time.monotonic()
    proc = run_cli(
        ["stage=train", "progress=false", f"tracking.uri={url}", f"tracking.http.timeout={timeout}",
         f"tracking.http.max_retries={retries}", f"tracking.http.backoff_factor={backoff}"],
        cwd=tmp_path,
        timeout=600,  # MLflow's own defaults (120 s a request, 7 retries) would run far past the bound below
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert elapsed < startup + request_bound, f"took {elapsed:.0f} s"
    errors = [line for line in proc.stderr.splitlines() if line.startswith("xaitk-exp: error: ")]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert re.match(r"xaitk-exp: error: tracking\.uri: the tracking store cannot be read \(", errors[0])
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_default_http_bounds_hold(tmp_path, silent_server):
    """The shipped bounds (tracking.http: timeout 20, max_retries 2, backoff_factor 1) reach MLflow."""
    proc = run_cli(["stage=train", "progress=false", f"tracking.uri={silent_server}", "--cfg", "job"], cwd=tmp_path)
    assert proc.returncode == 0
    http = re.search(r"http:\s*\n\s*timeout: (\d+)\s*\n\s*max_retries: (\d+)\s*\n\s*backoff_factor: ([\d.]+)",
                     proc.stdout)
    assert http, proc.stdout
    timeout, retries, backoff = int(http[1]), int(http[2]), float(http[3])
    assert (retries + 1) * timeout + sum(backoff * 2**i for i in range(retries)) <= 120, "over two minutes a request"


# ----- an exception inside a stage -----------------------------------------------------------------------------
class ExplodingClassifier(ClassifierMixin, BaseEstimator):
    """A real estimator whose ``fit`` fails: the fault is injected inside the train stage's run."""

    def __init__(self, message: str = "injected fault") -> None:
        self.message = message

    def fit(self, X, y):
        raise RuntimeError(self.message)

    def predict_proba(self, X):
        return np.full((len(X), 2), 0.5)


@pytest.mark.parametrize("level", ["high", "mid", "low"])
def test_exception_inside_a_stage_fails_the_run_with_its_traceback(run_stage, client, tmp_path, level):
    with pytest.raises(RuntimeError, match="injected fault"):
        run_stage("stage=train", "model=estimator", f"model._target_={__name__}.ExplodingClassifier",
                  f"allow_targets=[{__name__}.]", f"logging={level}")
    (run,) = _runs(client, "ExplodingClassifier - Train")
    assert run.info.status == "FAILED"
    assert "injected fault" in run.data.tags["error"]
    text = Path(client.download_artifacts(run.info.run_id, "traceback.txt", str(tmp_path))).read_text()
    assert "Traceback (most recent call last)" in text and "RuntimeError: injected fault" in text
    assert "in fit" in text


def _fails_on_second_call(monkeypatch, owner, name: str) -> None:
    real, calls = getattr(owner, name), []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("injected fault")
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapped)


@pytest.mark.with_upstream
@pytest.mark.parametrize("where", ["explain", "record"])
@pytest.mark.parametrize("level", ["mid", "low"])
def test_a_fault_while_runs_are_written_in_the_background_leaves_no_run_open(
    run_stage, client, monkeypatch, where, level
):
    """With n_jobs=1 each saliency run is written by a thread while the next image is explained: a fault in the
    second image's maps or in its run stops the stage; the first run ends FINISHED, no run stays RUNNING."""
    from xaitk_exp.stages.saliency import image
    from xaitk_exp.tracking.tracker import Tracker

    if where == "explain":
        _fails_on_second_call(monkeypatch, image, "explain")
    else:
        _fails_on_second_call(monkeypatch, Tracker, "log_image")
    with pytest.raises(RuntimeError, match="injected fault"):
        run_stage("stage=saliency", "query.max_results=3", f"logging={level}")
    runs = sorted(_runs(client, "MLPClassifier - Saliency Map Generation"), key=lambda r: r.info.start_time)
    assert [r.info.status for r in runs] == (["FINISHED"] if where == "explain" else ["FINISHED", "FAILED"])
    if where == "record":
        assert "injected fault" in runs[1].data.tags["error"]


# ----- parallel jobs on a fresh SQLite store -------------------------------------------------------------------
@pytest.mark.slow
def test_eight_jobs_four_in_parallel_on_a_fresh_sqlite_store(tmp_path):
    seeds = list(range(8))
    proc = run_cli(
        ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", "stage=train", "model=logistic_regression",
         "progress=false", f"seed={','.join(map(str, seeds))}"],
        cwd=tmp_path,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    client = _client(tmp_path / "outputs" / "mlflow.db")
    assert len([e for e in client.search_experiments() if e.name == "LogisticRegression - Train"]) == 1
    runs = [r for r in _runs(client, "LogisticRegression - Train") if r.info.run_name == "train_info"]
    assert sorted(int(r.data.params["random_state"]) for r in runs) == seeds
    assert all(r.info.status == "FINISHED" for r in runs)
    for run in runs:
        files = {f.path for f in client.list_artifacts(run.info.run_id, "sklearn-model")}
        assert "sklearn-model/model.skops" in files


@pytest.mark.slow
def test_processes_opening_one_fresh_store_at_once_all_succeed(tmp_path):
    """MLflow's schema migrations race when several processes open a new SQLite store together."""
    import sys

    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    code = (
        "import sys; from xaitk_exp.tracking.low import LowTracker; "
        "t = LowTracker(sys.argv[1]); print(t.experiment('Probe'))"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, uri], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [err[-800:] for _, err in results]
    assert len({out.strip() for out, _ in results}) == 1  # one experiment, whoever created it


def test_runs_a_dead_worker_left_open_are_closed_killed(tmp_path):
    """The stage's safety net for ``n_jobs`` > 1: each run a worker opens is named in ``<folder>.run_id``; after an
    early stop, those still RUNNING are closed KILLED and the others are left as they are."""
    from xaitk_exp.stages.saliency.image import RUN_ID_SUFFIX, close_orphans
    from xaitk_exp.tracking.factory import make_tracker

    tracker = make_tracker("low", f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = tracker.experiment("Probe")
    open_run = tracker.start_run(exp, "open")
    with tracker.run(exp, "done") as done_run:
        pass
    root = tmp_path / "work"
    root.mkdir()
    (root / f"000000{RUN_ID_SUFFIX}").write_text(done_run)
    (root / f"000001{RUN_ID_SUFFIX}").write_text(open_run)
    (root / f"000002{RUN_ID_SUFFIX}").write_text("0" * 32)  # a run the store never got: skipped
    assert close_orphans(tracker, root) == [open_run]
    assert tracker.get_run(open_run).info.status == "KILLED"
    assert tracker.get_run(open_run).info.end_time is not None
    assert tracker.get_run(done_run).info.status == "FINISHED"


def test_shared_work_gives_every_result_once_and_survives_an_early_stop():
    """:func:`xaitk_exp.parallel.share_work` with a real worker process: each job's result comes back once, with its
    index; a consumer that stops early leaves no job running, and the next call works."""
    import operator

    from xaitk_exp.parallel import share_work

    def here(j):  # slow enough for the worker to start and take jobs
        time.sleep(0.05)
        return float(3 * j)

    got = dict(share_work(range(120), here, operator.mul, (3,), 2, operator.pos))
    assert got == {j: 3 * j for j in range(120)}
    kinds = {type(v) for v in got.values()}
    assert kinds == {int, float}, kinds  # jobs ran in the worker (int) and here (float)
    work = share_work(range(1000), lambda j: j, operator.mul, (1,), 2, operator.pos)
    assert next(work)[1] in range(1000)
    work.close()
    assert sorted(dict(share_work(range(5), lambda j: -j, operator.mul, (-1,), 2)).items()) == [
        (j, -j) for j in range(5)]


# ----- a worker that dies: one line, promptly, never a hang ----------------------------------------------------------
# Each case runs in its own Python process under a timeout, so that a regression fails instead of hanging the run.
_WORKER_DEATH = '''
import os, sys, time
from xaitk_exp.errors import WorkerDied
from xaitk_exp.parallel import share_work

def die(*args):
    os._exit(7)

def slow_here(j):
    time.sleep(0.05)
    return j

def check(label, **kw):
    start = time.monotonic()
    try:
        list(share_work(range(400), slow_here, **kw))
    except WorkerDied as exc:
        print(label, round(time.monotonic() - start, 1), str(exc), sep="|")
    else:
        print(label, "no error", sep="|")

check("job", remote=die, remote_args=(), processes=2)
check("warmup", remote=pow, remote_args=(2,), processes=2, warmup=die)
got = dict(share_work(range(50), slow_here, pow, (2,), 2))  # the next call starts fresh workers
print("after", sorted(got) == list(range(50)), sep="|")
'''


def _python(code: str, timeout: float = 240) -> subprocess.CompletedProcess:
    import sys

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, check=False)


def test_a_worker_that_dies_stops_the_work_in_one_line_instead_of_hanging():
    """A worker process that exits in a job or in its warm-up (``os._exit``, as a crash or the OOM killer would):
    share_work raises WorkerDied, one line naming n_jobs=1, within seconds; the next call works with new workers."""
    out = _python(_WORKER_DEATH)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(line.split("|", 1) for line in out.stdout.splitlines())
    for label in ("job", "warmup"):
        seconds, message = lines[label].split("|", 1)
        assert float(seconds) < 15, lines[label]  # 400 jobs here would take 20 s: the death is noticed early
        assert "worker process died" in message and "n_jobs=1" in message and "\n" not in message, message
        assert "7" in message, message  # the worker's exit code
    assert lines["after"] == "True"


_RETIRED_WORKER = '''
import time, warnings
warnings.simplefilter("error")  # as pytest's filterwarnings = error, or python -W error
from xaitk_exp.parallel import share_work

def grow(j):
    import json, os
    json.N = getattr(json, "N", 0) + 1
    if json.N == 2:  # as loading a pt2 program imports torch.export's modules in a worker kept from an ONNX stage
        json.BLOB = b"\\x01" * (400 * 1024 * 1024)
        time.sleep(1.2)  # past loky's 1 s between memory checks
    return j, os.getpid()

def here(j):
    time.sleep(0.3)
    return j, 0

got = dict(share_work(range(30), here, grow, (), 2))
print(sorted(got) == list(range(30)), len({pid for _, pid in got.values()}) > 2)
'''


def test_a_worker_loky_retires_for_its_memory_growth_is_replaced_under_warnings_as_errors():
    """loky retires a worker whose memory grew by over 300 MB since its first job and warns, in its manager thread,
    when jobs were queued; with warnings as errors that warning killed the thread and share_work waited forever
    (n_jobs=2 on an ONNX model, then on a torch class model, in one process). Now another worker takes the jobs."""
    out = _python(_RETIRED_WORKER)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["True", "True"], (out.stdout, out.stderr[-3000:])


_SIGTERMED = '''
import sys, time
from xaitk_exp.errors import RunKilled
from xaitk_exp.parallel import share_work
from xaitk_exp.tracking.signals import sigterm_raises

def slow(j):
    time.sleep(1.0)
    return j

def here(j):
    time.sleep(0.2)
    return j

try:
    with sigterm_raises():
        for k, _ in share_work(range(10000), here, slow, (), 2):
            if k == 40:
                print("working", flush=True)
except RunKilled:
    print("killed", flush=True)
'''


def test_sigterm_stops_shared_work_promptly():
    """SIGTERM while share_work runs: the jobs a worker holds finish (a few seconds at most), then the process ends;
    it never waits on its workers without bound."""
    import sys

    proc = subprocess.Popen([sys.executable, "-c", _SIGTERMED], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "working"
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert out.strip() == "killed" and time.monotonic() - start < 30
    finally:
        proc.kill()
        proc.wait()

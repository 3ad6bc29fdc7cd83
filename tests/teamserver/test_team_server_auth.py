"""A team server that lets in only its team: ``python -m xaitk_exp.teamserver`` (MLflow's basic-auth app on a real
PostgreSQL), its ``user`` commands, and ``xaitk-exp`` as the admin, a READ user, an EDIT user and a sweep.

One server for the module, started as a user starts it (a subprocess of the command) and stopped with SIGTERM.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import run_cli

from xaitk_exp.errors import ConfigError
from xaitk_exp.teamserver import free_port, postgres_missing_reason, team_server
from xaitk_exp.tracking.access import credentials_from_argv, refusal

SERVER = pytest.mark.skipif(postgres_missing_reason() is not None, reason=str(postgres_missing_reason()))
CREDENTIAL_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
SMALL = ["progress=false", "evaluation.num_images=3", "query.max_results=1"]
PASSWORDS = {"bob": "bob-reads-only-1", "carol": "carol-writes-22x", "dave": "dave-first-pw-333"}
STAGES = ("Train", "Evaluation", "Saliency Map Generation")


# ----- no server needed ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("token", "clean"),
    [
        ("tracking.uri=http://u:p%40ss@h:5000", "tracking.uri=http://h:5000"),
        ("++tracking.uri='https://u:p%40ss@h/x'", "++tracking.uri='https://h/x'"),
        ("tracking.uri=http://u:p%40ss@h1:1,http://u:p%40ss@h2:2", "tracking.uri=http://h1:1,http://h2:2"),
        ("tracking.uri=sqlite:///a@b.db", "tracking.uri=sqlite:///a@b.db"),
        ("seed=1", "seed=1"),
    ],
)
def test_credentials_leave_the_command_line(token, clean):
    env: dict[str, str] = {}
    assert credentials_from_argv([token, "stage=train"], env) == [clean, "stage=train"]
    if "u:p" in token:
        assert env == {"MLFLOW_TRACKING_USERNAME": "u", "MLFLOW_TRACKING_PASSWORD": "p@ss"}
    else:
        assert env == {}


def test_credentials_in_the_environment_uri_move_too():
    env = {"MLFLOW_TRACKING_URI": "http://ann:secret-pw@h:1"}
    assert credentials_from_argv(["seed=1"], env) == ["seed=1"]
    assert env == {"MLFLOW_TRACKING_URI": "http://h:1", "MLFLOW_TRACKING_USERNAME": "ann",
                   "MLFLOW_TRACKING_PASSWORD": "secret-pw"}


def test_two_users_in_one_sweep_are_refused():
    with pytest.raises(ConfigError, match=r"^tracking\.uri=.* is invalid: one user name and password"):
        credentials_from_argv(["tracking.uri=http://a:pw1@h:1,http://b:pw2@h:1"], {})


def test_refusal_lines(monkeypatch):
    from mlflow.exceptions import MlflowException

    exc = MlflowException("API request to endpoint /api/2.0/mlflow/runs/create failed with error code 403 != 200. "
                          "Response body: 'Permission denied'", error_code="PERMISSION_DENIED")
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.setenv("HOME", "/nonexistent")  # no ~/.mlflow/credentials
    line = refusal(exc, "http://zed:pw@h:1")
    assert line is not None and line.startswith("tracking.uri: user 'zed' is not allowed to create a run (HTTP 403)")
    assert refusal(ValueError("nothing to do with HTTP"), "http://h:1") is None


def test_open_server_beyond_loopback_needs_a_decision():
    with pytest.raises(ValueError, match=r"^host='0\.0\.0\.0' is invalid without authentication"):
        with team_server(host="0.0.0.0"):
            pass


@pytest.mark.parametrize(("args", "says"), [
    (["--auth-cache-ttl", "-1"], "--auth-cache-ttl=-1 is invalid"),
    (["--workers", "0"], "--workers=0 is invalid"),
    (["user", "grant", "bob", "--experiment", "X", "--permission", "WRITE", "--url", "http://127.0.0.1:9"],
     "--permission='WRITE' is invalid: one of READ, USE, EDIT, MANAGE, DENY"),
    (["user", "list", "--url", "ftp://h"], "--url='ftp://h' is invalid"),
    (["user", "list", "--url", "http://127.0.0.1:9"], "no admin credentials: give --dir"),
])
def test_teamserver_bad_input_is_one_line(args, says):
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_ENV}
    proc = subprocess.run([sys.executable, "-m", "xaitk_exp.teamserver", *args], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and says in proc.stderr, proc.stderr


# ----- one authenticating server for the rest ------------------------------------------------------------------
class Server:
    def __init__(self, url: str, folder: Path, console: str) -> None:
        self.url, self.folder, self.console = url, folder, console

    @property
    def admin_password(self) -> str:
        return (self.folder / "admin-password").read_text().strip()

    def env(self, user: str | None, password: str | None = None, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_ENV}
        if user:
            env["MLFLOW_TRACKING_USERNAME"] = user
            env["MLFLOW_TRACKING_PASSWORD"] = password or (self.admin_password if user == "admin" else PASSWORDS[user])
        return {**env, **extra}

    def teamserver(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "xaitk_exp.teamserver", *args, "--dir", str(self.folder)],
                              input=stdin, capture_output=True, text=True, env=self.env(None), timeout=120,
                              check=False)

    def client(self, user: str, monkeypatch):
        from mlflow import MlflowClient

        for key, value in self.env(user).items():
            if key.startswith("MLFLOW_TRACKING_"):
                monkeypatch.setenv(key, value)
        return MlflowClient(self.url)


@pytest.fixture(scope="module")
def server():
    if postgres_missing_reason():
        pytest.skip(str(postgres_missing_reason()))
    # not under pytest's folder: as root, PostgreSQL runs as the postgres user, which cannot enter it
    folder = Path(tempfile.mkdtemp(prefix="xaitk-team-auth-"))
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_ENV}
    proc = subprocess.Popen(
        [sys.executable, "-m", "xaitk_exp.teamserver", "--workers", "2", "--port", str(free_port()),
         "--dir", str(folder)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    console, url = "", None
    deadline = time.monotonic() + 240
    try:
        while "use it:" not in console and time.monotonic() < deadline and proc.poll() is None:
            try:
                line = lines.get(timeout=1.0)
            except queue.Empty:
                continue
            console += line
            found = re.match(r"tracking server: (http://\S+)", line)
            url = found.group(1) if found else url
        assert url and "use it:" in console, f"the team server did not start: {console[-3000:]}"
        yield Server(url, folder, console)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        time.sleep(0.2)  # the reader thread's last lines
        while not lines.empty():  # what it printed after "use it:" (why it stopped, when it did)
            console += lines.get()
        log = folder / "mlflow-server.log"
        console += log.read_text()[-3000:] if proc.returncode and log.exists() else ""
        proc.stdout.close()
        shutil.rmtree(folder, ignore_errors=True)
    assert proc.returncode == 0, console[-5000:]
    assert not _answers(url)


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(f"{url}/health", timeout=3)
    except (urllib.error.URLError, OSError):
        return False
    return True


def _status(url: str, path: str, user: str | None = None, password: str | None = None) -> int:
    request = urllib.request.Request(url + path)
    if user:
        import base64

        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


@SERVER
@pytest.mark.slow
def test_console_and_files_keep_the_admin_password_secret(server):
    password = server.admin_password
    assert len(password) >= 12
    assert f"its password is in {server.folder / 'admin-password'}" in server.console
    assert password not in server.console
    assert stat.S_IMODE((server.folder / "admin-password").stat().st_mode) == 0o600
    ini = (server.folder / "basic_auth.ini").read_text()
    assert "default_permission = READ" in ini and "/mlflow_auth" in ini and password not in ini
    assert password not in (server.folder / "mlflow-server.log").read_text()


@SERVER
@pytest.mark.slow
def test_anonymous_and_wrong_passwords_are_refused(server):
    search = "/api/2.0/mlflow/experiments/search?max_results=1"
    assert _status(server.url, search) == 401
    assert _status(server.url, search, "admin", "not-the-password") == 401
    assert _status(server.url, search, "admin", server.admin_password) == 200
    assert _status(server.url, "/health") == 200  # load balancers may still ask


@SERVER
@pytest.mark.slow
def test_user_commands(server):
    for name in ("bob", "carol", "dave"):
        added = server.teamserver("user", "add", name, stdin=PASSWORDS[name] + "\n")
        assert added.returncode == 0, added.stderr
        assert PASSWORDS[name] not in added.stdout + added.stderr
    listed = server.teamserver("user", "list")
    assert listed.stdout.split("\n")[:4] == ["admin  (admin)", "bob", "carol", "dave"]
    again = server.teamserver("user", "add", "bob", stdin="another-long-pw\n")
    assert again.returncode == 2 and again.stderr.startswith("xaitk-exp teamserver: error: user 'bob' was not created")
    short = server.teamserver("user", "add", "erin", stdin="short\n")
    assert short.returncode == 2 and "at least 12" in short.stderr and short.stderr.count("\n") == 1
    missing = server.teamserver("user", "grant", "carol", "--experiment", "No Such", "--permission", "EDIT")
    assert missing.returncode == 2 and "--experiment='No Such' does not exist" in missing.stderr
    assert _status(server.url, "/api/2.0/mlflow/users/current", "dave", PASSWORDS["dave"]) == 200
    changed = server.teamserver("user", "password", "dave", stdin="dave-second-pw-44\n")
    assert changed.returncode == 0, changed.stderr
    assert _status(server.url, "/api/2.0/mlflow/users/current", "dave", "dave-second-pw-44") == 200
    # a user who is not an admin cannot add users
    wrong = subprocess.run([sys.executable, "-m", "xaitk_exp.teamserver", "user", "add", "mallory", "--url",
                            server.url], input="mallory-password-1\n", capture_output=True, text=True, timeout=120,
                           check=False, env=server.env("bob"))
    assert wrong.returncode == 2 and "user 'bob' is not an admin" in wrong.stderr, wrong.stderr


@pytest.fixture(scope="module")
def admin_run(server, tmp_path_factory):
    """The pipeline as the admin, as a user runs it."""
    cwd = tmp_path_factory.mktemp("admin")
    proc = run_cli([f"tracking.uri={server.url}", *SMALL], cwd=cwd, env=server.env("admin"), timeout=900)
    return proc


@SERVER
@pytest.mark.slow
def test_admin_runs_the_pipeline(server, admin_run, monkeypatch):
    assert admin_run.returncode == 0, admin_run.stderr[-3000:]
    client = server.client("admin", monkeypatch)
    names = {e.name for e in client.search_experiments()}
    assert {f"MLPClassifier - {s}" for s in STAGES} <= names
    runs = _all_runs(client)
    assert runs and all(r.info.status == "FINISHED" for r in runs)


def _all_runs(client):
    return client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=5000)


@SERVER
@pytest.mark.slow
def test_read_user_searches_but_its_run_is_refused_in_one_line(server, admin_run, monkeypatch, tmp_path):
    assert admin_run.returncode == 0
    bob = server.client("bob", monkeypatch)
    assert bob.search_runs([bob.get_experiment_by_name("MLPClassifier - Train").experiment_id])
    before = len(_all_runs(bob))
    proc = run_cli([f"tracking.uri={server.url}", *SMALL], cwd=tmp_path, env=server.env("bob"))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.splitlines() == [
        "xaitk-exp: error: tracking.uri: user 'bob' has no EDIT permission on experiment 'MLPClassifier - Train' "
        "(it has READ); an admin grants it with: python -m xaitk_exp.teamserver user grant bob --experiment "
        "'MLPClassifier - Train' --permission EDIT"]
    after = _all_runs(server.client("admin", monkeypatch))
    assert len(after) == before and not [r for r in after if r.info.status == "RUNNING"]


@SERVER
@pytest.mark.slow
def test_refused_halfway_is_one_line_too(server, admin_run, monkeypatch, tmp_path):
    """A stored model hides the experiment until it is loaded: the server's 403 itself becomes the line."""
    admin = server.client("admin", monkeypatch)
    train = admin.search_runs([admin.get_experiment_by_name("MLPClassifier - Train").experiment_id])[0]
    proc = run_cli([f"tracking.uri={server.url}", "stage=evaluation", "model=pretrained",
                    f"model.uri=runs:/{train.info.run_id}/"
                    "sklearn-model", *SMALL], cwd=tmp_path, env=server.env("bob"))
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("xaitk-exp: error:")]
    assert errors and errors[0].startswith("xaitk-exp: error: tracking.uri: user 'bob' is not allowed to "), errors
    assert "Traceback" not in proc.stderr
    assert not [r for r in _all_runs(admin) if r.info.status == "RUNNING"]


@SERVER
@pytest.mark.slow
def test_wrong_or_missing_password_is_one_line(server, tmp_path):
    wrong = run_cli([f"tracking.uri={server.url}", "stage=train", *SMALL], cwd=tmp_path,
                    env=server.env("carol", "not-carols-password"))
    assert wrong.returncode == 2
    assert wrong.stderr.splitlines() == [
        "xaitk-exp: error: tracking.uri: the server refused user 'carol' (wrong or missing password; set "
        "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or a ~/.netrc entry)"]
    anonymous = run_cli([f"tracking.uri={server.url}", "stage=train", *SMALL], cwd=tmp_path, env=server.env(None))
    assert anonymous.returncode == 2 and anonymous.stderr.startswith(
        "xaitk-exp: error: tracking.uri: the server requires a user name and password")


@SERVER
@pytest.mark.slow
def test_netrc_credentials_are_used(server, tmp_path, monkeypatch):
    from xaitk_exp.tracking.access import Identity, whoami

    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login carol password {PASSWORDS['carol']}\n")
    netrc.chmod(0o600)
    for key in CREDENTIAL_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.mlflow/credentials
    assert whoami(server.url) == Identity("carol", False)


@pytest.fixture(scope="module")
def carol_can_edit(server, admin_run):
    granted = server.teamserver("user", "grant", "carol", "--model", "MLPClassifier", "--permission", "EDIT")
    assert granted.returncode == 0, granted.stderr
    assert granted.stdout.count("carol: EDIT on experiment") == 3
    return granted


@SERVER
@pytest.mark.slow
def test_edit_user_runs_and_its_password_is_saved_nowhere(server, carol_can_edit, tmp_path, monkeypatch):
    secret = PASSWORDS["carol"]
    with_creds = server.url.replace("http://", f"http://carol:{secret}@")
    started = int(time.time() * 1000)
    proc = run_cli([f"tracking.uri={with_creds}", "force=true", *SMALL], cwd=tmp_path, env=server.env(None))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert secret not in proc.stdout + proc.stderr
    files = [p for p in (tmp_path / "outputs").rglob("*") if p.is_file()]
    assert any(p.name == "overrides.yaml" for p in files)
    assert [p for p in files if secret.encode() in p.read_bytes()] == []
    overrides = next(p for p in files if p.name == "overrides.yaml").read_text()
    assert f"tracking.uri={server.url}" in overrides and "carol" not in overrides
    admin = server.client("admin", monkeypatch)
    mine = [r for r in _all_runs(admin) if r.info.start_time >= started]
    assert {r.data.tags.get("Run_type") for r in mine} >= {"image"}  # per-image evaluation runs were written
    assert len(mine) > 3 and all(r.info.status == "FINISHED" for r in mine)
    for run in mine:
        assert not [k for k, v in {**run.data.params, **run.data.tags}.items() if secret in str(v)]


@SERVER
@pytest.mark.slow
def test_sweep_of_two_jobs_with_the_users_credentials(server, carol_can_edit, tmp_path, monkeypatch):
    started = int(time.time() * 1000)
    proc = run_cli(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"tracking.uri={server.url}",
                    "stage=saliency", "saliency=rise,occlusion_random_grid", *SMALL],
                   cwd=tmp_path, env=server.env("carol"), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    admin = server.client("admin", monkeypatch)
    exp = admin.get_experiment_by_name("MLPClassifier - Saliency Map Generation")
    runs = admin.search_runs([exp.experiment_id], f"attributes.start_time >= {started}")
    algorithms = {r.data.tags.get("Saliency_algorithm") for r in runs if r.data.tags.get("Saliency_algorithm")}
    assert algorithms == {"rise", "occlusion_random_grid"}
    assert runs and all(r.info.status == "FINISHED" for r in runs), {r.info.run_name: r.info.status for r in runs}


@SERVER
@pytest.mark.slow
def test_admin_password_change_updates_its_file(server):
    old = server.admin_password
    changed = server.teamserver("user", "password", "admin", stdin="admin-new-password-55\n")
    assert changed.returncode == 0, changed.stderr
    assert server.admin_password == "admin-new-password-55" != old
    assert stat.S_IMODE((server.folder / "admin-password").stat().st_mode) == 0o600
    assert _status(server.url, "/api/2.0/mlflow/users/current", "admin", "admin-new-password-55") == 200

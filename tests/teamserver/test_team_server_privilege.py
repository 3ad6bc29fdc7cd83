"""A real team server, started as users start it (``python -m xaitk_exp.teamserver``), checked the way a hostile
account on the same machine or a hostile teammate would try it: secrets while it starts, ownership, the database
role, artifact locations and paths, grants, failed logins, a taken port, a dead child, a killed wrapper."""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
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
from pathlib import Path

import pytest

from xaitk_exp.teamserver import free_port, postgres_missing_reason

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(postgres_missing_reason() is not None, reason=str(postgres_missing_reason())),
]
ROOT = os.geteuid() == 0
CREDENTIAL_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
SECRETS = ("admin-password", "pgpassword", "pgowner-password", "flask-secret-key")
# as nobody: try to read every secret (and any initdb password file) in a loop until told to stop
SNOOP = f"""
import glob, os, sys, time
folder, stop = sys.argv[1], sys.argv[2]
names = [os.path.join(folder, n) for n in {SECRETS!r}]
got = set()
while not os.path.exists(stop):
    for path in names + glob.glob(os.path.join(folder, ".initdb-pw*")) + glob.glob(os.path.join(folder, ".*-*")):
        try:
            with open(path) as f:
                f.read()
            got.add(path)
        except OSError:
            pass
    time.sleep(0.005)
print("\\n".join(sorted(got)))
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in CREDENTIAL_ENV}


class Started:
    """A ``python -m xaitk_exp.teamserver`` process and the lines it printed."""

    def __init__(self, folder: Path, *args: str) -> None:
        self.folder = folder
        cmd = [sys.executable, "-m", "xaitk_exp.teamserver", "--workers", "1", "--dir", str(folder), "--port",
               str(free_port()), *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                                     start_new_session=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.out = ""
        threading.Thread(target=lambda: [self.lines.put(x) for x in self.proc.stdout], daemon=True).start()

    def wait_url(self, timeout: float = 240) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                self.out += self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            found = re.search(r"tracking server: (http://\S+)", self.out)
            if found and "use it:" in self.out:
                return found.group(1)
        return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


def _fresh_folder() -> Path:
    parent = Path(tempfile.mkdtemp(prefix="xaitk-team-priv-"))
    parent.chmod(0o755)
    return parent / "team"


@pytest.fixture(scope="module")
def server():
    folder = _fresh_folder()
    stop = folder.parent / "stop-snooping"
    snoop = None
    if ROOT:  # an unprivileged account tries to read the secrets for the whole start-up
        snoop = subprocess.Popen(["runuser", "-u", "nobody", "--", sys.executable, "-I", "-c", SNOOP, str(folder),
                                  str(stop)], stdout=subprocess.PIPE, text=True)
    loose: set[tuple[str, int]] = set()
    watching = threading.Event()
    watching.set()

    def watch() -> None:  # as root: every secret-like file's mode, every few ms, while the server starts
        while watching.is_set():
            try:
                entries = list(os.scandir(folder))
            except OSError:
                entries = []
            for entry in entries:
                # every dot-file is a temporary of a secret, but for the two public files (the URL and the pids)
                # and basic_auth.ini's (no secret in it: the server's account reads it through its group, 0640)
                public = entry.name.startswith((".url.", ".server.json."))
                group_read = entry.name.startswith(".basic_auth.ini.")
                secret = entry.name in SECRETS or (entry.name.startswith(".") and not public)
                try:
                    mode = entry.stat(follow_symlinks=False).st_mode
                except OSError:
                    continue
                if secret and mode & (0o037 if group_read else 0o077):
                    loose.add((entry.name, stat.S_IMODE(mode)))
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = Started(folder)
    try:
        url = started.wait_url()
        watching.clear()
        watcher.join()
        started.loose = loose
        assert url, f"the team server did not start: {started.out[-2000:]} {started.proc.stderr.read()[-2000:]}"
        stolen = None
        if snoop is not None:
            time.sleep(0.5)
            stop.touch()
            stolen = snoop.communicate(timeout=60)[0].split()
        started.url, started.stolen = url, stolen
        yield started
    finally:
        stop.touch()
        started.stop()
        shutil.rmtree(folder.parent, ignore_errors=True)


def _auth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _call(url: str, method: str, path: str, body: object = None, headers: dict[str, str] | None = None,
          source: str = "127.0.0.1", raw: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    host, port = url.rsplit("//", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60, source_address=(source, 0))
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    out = resp.status, dict(resp.getheaders()), resp.read()
    conn.close()
    return out


def _admin(server) -> dict[str, str]:
    return _auth("admin", (server.folder / "admin-password").read_text().strip())


def _teamserver(server, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """``python -m xaitk_exp.teamserver ARGS --dir FOLDER``, run in this process (its ``main``)."""
    from xaitk_exp.teamserver.__main__ import main

    out, err, saved = io.StringIO(), io.StringIO(), sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([*args, "--dir", str(server.folder)])
    finally:
        sys.stdin = saved
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


# ----- secrets and ownership -------------------------------------------------------------------------------------
def test_no_secret_was_readable_by_another_account_during_start_up(server):
    assert server.stolen in ([], None)  # None: not root, no other account to read as
    assert server.loose == set()  # no secret, temporary or initdb file was ever readable by group or others
    for name in SECRETS:
        path = server.folder / name
        info = path.stat()
        assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == os.geteuid(), name
        if not ROOT:
            continue
        denied = subprocess.run(["runuser", "-u", "nobody", "--", "cat", str(path)], capture_output=True, text=True,
                                check=False)
        assert denied.returncode != 0 and "Permission denied" in denied.stderr
    assert not list(server.folder.glob(".initdb-pw*"))  # initdb's password file is gone


@pytest.mark.skipif(not ROOT, reason="ownership across accounts needs root")
def test_the_folder_stays_roots_and_only_pgdata_is_postgres(server):
    import psutil

    info = server.folder.stat()
    assert info.st_uid == 0 and not info.st_mode & 0o022
    owners = {p.name: p.stat().st_uid for p in server.folder.iterdir()}
    assert owners.pop("pgdata") == 101 and stat.S_IMODE((server.folder / "pgdata").stat().st_mode) == 0o700
    assert owners.pop("artifacts") == owners.pop("server-state") == 65534
    assert set(owners.values()) == {0}, owners  # every other file stays root's
    # nobody cannot plant anything where the server or root would read it
    planted = subprocess.run(["runuser", "-u", "nobody", "--", "touch", str(server.folder / "click.py")],
                             capture_output=True, check=False)
    assert planted.returncode != 0
    # the tracking server and its workers run as nobody, with no folder of the working directory on sys.path
    state = json.loads((server.folder / "server.json").read_text())
    top = psutil.Process(state["mlflow"])
    family = [top, *top.children(recursive=True)]
    assert {p.uids().real for p in family} == {65534} and {p.uids().effective for p in family} == {65534}
    assert "-I" in top.cmdline()[:3]
    assert all(p.environ().get("PYTHONSAFEPATH") == "1" for p in family)
    assert top.cwd() == str(server.folder)
    postmaster = psutil.Process(state["postgres"])
    assert postmaster.uids().real == 101


def test_mlflows_database_role_is_no_superuser(server):
    import psycopg

    state = json.loads((server.folder / "server.json").read_text())
    password = (server.folder / "pgpassword").read_text().strip()
    conninfo = dict(host="127.0.0.1", port=state["postgres_port"], user="mlflow", password=password)
    with psycopg.connect(**conninfo, dbname="mlflow", autocommit=True) as conn:
        row = conn.execute("SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls "
                           "FROM pg_roles WHERE rolname = 'mlflow'").fetchone()
        assert row == (False, False, False, False, False)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("COPY (SELECT 1) TO PROGRAM 'id'")
        assert conn.execute("SELECT count(*) FROM experiments").fetchone()[0] >= 1  # its own data it reaches
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        psycopg.connect(**conninfo, dbname="postgres").close()
    with psycopg.connect(**conninfo, dbname="mlflow_auth", autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] >= 1


# ----- artifact locations and paths ------------------------------------------------------------------------------
def test_experiments_outside_the_artifact_root_are_refused(server):
    root = server.folder / "artifacts"
    elsewhere = server.folder.parent / "another-team"
    for location in (f"file://{elsewhere}", str(elsewhere), "mlflow-artifacts:/../../x", f"file://{root}/../x",
                     "s3://bucket/x"):
        status, _, body = _call(server.url, "POST", "/api/2.0/mlflow/experiments/create",
                                {"name": f"bad {location}", "artifact_location": location}, _admin(server))
        assert status == 400 and b"artifact_location" in body and b"INVALID_PARAMETER_VALUE" in body, (location, body)
        status, _, _ = _call(server.url, "POST", "/ajax-api/2.0/mlflow/experiments/create",
                             {"name": f"bad ajax {location}", "artifact_location": location}, _admin(server))
        assert status == 400
    assert not elsewhere.exists()
    for name, location in (("default", None), ("inside", f"file://{root}/team-a")):
        body = {"name": name, **({"artifact_location": location} if location else {})}
        status, _, answer = _call(server.url, "POST", "/api/2.0/mlflow/experiments/create", body, _admin(server))
        assert status == 200, answer


def test_odd_artifact_paths_get_400(server):
    status, _, body = _call(server.url, "POST", "/api/2.0/mlflow/runs/create",
                            {"experiment_id": "0", "start_time": int(time.time() * 1000)}, _admin(server))
    assert status == 200, body
    run_id = json.loads(body)["run"]["info"]["run_id"]
    for path in ("/etc/passwd", "../../x", "a/../../x", "a%00b", "a\\b", "%2Fetc%2Fx", "a%0Ab"):
        status, _, answer = _call(server.url, "POST", f"/ajax-api/2.0/mlflow/upload-artifact?run_uuid={run_id}"
                                  f"&path={path}", raw=b"data", headers=_admin(server))
        assert status == 400, (path, status, answer[:300])
    for path in ("%2Fetc%2Fx", "..%2F..%2Fx", "a%00b"):
        status, _, answer = _call(server.url, "PUT", f"/api/2.0/mlflow-artifacts/artifacts/{path}", raw=b"data",
                                  headers=_admin(server))
        assert status == 400, (path, status, answer[:300])
    status, _, _ = _call(server.url, "POST", f"/ajax-api/2.0/mlflow/upload-artifact?run_uuid={run_id}&path=ok.txt",
                         raw=b"data", headers=_admin(server))
    assert status == 200


# ----- grants and logins -----------------------------------------------------------------------------------------
def test_grant_changes_a_permission_and_revoke_takes_it_back(server):
    added = _teamserver(server, "user", "add", "erin", stdin="erin-password-123\n")
    assert added.returncode == 0, added.stderr
    made = _teamserver(server, "user", "grant", "erin", "--experiment", "Shared", "--permission", "EDIT", "--create")
    assert made.returncode == 0 and "erin: EDIT on experiment 'Shared'" in made.stdout, made.stderr
    changed = _teamserver(server, "user", "grant", "erin", "--experiment", "Shared", "--permission", "DENY")
    assert changed.returncode == 0 and "DENY on experiment 'Shared'" in changed.stdout and "was EDIT" in changed.stdout
    exp = json.loads(_call(server.url, "GET", "/api/2.0/mlflow/experiments/get-by-name?experiment_name=Shared",
                           headers=_admin(server))[2])["experiment"]["experiment_id"]
    query = f"/api/3.0/mlflow/users/permissions/get?username=erin&resource_type=experiment&resource_id={exp}"
    assert json.loads(_call(server.url, "GET", query, headers=_admin(server))[2])["permission"] == "DENY"
    revoked = _teamserver(server, "user", "revoke", "erin", "--experiment", "Shared")
    assert revoked.returncode == 0 and "revoked" in revoked.stdout, revoked.stderr
    assert json.loads(_call(server.url, "GET", query, headers=_admin(server))[2])["permission"] == "READ"
    again = _teamserver(server, "user", "revoke", "erin", "--experiment", "Shared")
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "no grant of 'erin'" in again.stderr


def test_failed_logins_are_logged_and_slowed_down_per_address(server):
    """From 127.0.0.2 (its own address: the other tests keep theirs): five free failures, then a wait that doubles;
    the right password waits too while the address is held, and other addresses are not held."""
    path = "/api/2.0/mlflow/users/current"
    wrong = _auth("frank", "not-franks-password")
    statuses = [_call(server.url, "GET", path, headers=wrong, source="127.0.0.2")[0] for _ in range(5)]
    assert statuses == [401] * 5
    status, headers, _ = _call(server.url, "GET", path, headers=wrong, source="127.0.0.2")
    assert status == 429 and headers["Retry-After"] == "1"
    assert _call(server.url, "GET", path, headers=_admin(server), source="127.0.0.2")[0] == 429
    assert _call(server.url, "GET", path, headers=_admin(server))[0] == 200  # 127.0.0.1 is not held
    time.sleep(1.1)
    assert _call(server.url, "GET", path, headers=wrong, source="127.0.0.2")[0] == 401  # sixth failure
    status, headers, _ = _call(server.url, "GET", path, headers=wrong, source="127.0.0.2")
    assert status == 429 and headers["Retry-After"] == "2"
    log = (server.folder / "mlflow-server.log").read_text()
    lines = [x for x in log.splitlines() if "xaitk-team: failed login user='frank' address=127.0.0.2 time=" in x]
    assert len(lines) == 6 and lines[-1].endswith("failures=6 wait=2s")
    assert "not-franks-password" not in log


# ----- supervision -----------------------------------------------------------------------------------------------
def test_a_taken_port_is_one_line_and_gets_no_credential(server, tmp_path):
    """The port of the running server: another start on it stops before any secret goes anywhere."""
    port = server.url.rsplit(":", 1)[1]
    folder = _fresh_folder()
    try:
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "xaitk_exp.teamserver", "--port", port, "--dir", str(folder)],
                              capture_output=True, text=True, env=_env(), timeout=120, check=False)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert f"--port={port} is taken by pid" in proc.stderr and "tracking server:" not in proc.stdout
        assert time.monotonic() - started < 30  # refused before PostgreSQL even starts
    finally:
        shutil.rmtree(folder.parent, ignore_errors=True)


def _gone(pid: int, within: float = 20.0) -> bool:
    """True once ``pid`` has ended (a zombie waiting for init to reap it counts as ended)."""
    import psutil

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.2)
    return False


def test_a_dead_child_stops_the_command_and_a_killed_wrapper_leaves_named_leftovers():
    folder = _fresh_folder()
    first = Started(folder)
    try:
        assert first.wait_url(), first.out + first.proc.stderr.read()
        state = json.loads((folder / "server.json").read_text())
        os.killpg(state["mlflow"], signal.SIGKILL)  # the tracking server dies under the wrapper
        first.proc.wait(60)
        err = first.proc.stderr.read()
        assert first.proc.returncode == 2 and err.count("\n") == 1, err
        assert f"error: mlflow server (pid {state['mlflow']}) exited with code" in err
        assert _gone(state["postgres"])  # the other one was stopped
        second = Started(folder)
        assert second.wait_url(), second.out + second.proc.stderr.read()  # nothing left over: a clean start
        state = json.loads((folder / "server.json").read_text())
        second.proc.kill()  # kill -9 the wrapper: both servers stay behind
        second.proc.wait()
        third = subprocess.run([sys.executable, "-m", "xaitk_exp.teamserver", "--dir", str(folder)],
                               capture_output=True, text=True, env=_env(), timeout=120, check=False)
        assert third.returncode == 2 and third.stderr.count("\n") == 1, third.stderr
        assert (f"mlflow server pid {state['mlflow']} on port {state['port']} (stop: kill -- -{state['mlflow']})"
                in third.stderr)
        assert f"PostgreSQL pid {state['postgres']} on port {state['postgres_port']} (stop: pg_ctl -D" in third.stderr
    finally:
        for started in (first, locals().get("second")):
            if started is not None:
                started.stop()
        state = json.loads((folder / "server.json").read_text()) if (folder / "server.json").exists() else {}
        if state.get("mlflow"):
            try:
                os.killpg(state["mlflow"], signal.SIGKILL)
            except ProcessLookupError:
                pass
        pg_ctl = ["pg_ctl", "-D", str(folder / "pgdata"), "-m", "immediate", "stop"]
        subprocess.run((["runuser", "-u", "postgres", "--"] if ROOT else []) + pg_ctl, capture_output=True,
                       check=False)
        shutil.rmtree(folder.parent, ignore_errors=True)

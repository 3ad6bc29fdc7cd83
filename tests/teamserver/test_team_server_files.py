"""Secret files, folders, user names, permission choices and answers from a server that is not MLflow's: the
team server's checks that need no running server (the junk answers come from a real local HTTP server)."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from xaitk_exp.teamserver import TeamServerError, free_port, read_admin_password, write_secret
from xaitk_exp.teamserver.authapp import location_problem, path_problem, wait_before_next
from xaitk_exp.teamserver.files import check_folder, create_secret, read_secret
from xaitk_exp.teamserver.users import PERMISSIONS, check_name

CREDENTIAL_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
ROOT = os.geteuid() == 0


@pytest.fixture()
def teamserver(capsys, monkeypatch):
    """Run ``python -m xaitk_exp.teamserver ARGS`` in this process (its ``main``): exit code, stdout, stderr."""
    from xaitk_exp.teamserver.__main__ import main

    def run(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        for key in CREDENTIAL_ENV:
            monkeypatch.delenv(key, raising=False)
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, out, err)

    return run


def _one_line(proc: subprocess.CompletedProcess, says: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and says in proc.stderr, proc.stderr


# ----- secret files ---------------------------------------------------------------------------------------------
def test_a_secret_is_private_from_its_first_byte(tmp_path):
    old = os.umask(0)  # even with a permissive umask
    try:
        write_secret(tmp_path / "s", "v1")
        create_secret(tmp_path / "c", "v2")
    finally:
        os.umask(old)
    for name in ("s", "c"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    assert read_secret(tmp_path / "s") == "v1" and read_secret(tmp_path / "c") == "v2"
    with pytest.raises(FileExistsError):  # created only where nothing is, not even a link
        create_secret(tmp_path / "c", "again")
    write_secret(tmp_path / "s", "v3")  # a change replaces the file, never opens it for writing in place
    assert read_secret(tmp_path / "s") == "v3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "s"]


def test_a_planted_link_is_neither_written_nor_read(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("root's file\n")
    victim.chmod(0o600)
    link = tmp_path / "admin-password"
    link.symlink_to(victim)
    with pytest.raises(TeamServerError, match="symbolic link"):
        write_secret(link, "attacker-chosen")
    with pytest.raises(TeamServerError, match="symbolic link"):
        read_secret(link)
    with pytest.raises(TeamServerError, match="symbolic link"):
        read_admin_password(tmp_path)
    assert victim.read_text() == "root's file\n" and stat.S_IMODE(victim.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        create_secret(link, "x")


def test_a_readable_or_foreign_secret_is_refused(tmp_path):
    loose = tmp_path / "loose"
    loose.write_text("pw\n")
    loose.chmod(0o644)
    with pytest.raises(TeamServerError, match=r"mode 0644: other accounts may read it\); make it private"):
        read_secret(loose)
    if ROOT:
        foreign = tmp_path / "foreign"
        foreign.write_text("pw\n")
        foreign.chmod(0o600)
        os.chown(foreign, 65534, 65534)
        with pytest.raises(TeamServerError, match="owned by uid 65534, not by this account"):
            read_secret(foreign)
        with pytest.raises(TeamServerError, match="owned by uid 65534"):
            write_secret(foreign, "x")


def test_the_admin_password_command_refuses_a_linked_file(tmp_path, teamserver):
    """``user password admin`` once overwrote and chmod-ed whatever a planted link named."""
    folder = tmp_path / "team"
    folder.mkdir(mode=0o700)
    target = tmp_path / "elsewhere"
    target.write_text("keep\n")
    (folder / "admin-password").symlink_to(target)
    (folder / "server.json").write_text("{}")
    proc = teamserver("user", "password", "admin", "--dir", str(folder), stdin="a-new-password-123\n")
    _one_line(proc, "no server of this folder is running")
    with pytest.raises(TeamServerError, match="symbolic link"):
        read_admin_password(folder)
    assert target.read_text() == "keep\n"


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757])
def test_a_folder_others_may_write_is_refused(tmp_path, mode):
    folder = tmp_path / "team"
    folder.mkdir()
    folder.chmod(mode)
    with pytest.raises(TeamServerError, match=r"other accounts may write in it\); fix it with: chmod go-w"):
        check_folder(folder)


@pytest.mark.skipif(not ROOT, reason="needs root to give the folder to another account")
def test_a_folder_of_another_account_is_refused(tmp_path, teamserver):
    folder = tmp_path / "team"
    folder.mkdir(mode=0o755)
    os.chown(folder, 101, 104)
    proc = teamserver("--dir", str(folder), "--port", str(free_port()))
    _one_line(proc, "owned by uid 101, not by this account")


# ----- names and permissions ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["b\u043eb", "bob\x1b[2J", "bob\u200b", "bob\n", " bob", "bob:x", "-bob", "", "é"])
def test_look_alike_and_control_names_are_refused(name):
    with pytest.raises(TeamServerError, match="is invalid: 1 to 64 ASCII letters"):
        check_name(name)


@pytest.mark.parametrize("name", ["b\u043eb", "bob\x07"])
def test_look_alike_names_are_one_line_on_the_command_line(name, teamserver):
    proc = teamserver("user", "add", name, "--url", "http://127.0.0.1:9", stdin="long-enough-pw-1\n")
    _one_line(proc, "is invalid: 1 to 64 ASCII letters")
    assert "\x07" not in proc.stderr  # the control character is shown escaped, never sent to the terminal


def test_offered_permissions_are_the_ones_mlflow_accepts(teamserver):
    from mlflow.server.auth.permissions import RESOURCE_GRANTABLE_PERMISSIONS

    assert set(PERMISSIONS) == set(RESOURCE_GRANTABLE_PERMISSIONS)
    proc = teamserver("user", "grant", "bob", "--experiment", "X", "--permission", "NO_PERMISSIONS", "--url",
                       "http://127.0.0.1:9")
    _one_line(proc, "--permission='NO_PERMISSIONS' is invalid: one of READ, USE, EDIT, MANAGE, DENY")


# ----- the guards of the server app (pure parts) ----------------------------------------------------------------
@pytest.mark.parametrize(("location", "ok"), [
    ("", True),
    ("mlflow-artifacts:/7", True),
    ("file:///srv/team/artifacts/x", True),
    ("/srv/team/artifacts", True),
    ("file:///srv/team/other", False),
    ("file:///srv/team/artifacts/../x", False),
    ("/srv/team/artifacts-evil/x", False),
    ("mlflow-artifacts:/../../etc", False),
    ("s3://bucket/x", False),
    ("file://otherhost/srv/team/artifacts", False),
    ("relative/x", False),
    ("file:///srv/team/artifacts/\x00", False),
])
def test_artifact_locations(location, ok):
    assert (location_problem(location, "/srv/team/artifacts") is None) == ok


@pytest.mark.parametrize(("path", "ok"), [
    ("a/b.png", True), ("a b/c", True), ("/etc/passwd", False), ("../x", False), ("a/../../x", False),
    ("a\\b", False), ("a\x00b", False), ("x#y", False), ("C:/x", False), ("a" * 5000, False),
])
def test_artifact_paths(path, ok):
    assert (path_problem(path) is None) == ok


def test_wait_grows_after_a_few_failures_and_is_capped():
    assert [wait_before_next(n) for n in range(1, 9)] == [0, 0, 0, 0, 1, 2, 4, 8]
    assert wait_before_next(100) == 60


# ----- a server that is not MLflow's ------------------------------------------------------------------------------
class _Junk(BaseHTTPRequestHandler):
    answer = b"{}"
    seen: list[str] = []

    def _reply(self) -> None:
        type(self).seen.append(self.headers.get("Authorization", ""))
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.answer)))
        self.end_headers()
        self.wfile.write(self.answer)

    do_GET = do_POST = do_PATCH = _reply

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def junk_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Junk)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("answer", [b"{}", b"not json"])
def test_user_commands_against_junk_are_one_line(junk_server, answer, teamserver):
    _Junk.answer = answer
    url = f"http://127.0.0.1:{junk_server.server_address[1]}"
    env = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "admin-password-1"}
    listed = teamserver("user", "list", "--url", url, env=env)
    _one_line(listed, "is it the team server?")
    added = teamserver("user", "add", "bob", "--url", url, env=env, stdin="bob-password-123\n")
    _one_line(added, "is it the team server?")
    granted = teamserver("user", "grant", "bob", "--experiment", "E", "--permission", "EDIT", "--url", url, env=env)
    _one_line(granted, "is it the team server?")


def test_user_commands_with_dir_talk_only_to_the_folders_own_server(tmp_path, junk_server, teamserver):
    """A folder whose record names a process that does not hold the port: nothing is sent anywhere."""
    folder = tmp_path / "team"
    folder.mkdir(mode=0o700)
    write_secret(folder / "admin-password", "the-admin-password-1")
    port = junk_server.server_address[1]
    # the record names pid 1 (alive, not listening on that port) as the server: a stale or forged record
    (folder / "server.json").write_text(json.dumps({"mlflow": 1, "port": port, "url": f"http://127.0.0.1:{port}"}))
    _Junk.seen = []
    proc = teamserver("user", "list", "--dir", str(folder))
    _one_line(proc, "is not the one listening there any more; nothing was sent")
    assert _Junk.seen == []
    other = teamserver("user", "list", "--dir", str(folder), "--url", "http://127.0.0.1:9")
    assert other.returncode == 2 and _Junk.seen == []
    missing = Path(folder / "server.json")
    missing.unlink()
    _one_line(teamserver("user", "list", "--dir", str(folder)), "no server of this folder is running")


def test_a_stale_record_is_not_taken_for_leftovers(tmp_path):
    """After a reboot the recorded pids may belong to other programs: only a live ``mlflow server`` counts."""
    from xaitk_exp.teamserver import _refuse_leftovers
    from xaitk_exp.teamserver.postgres import Postgres

    folder = tmp_path / "team"
    folder.mkdir(mode=0o700)
    (folder / "server.json").write_text(json.dumps({"wrapper": 1, "mlflow": os.getpid(), "port": 5000}))
    (folder / "pgdata").mkdir()
    (folder / "pgdata" / "postmaster.pid").write_text(f"{os.getpid()}\n")  # a live pid, but no postmaster
    _refuse_leftovers(folder, Postgres(folder, 10))

"""The ``mlflow server`` child of a team server: its basic-auth settings, the interpreter it runs with (as an
unprivileged account), its environment, and its start until ``/health`` answers from a process of its own."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from xaitk_exp.teamserver.files import (
    ADMIN_PASSWORD_FILE,
    ADMIN_USER,
    LOOPBACK_HOSTS,
    TeamServerError,
    own_subfolder,
    read_secret,
    write_secret,
)
from xaitk_exp.teamserver.postgres import AUTH_DB_NAME, DB_USER, Postgres, stop_group, tail_file
from xaitk_exp.teamserver.supervise import _listener, listens


# ----- basic auth ------------------------------------------------------------------------------------------------
class _Auth:
    """The basic-auth app's settings for a server folder: ``basic_auth.ini`` (no secret in it; readable by the
    server's account only), the admin password (generated once, ``admin-password``, mode 0600) and the Flask secret
    key (``flask-secret-key``, mode 0600)."""

    def __init__(self, root: Path, cache_ttl: int, run_as: pwd.struct_passwd | None, pg: Postgres) -> None:
        self.root, self.cache_ttl, self.run_as = root, cache_ttl, run_as
        self.ini = root / "basic_auth.ini"
        pw = root / ADMIN_PASSWORD_FILE
        if not os.path.lexists(pw):
            write_secret(pw, secrets.token_urlsafe(18))  # 24 characters; MLflow wants at least 12
        key = root / "flask-secret-key"
        if not os.path.lexists(key):
            write_secret(key, secrets.token_hex(32))
        self.admin_password = read_secret(pw)
        self.secret_key = read_secret(key)
        self.admin_exists = pg.has_auth_user(ADMIN_USER)

    def server_env(self, pg: Postgres) -> dict[str, str]:
        """Write the ini for this start (the database port changes per start) and return the server's env."""
        text = (
            "# written by python -m xaitk_exp.teamserver on every start; edits are overwritten\n"
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = postgresql://{DB_USER}@127.0.0.1:{pg.port}/{AUTH_DB_NAME}\n"
            f"admin_username = {ADMIN_USER}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            f"auth_cache_ttl_seconds = {self.cache_ttl}\n"
        )
        tmp = self.ini.with_name(f".{self.ini.name}.{secrets.token_hex(6)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            if self.run_as is not None:  # the server's account reads it through its group
                os.fchown(f.fileno(), -1, self.run_as.pw_gid)
                os.fchmod(f.fileno(), 0o640)
            f.write(text)
        os.replace(tmp, self.ini)
        env = {
            "MLFLOW_AUTH_CONFIG_PATH": str(self.ini),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": self.secret_key,  # one key for every worker (CSRF tokens of the UI)
        }
        if not self.admin_exists:  # MLflow reads it only to create the admin: not handed over once it exists
            env["MLFLOW_AUTH_ADMIN_PASSWORD"] = self.admin_password
        return env


# ----- mlflow server -------------------------------------------------------------------------------------------
def _open_to_others(path: str) -> bool:
    """True when an account other than the owner can reach ``path`` (every folder above it passable by others)."""
    current = os.path.realpath(path)
    while True:
        if not os.stat(current).st_mode & stat.S_IXOTH:  # a folder to pass, or a program to run
            return False
        parent = os.path.dirname(current)
        if parent == current:
            return True
        current = parent


def server_python(root: Path, run_as: pwd.struct_passwd | None) -> str:
    """The interpreter ``mlflow server`` runs with: this one, unless the server's account cannot run it (a Python
    installed under root's private home, as pyenv does). Then the system's Python of the same version, in a small
    venv-like folder ``<dir>/server-python`` (root's, read-only for others) that sees this environment's packages."""
    if run_as is None or (_open_to_others(sys.executable) and _open_to_others(sys.base_prefix)):
        return sys.executable
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for folder in ("/usr/local/bin", "/usr/bin", "/bin"):
        candidate = os.path.join(folder, version)
        if os.path.isfile(candidate) and _open_to_others(candidate):
            break
    else:
        raise TeamServerError(f"--user={run_as.pw_name}: that account cannot run {sys.executable} (a folder above it "
                              f"is private) and no {version} is in /usr/local/bin or /usr/bin; install Python where "
                              "every account can read it")
    import sysconfig

    shim = root / "server-python"
    shutil.rmtree(shim, ignore_errors=True)
    lib = shim / "lib" / version
    lib.mkdir(parents=True, mode=0o755)
    (shim / "bin").mkdir(mode=0o755)
    os.symlink(candidate, shim / "bin" / "python")
    os.symlink(sysconfig.get_paths()["purelib"], lib / "site-packages")
    (shim / "pyvenv.cfg").write_text(f"home = {os.path.dirname(candidate)}\ninclude-system-site-packages = false\n")
    for path in (shim, shim / "lib", lib, shim / "bin", shim / "pyvenv.cfg"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    return str(shim / "bin" / "python")


_KEEP_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")


def _start_mlflow(
    stack: ExitStack, root: Path, pg: Postgres, workers: int, frontend: str, port: int, timeout: float,
    host: str = "127.0.0.1", auth: _Auth | None = None, allowed_hosts: str | None = None,
    run_as: pwd.struct_passwd | None = None,
) -> tuple[subprocess.Popen, str]:
    uid, gid = (run_as.pw_uid, run_as.pw_gid) if run_as else (os.geteuid(), os.getegid())
    artifacts, state = root / "artifacts", root / "server-state"
    own_subfolder(artifacts, uid, gid)  # the server's account writes here, and nowhere else in the folder
    own_subfolder(state, uid, gid)  # its HOME and the failed-login counts
    cmd = [
        # -I: no folder of the working directory (nor PYTHONPATH) on sys.path
        server_python(root, run_as), "-I", "-m", "mlflow", "server",
        "--backend-store-uri", pg.uri,
        "--serve-artifacts", "--artifacts-destination", str(artifacts),
        "--host", host, "--port", str(port),
        "--workers", str(workers),
        "--app-name", "xaitk-team" if auth is not None else "xaitk-team-open",
    ]
    if frontend == "gunicorn":
        cmd += ["--gunicorn-opts", f"--workers {workers} --timeout 120"]
    env = {k: v for k, v in os.environ.items() if k in _KEEP_ENV or k.startswith("LC_")}
    env.update({
        "HOME": str(state),
        "PGPASSWORD": pg.password,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no background job runner processes
        "PYTHONWARNINGS": "ignore",
        "PYTHONSAFEPATH": "1",  # gunicorn/uvicorn children: no script folder on sys.path either
        "XAITK_TEAM_ARTIFACT_ROOT": str(artifacts),
        "XAITK_TEAM_STATE_DIR": str(state),
    })
    if allowed_hosts:  # as a variable: `mlflow server` refuses the --allowed-hosts flag with gunicorn
        # MLflow then answers those names only: keep this machine's own clients (the user commands) in
        env["MLFLOW_SERVER_ALLOWED_HOSTS"] = f"{allowed_hosts},{LOOPBACK_HOSTS}"
    if auth is not None:
        env.update(auth.server_env(pg))
    log_path = root / "mlflow-server.log"
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    stack.callback(os.close, log_fd)
    who: dict[str, Any] = {"user": uid, "group": gid, "extra_groups": []} if run_as else {}
    proc = subprocess.Popen(cmd, stdout=log_fd, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                            cwd=root, start_new_session=True, umask=0o077, **who)
    stack.callback(stop_group, proc)
    url = f"http://{_local_address(host)}:{port}"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise TeamServerError(f"mlflow server exited with {proc.returncode} while starting:{tail_file(log_path)}")
        if _healthy(url):
            if listens(proc.pid, port):
                return proc, url
            who_else = _listener(port)  # it answers, yet no process of ours holds the port
            raise TeamServerError(f"--port={port}: another process{f' ({who_else})' if who_else else ''} answers "
                                  "there, not the server this command started; nothing was sent to it")
        if time.monotonic() > deadline:
            raise TeamServerError(f"mlflow server did not answer {url}/health within {timeout:.0f} s:"
                                  f"{tail_file(log_path)}")
        time.sleep(0.5)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _local_address(host: str) -> str:
    """Where this machine reaches a server bound to ``host`` (a wildcard address: its loopback)."""
    if host in ("", "0.0.0.0", "localhost"):
        return "127.0.0.1"
    if ":" in host:
        return "[::1]" if host in ("::", "::1") else f"[{host}]"
    return host

"""A private team tracking server: PostgreSQL + ``mlflow server`` with proxied artifacts and, optionally, MLflow's
basic-auth app (users, an admin, per-experiment permissions).

Use it from Python (tests, benchmarks)::

    from xaitk_exp.teamserver import team_server

    with team_server(workers=4) as url:      # e.g. "http://127.0.0.1:40123", no authentication
        subprocess.run(["xaitk-exp", f"tracking.uri={url}"], check=True)

    with team_server(auth=True) as url:      # basic auth; url.admin_env() holds the admin's credentials
        subprocess.run(["xaitk-exp", f"tracking.uri={url}"], env={**os.environ, **url.admin_env()}, check=True)

or by hand, until Ctrl-C (authentication on; see ``docs/team-server.md``)::

    python -m xaitk_exp.teamserver --workers 4 --port 5000 --dir ~/mlflow-team
    python -m xaitk_exp.teamserver user add bob --dir ~/mlflow-team

What it does: ``initdb`` a PostgreSQL cluster in a folder (once), ``pg_ctl start`` it listening on 127.0.0.1 only,
create the ``mlflow`` database (runs) and the ``mlflow_auth`` database (users and permissions), start ``mlflow
server --backend-store-uri postgresql://...`` (SQLAlchemy maps that to psycopg 3) with ``--serve-artifacts
--artifacts-destination <dir>/artifacts`` and, with authentication, ``--app-name basic-auth`` configured by
``<dir>/basic_auth.ini``; wait until ``/health`` answers, yield the URL, and stop both on the way out, error or not.
PostgreSQL refuses to run as root; as root, its commands run as the ``postgres`` user. The database password is
random per cluster and reaches ``mlflow server`` through ``PGPASSWORD``, never its command line; the admin's
password is random per folder, kept in ``<dir>/admin-password`` (mode 0600) and reaches the server through
``MLFLOW_AUTH_ADMIN_PASSWORD``, which MLflow reads only to create the admin on the first start.

Front ends: ``frontend="gunicorn"`` (Flask app under gunicorn, ``--gunicorn-opts``) answered a keep-alive request
in a few ms on a 2-core machine; ``frontend="uvicorn"`` (MLflow's default FastAPI app) several times slower.
"""

from __future__ import annotations

import ipaddress
import json
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from xaitk_exp.teamserver.files import TeamServerError, check_folder, own_subfolder, read_secret, write_secret
from xaitk_exp.teamserver.postgres import (
    AUTH_DB_NAME,
    DB_USER,
    Postgres,
    free_port,
    postgres_missing_reason,
    stop_group,
    tail_file,
)

__all__ = ["TeamServerError", "ServerURL", "team_server", "free_port", "postgres_missing_reason", "write_secret",
           "read_admin_password", "is_loopback"]

FRONTENDS = ("gunicorn", "uvicorn")
ADMIN_USER = "admin"
ADMIN_PASSWORD_FILE = "admin-password"
LOOPBACK_HOSTS = "localhost,localhost:*,127.0.0.1,127.0.0.1:*"  # Host headers always answered
URL_FILE = "url"  # the running server's URL, for the ``user`` commands given only ``--dir``
STATE_FILE = "server.json"  # pids and ports of the running servers: the ``user`` commands and leftovers check them
DEFAULT_RUN_AS = "nobody"  # the account ``mlflow server`` runs as when the command is started by root
#: MLflow's basic-auth app checks a PBKDF2 hash on every request unless it caches good credentials this long
#: (per worker). 60 s: see benchmarks/bench_auth.py for the cost, docs/team-server.md for the staleness it buys.
DEFAULT_AUTH_CACHE_TTL = 60


class ServerURL(str):
    """The tracking server's ``http://127.0.0.1:<port>`` (a plain ``str``), plus where its pieces live:
    ``backend_uri`` (``postgresql://mlflow@127.0.0.1:<port>/mlflow``, no password; the password is in
    ``workdir/pgpassword``), ``workdir`` and ``artifacts`` (the proxied artifact destination). With authentication
    (``auth`` True) the admin's name and password are ``admin_username`` and :attr:`admin_password`.
    :meth:`check` raises :class:`TeamServerError` naming the server that died."""

    backend_uri: str
    workdir: Path
    artifacts: Path
    auth: bool = False
    admin_username: str = ADMIN_USER
    _check: object = None

    @property
    def admin_password(self) -> str:
        """The admin's password, read from ``workdir/admin-password`` (it may have been changed meanwhile)."""
        return read_admin_password(self.workdir)

    def admin_env(self) -> dict[str, str]:
        """``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` of the admin ({} without authentication)."""
        if not self.auth:
            return {}
        return {"MLFLOW_TRACKING_USERNAME": self.admin_username, "MLFLOW_TRACKING_PASSWORD": self.admin_password}

    def check(self) -> None:
        """:class:`TeamServerError` (one line naming it) when ``mlflow server`` or PostgreSQL has died."""
        if callable(self._check):
            self._check()


def read_admin_password(workdir: str | Path) -> str:
    """The admin password kept in ``<workdir>/admin-password``; :class:`TeamServerError` if there is none, or if
    it is not a private file of this account."""
    path = Path(workdir).expanduser() / ADMIN_PASSWORD_FILE
    if not os.path.lexists(path):
        raise TeamServerError(f"--dir={str(workdir)!r}: no {ADMIN_PASSWORD_FILE} file there; give the folder the "
                              "server was started with")
    return read_secret(path)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _local_address(host: str) -> str:
    """Where this machine reaches a server bound to ``host`` (a wildcard address: its loopback)."""
    if host in ("", "0.0.0.0", "localhost"):
        return "127.0.0.1"
    if ":" in host:
        return "[::1]" if host in ("::", "::1") else f"[{host}]"
    return host


def _run_as(name: str | None) -> pwd.struct_passwd | None:
    """The account ``mlflow server`` runs as: None (this one) unless we are root, where it must not stay root."""
    if os.geteuid() != 0:
        if name not in (None, pwd.getpwuid(os.geteuid()).pw_name):
            raise ValueError(f"user={name!r} is invalid when not started by root: the server runs as this account")
        return None
    name = name or DEFAULT_RUN_AS
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ValueError(f"user={name!r} is invalid: no such account on this machine (create a dedicated one, e.g. "
                         f"useradd --system --no-create-home xaitk-mlflow)") from None
    if entry.pw_uid == 0:
        raise ValueError(f"user={name!r} is invalid: the tracking server never runs as root; name an unprivileged "
                         "account")
    return entry


@contextmanager
def team_server(
    workers: int = 4,
    frontend: str = "gunicorn",
    port: int | None = None,
    workdir: str | Path | None = None,
    startup_timeout: float = 180.0,
    auth: bool | None = None,
    host: str = "127.0.0.1",
    auth_cache_ttl: int = DEFAULT_AUTH_CACHE_TTL,
    allowed_hosts: str | None = None,
    user: str | None = None,
) -> Iterator[ServerURL]:
    """Run PostgreSQL + ``mlflow server`` for the ``with`` block; yields the server's ``http://127.0.0.1:<port>``
    (a :class:`ServerURL`).

    ``workers``: server worker processes; ``frontend``: ``"gunicorn"`` (fastest measured) or ``"uvicorn"``;
    ``port``: default a free one; ``workdir``: where the cluster, artifacts and logs live (default a temporary
    folder, removed afterwards; an existing one is reused as is, and must belong to this account and be writable by
    no other). ``auth``: MLflow's basic-auth app (admin ``admin``, password in ``workdir/admin-password``); None
    means off, and is refused with a ``host`` beyond loopback (say ``auth=False`` to accept an open server).
    ``auth_cache_ttl``: seconds a worker trusts a checked password (0: check the hash on every request).
    ``allowed_hosts``: MLflow's ``--allowed-hosts``, the Host headers it answers besides localhost (by default:
    localhost and private IP addresses). ``user``: the account ``mlflow server`` runs as when we are root (default
    ``nobody``; never root). Raises :class:`TeamServerError` when either server does not come up within
    ``startup_timeout`` seconds, when the port is taken, or when servers of an earlier start still run.
    """
    if frontend not in FRONTENDS:
        raise ValueError(f"frontend={frontend!r} is invalid: one of {', '.join(FRONTENDS)}")
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers={workers!r} is invalid: a positive integer")
    if not isinstance(auth_cache_ttl, int) or isinstance(auth_cache_ttl, bool) or auth_cache_ttl < 0:
        raise ValueError(f"auth_cache_ttl={auth_cache_ttl!r} is invalid: a whole number of seconds, 0 or more")
    if auth is None and not is_loopback(host):
        raise ValueError(f"host={host!r} is invalid without authentication: a loopback address, unless auth=True "
                         "(or auth=False, to accept a server anyone who reaches it can write to)")
    run_as = _run_as(user)
    reason = postgres_missing_reason()
    if reason:
        raise TeamServerError(reason)
    traverse = 0o711 if os.geteuid() == 0 else 0o700  # as root, postgres and the server's account pass through
    with ExitStack() as stack:
        if workdir is None:
            root = Path(tempfile.mkdtemp(prefix="xaitk-team-"))
            os.chmod(root, traverse)
            stack.callback(shutil.rmtree, root, ignore_errors=True)
        else:
            root = Path(workdir).expanduser().absolute()
            if not os.path.lexists(root):
                root.mkdir(parents=True, mode=traverse)
            check_folder(root)
            root = root.resolve()
            if os.geteuid() == 0 and (root.stat().st_mode & 0o011) != 0o011:
                os.chmod(root, root.stat().st_mode | 0o011)  # passage (not listing) for postgres and the server
        port = port or free_port()
        pg = Postgres(root, startup_timeout)
        _refuse_leftovers(root, pg)
        _refuse_taken_port(host, port)
        stack.callback(pg.stop)
        pg.start()
        settings = _Auth(root, auth_cache_ttl, run_as, pg) if auth else None
        proc, url = _start_mlflow(stack, root, pg, workers, frontend, port, startup_timeout, host, settings,
                                  allowed_hosts, run_as)
        url = ServerURL(url)
        url.backend_uri, url.workdir, url.artifacts, url.auth = pg.uri, root, root / "artifacts", bool(auth)
        pg_pid = pg.running_pid()
        url._check = lambda: _check_alive(proc, pg, pg_pid, root)
        state = {"wrapper": os.getpid(), "mlflow": proc.pid, "port": port, "host": host, "url": str(url),
                 "postgres": pg_pid, "postgres_port": pg.port}
        _write_public(root / STATE_FILE, json.dumps(state) + "\n")
        _write_public(root / URL_FILE, url + "\n")
        stack.callback(_unlink_all, [root / n for n in (URL_FILE, STATE_FILE)])
        yield url


def _write_public(path: Path, text: str) -> None:
    """Write a file others may read (no secret in it), never through a link planted at ``path``."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# ----- supervision -----------------------------------------------------------------------------------------------
def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def read_state(root: Path) -> dict:
    """The pids and ports the server of folder ``root`` recorded ({} when there is no record)."""
    try:
        state = json.loads((root / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _is_process(pid: object, *words: str) -> bool:
    """True when ``pid`` is a live process whose command line holds every one of ``words`` (not a reused pid)."""
    if not isinstance(pid, int) or not _alive(pid):
        return False
    import psutil

    try:
        cmdline = " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return False
    return all(word in cmdline for word in words)


def _refuse_leftovers(root: Path, pg: Postgres) -> None:
    """Servers of an earlier start of this folder that still run (the wrapper was killed): one line naming them."""
    state = read_state(root)
    mlflow_pid = state.get("mlflow")
    mlflow_alive = _is_process(mlflow_pid, "mlflow", "server")
    if mlflow_alive and _alive(state.get("wrapper")) and state.get("wrapper") != os.getpid():
        raise TeamServerError(f"--dir={str(root)!r} is already served by pid {state['wrapper']} on port "
                              f"{state.get('port')}; stop it (kill {state['wrapper']}) or use another folder")
    left = []
    if mlflow_alive:
        left.append(f"mlflow server pid {mlflow_pid} on port {state.get('port')} (stop: kill -- -{mlflow_pid})")
    pg_pid = pg.running_pid()
    if pg_pid and _is_process(pg_pid, "postgres"):
        on_port = f" on port {state['postgres_port']}" if state.get("postgres_port") else ""
        as_postgres = ", as the postgres user" if os.geteuid() == 0 else ""
        left.append(f"PostgreSQL pid {pg_pid}{on_port} (stop: pg_ctl -D {pg.data} -m fast stop{as_postgres})")
    if left:
        raise TeamServerError(f"--dir={str(root)!r}: servers of an earlier start still run: {'; '.join(left)}")


def _refuse_taken_port(host: str, port: int) -> None:
    """One line when another process already listens on ``host:port`` (no credential is ever sent to it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            who = _listener(port)
            raise TeamServerError(f"--port={port} is taken{f' by {who}' if who else ''} on {host}: choose another "
                                  "--port, or stop that process") from None


def _listener(port: int) -> str:
    import psutil

    try:
        for conn in psutil.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return f"pid {conn.pid} ({psutil.Process(conn.pid).name()})"
    except psutil.Error:
        pass
    return ""


def listens(pid: int, port: int) -> bool:
    """True when process ``pid`` or one of its descendants listens on TCP ``port``."""
    import psutil

    try:
        parent = psutil.Process(pid)
        family = [parent, *parent.children(recursive=True)]
    except psutil.Error:
        return False
    for proc in family:
        try:
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in proc.net_connections("inet")):
                return True
        except psutil.Error:
            continue
    return False


def _check_alive(proc: subprocess.Popen, pg: Postgres, pg_pid: int | None, root: Path) -> None:
    if proc.poll() is not None:
        raise TeamServerError(f"mlflow server (pid {proc.pid}) exited with code {proc.returncode}; PostgreSQL is "
                              f"stopped too{tail_file(root / 'mlflow-server.log', 3)}")
    if not _alive(pg_pid):
        raise TeamServerError(f"PostgreSQL (pid {pg_pid}, port {pg.port}) is gone; mlflow server is stopped too"
                              f"{tail_file(pg.log, 3)}")


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

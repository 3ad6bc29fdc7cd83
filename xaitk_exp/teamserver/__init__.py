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
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from xaitk_exp.teamserver.postgres import (
    AUTH_DB_NAME,
    DB_USER,
    Postgres,
    TeamServerError,
    free_port,
    postgres_missing_reason,
    stop_group,
    tail_file,
)

FRONTENDS = ("gunicorn", "uvicorn")
ADMIN_USER = "admin"
ADMIN_PASSWORD_FILE = "admin-password"
LOOPBACK_HOSTS = "localhost,localhost:*,127.0.0.1,127.0.0.1:*"  # Host headers always answered
URL_FILE = "url"  # the running server's URL, for the ``user`` commands given only ``--dir``
#: MLflow's basic-auth app checks a PBKDF2 hash on every request unless it caches good credentials this long
#: (per worker). 60 s: see benchmarks/bench_auth.py for the cost, docs/team-server.md for the staleness it buys.
DEFAULT_AUTH_CACHE_TTL = 60


class ServerURL(str):
    """The tracking server's ``http://127.0.0.1:<port>`` (a plain ``str``), plus where its pieces live:
    ``backend_uri`` (``postgresql://mlflow@127.0.0.1:<port>/mlflow``, no password; the password is in
    ``workdir/pgpassword``), ``workdir`` and ``artifacts`` (the proxied artifact destination). With authentication
    (``auth`` True) the admin's name and password are ``admin_username`` and :attr:`admin_password`."""

    backend_uri: str
    workdir: Path
    artifacts: Path
    auth: bool = False
    admin_username: str = ADMIN_USER

    @property
    def admin_password(self) -> str:
        """The admin's password, read from ``workdir/admin-password`` (it may have been changed meanwhile)."""
        return read_admin_password(self.workdir)

    def admin_env(self) -> dict[str, str]:
        """``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` of the admin ({} without authentication)."""
        if not self.auth:
            return {}
        return {"MLFLOW_TRACKING_USERNAME": self.admin_username, "MLFLOW_TRACKING_PASSWORD": self.admin_password}


def read_admin_password(workdir: str | Path) -> str:
    """The admin password kept in ``<workdir>/admin-password``; :class:`TeamServerError` if there is none."""
    path = Path(workdir).expanduser() / ADMIN_PASSWORD_FILE
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise TeamServerError(f"--dir={str(workdir)!r}: no readable {ADMIN_PASSWORD_FILE} file there ({exc.strerror}); "
                              "give the folder the server was started with") from None


def write_secret(path: Path, value: str) -> None:
    """Write ``value`` to ``path`` readable and writable by its owner only (created so; never world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    path.chmod(0o600)


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
) -> Iterator[ServerURL]:
    """Run PostgreSQL + ``mlflow server`` for the ``with`` block; yields the server's ``http://127.0.0.1:<port>``
    (a :class:`ServerURL`).

    ``workers``: server worker processes; ``frontend``: ``"gunicorn"`` (fastest measured) or ``"uvicorn"``;
    ``port``: default a free one; ``workdir``: where the cluster, artifacts and logs live (default a temporary
    folder, removed afterwards; an existing one is reused as is). ``auth``: MLflow's basic-auth app (admin
    ``admin``, password in ``workdir/admin-password``); None means off, and is refused with a ``host`` beyond
    loopback (say ``auth=False`` to accept an open server). ``auth_cache_ttl``: seconds a worker trusts a checked
    password (0: check the hash on every request). ``allowed_hosts``: MLflow's ``--allowed-hosts``, the Host
    headers it answers besides localhost (by default: localhost and private IP addresses). Raises
    :class:`TeamServerError` when either server does not come up within ``startup_timeout`` seconds.
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
    reason = postgres_missing_reason()
    if reason:
        raise TeamServerError(reason)
    with ExitStack() as stack:
        if workdir is None:
            root = Path(tempfile.mkdtemp(prefix="xaitk-team-"))
            stack.callback(shutil.rmtree, root, ignore_errors=True)
        else:
            root = Path(workdir).expanduser().resolve()
            root.mkdir(parents=True, exist_ok=True)
        pg = Postgres(root, startup_timeout)
        stack.callback(pg.stop)
        pg.start()
        settings = _Auth(root, auth_cache_ttl) if auth else None
        port = port or free_port()
        url = ServerURL(_start_mlflow(stack, root, pg, workers, frontend, port, startup_timeout, host, settings,
                                      allowed_hosts))
        url.backend_uri, url.workdir, url.artifacts, url.auth = pg.uri, root, root / "artifacts", bool(auth)
        (root / URL_FILE).write_text(url + "\n")
        stack.callback(lambda: (root / URL_FILE).unlink(missing_ok=True))
        yield url


# ----- basic auth ------------------------------------------------------------------------------------------------
class _Auth:
    """The basic-auth app's settings for a server folder: ``basic_auth.ini`` (no secrets in it), the admin
    password (generated once, ``admin-password``, mode 0600) and the Flask secret key (``flask-secret-key``)."""

    def __init__(self, root: Path, cache_ttl: int) -> None:
        self.root, self.cache_ttl = root, cache_ttl
        self.ini = root / "basic_auth.ini"
        pw = root / ADMIN_PASSWORD_FILE
        if not pw.exists():
            write_secret(pw, secrets.token_urlsafe(18))  # 24 characters; MLflow wants at least 12
        key = root / "flask-secret-key"
        if not key.exists():
            write_secret(key, secrets.token_hex(32))
        self.admin_password = pw.read_text().strip()
        self.secret_key = key.read_text().strip()

    def server_env(self, pg: Postgres) -> dict[str, str]:
        """Write the ini for this start (the database port changes per start) and return the server's env."""
        self.ini.write_text(
            "# written by python -m xaitk_exp.teamserver on every start; edits are overwritten\n"
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = postgresql://{DB_USER}@127.0.0.1:{pg.port}/{AUTH_DB_NAME}\n"
            f"admin_username = {ADMIN_USER}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            f"auth_cache_ttl_seconds = {self.cache_ttl}\n"
        )
        return {
            "MLFLOW_AUTH_CONFIG_PATH": str(self.ini),
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.admin_password,  # used only while the admin does not exist yet
            "MLFLOW_FLASK_SERVER_SECRET_KEY": self.secret_key,  # one key for every worker (CSRF tokens of the UI)
        }


# ----- mlflow server -------------------------------------------------------------------------------------------
def _start_mlflow(
    stack: ExitStack, root: Path, pg: Postgres, workers: int, frontend: str, port: int, timeout: float,
    host: str = "127.0.0.1", auth: _Auth | None = None, allowed_hosts: str | None = None,
) -> str:
    artifacts = root / "artifacts"
    artifacts.mkdir(exist_ok=True)
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", pg.uri,
        "--serve-artifacts", "--artifacts-destination", str(artifacts),
        "--host", host, "--port", str(port),
        "--workers", str(workers),
    ]
    if frontend == "gunicorn":
        cmd += ["--gunicorn-opts", f"--workers {workers} --timeout 120"]
    env = {
        **os.environ,
        "PGPASSWORD": pg.password,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no background job runner processes
        "PYTHONWARNINGS": "ignore",
    }
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                 "MLFLOW_AUTH_CONFIG_PATH", "MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        env.pop(name, None)
    if allowed_hosts:  # as a variable: `mlflow server` refuses the --allowed-hosts flag with gunicorn
        # MLflow then answers those names only: keep this machine's own clients (the user commands) in
        env["MLFLOW_SERVER_ALLOWED_HOSTS"] = f"{allowed_hosts},{LOOPBACK_HOSTS}"
    if auth is not None:
        cmd += ["--app-name", "basic-auth"]
        env.update(auth.server_env(pg))
    log_path = root / "mlflow-server.log"
    log = open(log_path, "ab")  # noqa: SIM115 - closed by the stack
    stack.callback(log.close)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True)
    stack.callback(stop_group, proc)
    url = f"http://{_local_address(host)}:{port}"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise TeamServerError(f"mlflow server exited with {proc.returncode} while starting:{tail_file(log_path)}")
        if _healthy(url):
            return url
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



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
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from xaitk_exp.teamserver.files import (
    ADMIN_PASSWORD_FILE,
    ADMIN_USER,
    LOOPBACK_HOSTS,
    STATE_FILE,
    URL_FILE,
    TeamServerError,
    check_folder,
    read_secret,
    write_secret,
)
from xaitk_exp.teamserver.mlflow_server import _Auth, _start_mlflow, _unlink_all, server_python
from xaitk_exp.teamserver.postgres import Postgres, free_port, postgres_missing_reason
from xaitk_exp.teamserver.supervise import (
    _check_alive,
    _refuse_leftovers,
    _refuse_taken_port,
    listens,
    read_state,
)

__all__ = ["ADMIN_PASSWORD_FILE", "ADMIN_USER", "LOOPBACK_HOSTS", "STATE_FILE", "URL_FILE", "TeamServerError",
           "ServerURL", "free_port", "is_loopback", "listens", "postgres_missing_reason", "read_admin_password",
           "read_state", "server_python", "team_server", "write_secret", "_refuse_leftovers"]

FRONTENDS = ("gunicorn", "uvicorn")
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

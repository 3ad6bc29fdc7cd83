"""The team server's MLflow app: MLflow's basic-auth app (or the plain server) plus three guards.

``mlflow server --app-name xaitk-team`` loads :func:`create_app` (``--app-name xaitk-team-open``:
:func:`create_open_app`, no authentication) through the ``mlflow.app`` entry points in pyproject.toml. The guards,
as Flask ``before_request``/``after_request`` hooks that run before MLflow's own:

- an experiment's ``artifact_location`` must lie inside this server's artifact root (``XAITK_TEAM_ARTIFACT_ROOT``,
  the ``--artifacts-destination``): ``mlflow-artifacts:/...``, or a ``file:`` path under the root; else 400;
- artifact paths given to the upload and artifact endpoints must be relative, plain and printable; else 400;
- failed logins (a 401 for a request that carried a user name) are logged with user, address and time, and an
  address with more than ``FREE_FAILURES`` failures in ``WINDOW`` seconds waits, doubling up to ``MAX_WAIT``
  seconds, before its next attempt (429 with Retry-After). The count lives in a small SQLite file in
  ``XAITK_TEAM_STATE_DIR``, shared by every worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import sqlite3
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote, urlsplit

ARTIFACT_ROOT_ENV, STATE_DIR_ENV = "XAITK_TEAM_ARTIFACT_ROOT", "XAITK_TEAM_STATE_DIR"
FREE_FAILURES = 5  # failed logins an address gets before it must wait
WINDOW = 900.0  # seconds a failure counts
MAX_WAIT = 60.0  # the longest wait between attempts, in seconds
_EXPERIMENT_CREATE = "/mlflow/experiments/create"
_ARTIFACT_TAILS = ("/mlflow-artifacts/artifacts/", "/mlflow-artifacts/mpu/create/",
                   "/mlflow-artifacts/mpu/complete/", "/mlflow-artifacts/mpu/abort/")


def create_app(app: Any = None) -> Any:
    """MLflow's basic-auth app with the guards (the ``xaitk-team`` app)."""
    from mlflow.server import app as flask_app
    from mlflow.server.auth import create_app as auth_create_app

    flask_app = app or flask_app
    with _one_worker_at_a_time():  # each worker migrates the users database and creates the admin if missing
        served = auth_create_app(flask_app)
    _install(flask_app, logins=True)
    return served


@contextlib.contextmanager
def _one_worker_at_a_time() -> Iterator[None]:
    """Hold an exclusive lock in the state folder while a worker sets up MLflow's auth app: without it, two
    workers booting together both try to create the admin user, one fails on the unique name, and gunicorn stops
    the whole server ("Worker failed to boot")."""
    folder = os.environ.get(STATE_DIR_ENV)
    if not folder:
        yield
        return
    import fcntl

    fd = os.open(os.path.join(folder, "auth-setup.lock"), os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def create_open_app(app: Any = None) -> Any:
    """MLflow's server without authentication, with the artifact guards (the ``xaitk-team-open`` app)."""
    from mlflow.server import app as flask_app

    flask_app = app or flask_app
    _install(flask_app, logins=False)
    if os.environ.get("_MLFLOW_SGI_NAME") == "uvicorn":
        from mlflow.server.fastapi_app import create_fastapi_app

        return create_fastapi_app(flask_app)
    return flask_app


def _install(app: Any, logins: bool) -> None:
    """Put the guards first in Flask's hook lists, before MLflow's authentication (a locked-out address costs no
    password hash)."""
    before = app.before_request_funcs.setdefault(None, [])
    before.insert(0, _guard_artifacts)
    if logins:
        before.insert(0, _guard_logins)
        app.after_request_funcs.setdefault(None, []).append(_count_logins)  # after-hooks run in reverse: last


# ----- artifact locations and paths ----------------------------------------------------------------------------
def _bad_request(message: str) -> Any:
    from flask import Response

    body = json.dumps({"error_code": "INVALID_PARAMETER_VALUE", "message": message})
    return Response(body, status=400, mimetype="application/json")


def location_problem(location: str, root: str) -> str | None:
    """Why ``location`` (an experiment's artifact_location) is refused on a server whose artifacts live under the
    folder ``root``, or None when it is fine (empty: the server's own default)."""
    if not location:
        return None
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in location):
        return "it holds control characters"
    parts = urlsplit(location)
    if parts.scheme == "mlflow-artifacts":
        path = unquote(parts.path)
    elif parts.scheme in ("", "file") and parts.netloc in ("", "localhost"):
        path = unquote(parts.path)
        if not path.startswith("/"):
            return "a relative path: give none, and the server chooses one under its artifact root"
        if ".." not in path.split("/") and _inside(path, root):
            return None
        return f"it lies outside this server's artifact root {root}"
    else:
        return f"scheme {parts.scheme!r} is not this server's artifact store"
    if ".." in path.split("/") or "\\" in path:
        return "it climbs out of the artifact root ('..')"
    return None


def _inside(path: str, root: str) -> bool:
    real, base = os.path.realpath(path), os.path.realpath(root)
    return real == base or real.startswith(base.rstrip("/") + "/")


def path_problem(path: str) -> str | None:
    """Why an artifact path (relative to a run's or the server's artifact folder) is refused, or None."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in path):
        return "it holds control characters"
    if "\\" in path or "#" in path:
        return "it holds '\\' or '#'"
    if path.startswith("/") or posixpath.isabs(path) or (len(path) > 1 and path[1] == ":"):
        return "it is absolute; give a path relative to the run's artifacts"
    if ".." in path.split("/"):
        return "it climbs out of the artifact folder ('..')"
    if len(path.encode()) > 4096:
        return "it is longer than 4096 bytes"
    return None


def _guard_artifacts() -> Any:
    from flask import request

    if request.method == "POST" and request.path.endswith(_EXPERIMENT_CREATE):
        body = request.get_json(silent=True)
        location = body.get("artifact_location") if isinstance(body, dict) else None
        if location is not None and not isinstance(location, str):
            return _bad_request("artifact_location must be a string")
        problem = location_problem(location or "", os.environ.get(ARTIFACT_ROOT_ENV, ""))
        if problem:
            return _bad_request(f"artifact_location={location!r} is refused: {problem}")
        return None
    path = request.args.get("path") if "artifact" in request.path else None
    for tail in _ARTIFACT_TAILS:
        if tail in request.path:
            path = request.path.split(tail, 1)[1]
    if path:
        problem = path_problem(unquote(path))
        if problem:
            return _bad_request(f"artifact path {path[:200]!r} is refused: {problem}")
    return None


# ----- failed logins ---------------------------------------------------------------------------------------------
def _state() -> sqlite3.Connection | None:
    folder = os.environ.get(STATE_DIR_ENV)
    if not folder:
        return None
    conn = sqlite3.connect(os.path.join(folder, "logins.sqlite"), timeout=10, isolation_level=None)
    conn.execute("CREATE TABLE IF NOT EXISTS failures (address TEXT NOT NULL, at REAL NOT NULL)")
    return conn


def wait_before_next(failures: int) -> float:
    """Seconds an address with ``failures`` recent failed logins waits after its last one (0 while few)."""
    if failures < FREE_FAILURES:
        return 0.0
    return min(2.0 ** (failures - FREE_FAILURES), MAX_WAIT)


def _guard_logins() -> Any:
    from flask import Response, request

    if request.authorization is None:
        return None
    conn = _state()
    if conn is None:
        return None
    with conn:
        count, last = conn.execute("SELECT count(*), max(at) FROM failures WHERE address = ? AND at > ?",
                                   (request.remote_addr or "", time.time() - WINDOW)).fetchone()
    wait = (last or 0.0) + wait_before_next(count) - time.time()
    if wait <= 0:
        return None
    return Response(f"Too many failed logins from this address; retry in {wait:.0f} s\n", status=429,
                    headers={"Retry-After": str(max(1, round(wait)))}, mimetype="text/plain")


def _count_logins(response: Any) -> Any:
    from flask import request

    if response.status_code != 401 or request.authorization is None:
        return response
    conn = _state()
    if conn is None:
        return response
    address, now = request.remote_addr or "", time.time()
    with conn:
        conn.execute("DELETE FROM failures WHERE at < ?", (now - WINDOW,))
        conn.execute("INSERT INTO failures VALUES (?, ?)", (address, now))
        count = conn.execute("SELECT count(*) FROM failures WHERE address = ?", (address,)).fetchone()[0]
    user = (request.authorization.username or "")[:64]
    stamp = datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds")
    print(f"xaitk-team: failed login user={user!r} address={address} time={stamp} "
          f"failures={count} wait={wait_before_next(count):.0f}s", file=sys.stderr, flush=True)
    return response

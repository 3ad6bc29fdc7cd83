"""User management on a team server with MLflow's basic-auth app, through MLflow's auth REST API, as the admin.

The admin's credentials come from ``--dir`` (the server folder's ``admin-password``) or, without ``--dir``, from
``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``. Passwords are read from a prompt (or one line of
standard input), never from the command line, where other users of the machine could see them.
"""

from __future__ import annotations

import getpass
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xaitk_exp import schema
from xaitk_exp.teamserver import (
    ADMIN_PASSWORD_FILE,
    ADMIN_USER,
    URL_FILE,
    TeamServerError,
    read_admin_password,
    write_secret,
)

PERMISSIONS = ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")
STAGES = schema.EXPERIMENT_SUFFIXES
MIN_PASSWORD = 12  # MLflow's own rule
USERS = "/api/2.0/mlflow/users"
PERMISSIONS_API = "/api/3.0/mlflow/users/permissions"
DEFAULT_URL = "http://127.0.0.1:5000"


@dataclass
class Admin:
    """A server URL and the admin credentials to manage it with."""

    url: str
    username: str
    password: str
    workdir: Path | None = None

    def call(self, method: str, endpoint: str, **kwargs: Any) -> tuple[int, Any]:
        """One REST call as the admin; ``(status, JSON body or text)``. Connection errors become one line."""
        from mlflow.utils.rest_utils import MlflowHostCreds, http_request

        creds = MlflowHostCreds(self.url, username=self.username, password=self.password)
        try:
            resp = http_request(creds, endpoint, method, max_retries=0, timeout=30, **kwargs)
        except Exception as exc:
            raise TeamServerError(f"--url={self.url!r}: the server cannot be reached ({type(exc).__name__})") from None
        try:
            body: Any = resp.json()
        except ValueError:
            body = resp.text.strip()
        if resp.status_code == 401:
            raise TeamServerError(f"--url={self.url!r}: the server refused user {self.username!r} (wrong password? "
                                  "give --dir of the server folder, or set MLFLOW_TRACKING_USERNAME/PASSWORD)")
        if resp.status_code == 403:
            raise TeamServerError(f"user {self.username!r} is not an admin on {self.url}: only an admin manages users")
        if resp.status_code == 404 and not isinstance(body, dict):
            raise TeamServerError(f"--url={self.url!r}: no user management there (a server started with --no-auth?)")
        return resp.status_code, body


def admin_from(url: str | None, workdir: str | None) -> Admin:
    """The admin of ``url`` (default: the URL the server in ``workdir`` wrote, else ``MLFLOW_TRACKING_URI``, else
    http://127.0.0.1:5000): from ``workdir``'s ``admin-password``, else from the environment."""
    folder = Path(workdir).expanduser().resolve() if workdir else None
    if url is None and folder is not None and (folder / URL_FILE).is_file():
        url = (folder / URL_FILE).read_text().strip()
    url = (url or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URL).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise TeamServerError(f"--url={url!r} is invalid: the http:// or https:// address of the tracking server")
    if folder is not None:
        return Admin(url, ADMIN_USER, read_admin_password(folder), folder)
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if not user or not password:
        raise TeamServerError("no admin credentials: give --dir (the server folder, which holds admin-password) or "
                              "set MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD to an admin's")
    return Admin(url, user, password)


def read_password(prompt: str, stdin: Any = None) -> str:
    """A new password: typed twice at a terminal, else the first line of standard input. At least 12 characters."""
    stream = stdin or sys.stdin
    if stream.isatty():
        first = getpass.getpass(f"{prompt}: ")
        if getpass.getpass("again: ") != first:
            raise TeamServerError("password: the two entries differ; nothing was changed")
    else:
        first = stream.readline().rstrip("\r\n")
    if len(first) < MIN_PASSWORD:
        raise TeamServerError(f"password: {len(first)} characters is too short: at least {MIN_PASSWORD} "
                              "(MLflow's rule)")
    return first


def _check_name(name: str) -> None:
    if not name or name != name.strip() or any(ch in name for ch in ":/\\@") or len(name) > 255:
        raise TeamServerError(f"NAME={name!r} is invalid: a user name without spaces at the ends or ':/\\@'")


def add_user(admin: Admin, name: str, password: str) -> None:
    """Create user ``name`` (MLflow's default permission, READ, on everything until granted more)."""
    _check_name(name)
    status, body = admin.call("POST", f"{USERS}/create", json={"username": name, "password": password})
    if status not in (200, 201):
        raise TeamServerError(f"user {name!r} was not created: {_reason(body, status)}")


def set_password(admin: Admin, name: str, password: str) -> None:
    """Change ``name``'s password; the admin's own also updates ``admin-password`` in the server folder."""
    _check_name(name)
    body_json = {"username": name, "password": password}
    if name == admin.username:
        body_json["current_password"] = admin.password  # MLflow asks for it when a user changes their own
    status, body = admin.call("PATCH", f"{USERS}/update-password", json=body_json)
    if status != 200:
        raise TeamServerError(f"the password of {name!r} was not changed: {_reason(body, status)}")
    if name == admin.username and admin.workdir is not None:
        write_secret(admin.workdir / ADMIN_PASSWORD_FILE, password)


def experiment_id(admin: Admin, name: str, create: bool) -> tuple[str, bool]:
    """The id of experiment ``name`` and whether it was created now."""
    status, body = admin.call("GET", "/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": name})
    if status == 200:
        return str(body["experiment"]["experiment_id"]), False
    if not create:
        raise TeamServerError(f"--experiment={name!r} does not exist on {admin.url}: xaitk-exp creates it on its first "
                              "run, or add --create to create it now")
    status, body = admin.call("POST", "/api/2.0/mlflow/experiments/create", json={"name": name})
    if status != 200:
        raise TeamServerError(f"--experiment={name!r} could not be created: {_reason(body, status)}")
    return str(body["experiment_id"]), True


def grant(admin: Admin, name: str, experiment: str, permission: str, create: bool = False) -> str:
    """Give ``name`` ``permission`` on experiment ``experiment``; returns what was done, in words."""
    _check_name(name)
    if permission not in PERMISSIONS:
        raise TeamServerError(f"--permission={permission!r} is invalid: one of {', '.join(PERMISSIONS)}")
    exp_id, created = experiment_id(admin, experiment, create)
    status, body = admin.call("POST", f"{PERMISSIONS_API}/grant", json={
        "username": name, "resource_type": "experiment", "resource_id": exp_id, "permission": permission})
    if status != 200:
        raise TeamServerError(f"{permission} on {experiment!r} was not granted to {name!r}: {_reason(body, status)}")
    return f"{name}: {permission} on experiment {experiment!r} (id {exp_id}{', created now' if created else ''})"


def list_users(admin: Admin) -> list[dict[str, Any]]:
    """Every user: ``username`` and ``is_admin``."""
    status, body = admin.call("GET", f"{USERS}/list")
    if status != 200:
        raise TeamServerError(f"the users could not be listed: {_reason(body, status)}")
    users = body.get("users", []) if isinstance(body, dict) else []
    return [{"username": u.get("username"), "is_admin": bool(u.get("is_admin"))} for u in users]


def _reason(body: Any, status: int) -> str:
    if isinstance(body, dict):
        return f"{body.get('error_code', f'HTTP {status}')}: {str(body.get('message', '')).splitlines()[0][:300]}"
    return f"HTTP {status}: {str(body).splitlines()[0][:300] if body else ''}"

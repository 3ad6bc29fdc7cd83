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
    STATE_FILE,
    TeamServerError,
    listens,
    read_admin_password,
    read_state,
    write_secret,
)

#: what MLflow 3.17's basic-auth app accepts on an experiment (``RESOURCE_GRANTABLE_PERMISSIONS``); an absent grant
#: means the server's default permission (READ), so ``user revoke`` is how a right is taken back
PERMISSIONS = ("READ", "USE", "EDIT", "MANAGE", "DENY")
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
    """The admin of the server folder ``workdir`` (its recorded URL, only while the server it started runs), or of
    ``url`` (default ``MLFLOW_TRACKING_URI``, else http://127.0.0.1:5000) with the environment's credentials."""
    folder = Path(workdir).expanduser().resolve() if workdir else None
    if folder is not None:
        own = own_server_url(folder)
        if url is not None and url.rstrip("/") != own:
            raise TeamServerError(f"--url={url!r} is not the server {folder} started ({own}): the folder's admin "
                                  "password goes to that server only; drop --url or --dir")
        return Admin(own, ADMIN_USER, read_admin_password(folder), folder)
    url = (url or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URL).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise TeamServerError(f"--url={url!r} is invalid: the http:// or https:// address of the tracking server")
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if not user or not password:
        raise TeamServerError("no admin credentials: give --dir (the server folder, which holds admin-password) or "
                              "set MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD to an admin's")
    return Admin(url, user, password)


def own_server_url(folder: Path) -> str:
    """The URL of the server the folder's command started, after checking that this very process (the recorded
    ``mlflow server`` pid, alive) still listens on the recorded port; else one line, and nothing is sent."""
    state = read_state(folder)
    pid, port, url = state.get("mlflow"), state.get("port"), state.get("url")
    if not (isinstance(pid, int) and isinstance(port, int) and isinstance(url, str)):
        raise TeamServerError(f"--dir={str(folder)!r}: no server of this folder is running (no {STATE_FILE} record); "
                              "start it with: python -m xaitk_exp.teamserver --dir ...")
    if not (_is_mlflow_server(pid) and listens(pid, port)):
        raise TeamServerError(f"--dir={str(folder)!r}: the server this folder started (mlflow pid {pid}, port {port}) "
                              "is not the one listening there any more; nothing was sent. Restart the server")
    return url.rstrip("/")


def _is_mlflow_server(pid: int) -> bool:
    import psutil

    try:
        cmdline = psutil.Process(pid).cmdline()
    except psutil.Error:
        return False
    return "mlflow" in cmdline and "server" in cmdline


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


_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def check_name(name: str) -> None:
    """Plain ASCII names only: no look-alike letters from other scripts, no control or invisible characters."""
    if not name or len(name) > 64 or not set(name) <= _NAME_CHARS or not name[0].isalnum():
        raise TeamServerError(f"NAME={ascii(name)} is invalid: 1 to 64 ASCII letters, digits, '.', '_' or '-', "
                              "starting with a letter or digit")


def add_user(admin: Admin, name: str, password: str) -> None:
    """Create user ``name`` (MLflow's default permission, READ, on everything until granted more)."""
    check_name(name)
    status, body = admin.call("POST", f"{USERS}/create", json={"username": name, "password": password})
    if status not in (200, 201):
        raise TeamServerError(f"user {name!r} was not created: {_reason(body, status)}")
    _field(admin, body, "user", "username")


def set_password(admin: Admin, name: str, password: str) -> None:
    """Change ``name``'s password; the admin's own also updates ``admin-password`` in the server folder."""
    check_name(name)
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
        return _field(admin, body, "experiment", "experiment_id"), False
    if not create:
        raise TeamServerError(f"--experiment={name!r} does not exist on {admin.url}: xaitk-exp creates it on its first "
                              "run, or add --create to create it now")
    status, body = admin.call("POST", "/api/2.0/mlflow/experiments/create", json={"name": name})
    if status != 200:
        raise TeamServerError(f"--experiment={name!r} could not be created: {_reason(body, status)}")
    return _field(admin, body, "experiment_id"), True


def _field(admin: Admin, body: Any, *keys: str) -> str:
    """``body[keys[0]][keys[1]]...`` as text; one line when the server answered something else."""
    value = body
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise TeamServerError(f"{admin.url} answered without {'.'.join(keys)} ({_first_line(body)!r}): is it the "
                              "team server?")
    return str(value)


def _permission_body(name: str, exp_id: str) -> dict[str, str]:
    return {"username": name, "resource_type": "experiment", "resource_id": exp_id}


def grant(admin: Admin, name: str, experiment: str, permission: str, create: bool = False) -> str:
    """Give ``name`` ``permission`` on experiment ``experiment`` (replacing a grant it has there); returns what
    was done, in words."""
    check_name(name)
    if permission not in PERMISSIONS:
        raise TeamServerError(f"--permission={permission!r} is invalid: one of {', '.join(PERMISSIONS)}")
    exp_id, created = experiment_id(admin, experiment, create)
    body = {**_permission_body(name, exp_id), "permission": permission}
    status, answer = admin.call("POST", f"{PERMISSIONS_API}/grant", json=body)
    was = ""
    if status != 200 and _code(answer) == "RESOURCE_ALREADY_EXISTS":
        # MLflow 3.17 has no update route for a user's grant: take the old one back, then grant the new one
        was = f", was {_current(admin, name, exp_id)}"
        status, answer = admin.call("POST", f"{PERMISSIONS_API}/revoke", json=_permission_body(name, exp_id))
        if status == 200:
            status, answer = admin.call("POST", f"{PERMISSIONS_API}/grant", json=body)
    if status != 200:
        raise TeamServerError(f"{permission} on {experiment!r} was not granted to {name!r}: {_reason(answer, status)}")
    return f"{name}: {permission} on experiment {experiment!r} (id {exp_id}{', created now' if created else ''}{was})"


def revoke(admin: Admin, name: str, experiment: str) -> str:
    """Take back ``name``'s grant on ``experiment``: the server's default permission applies again."""
    check_name(name)
    exp_id, _ = experiment_id(admin, experiment, create=False)
    status, answer = admin.call("POST", f"{PERMISSIONS_API}/revoke", json=_permission_body(name, exp_id))
    if status != 200:
        raise TeamServerError(f"no grant of {name!r} on {experiment!r} was revoked: {_reason(answer, status)}")
    return f"{name}: grant on experiment {experiment!r} (id {exp_id}) revoked; the default permission applies"


def _current(admin: Admin, name: str, exp_id: str) -> str:
    status, answer = admin.call("GET", f"{PERMISSIONS_API}/get", params=_permission_body(name, exp_id))
    permission = answer.get("permission") if status == 200 and isinstance(answer, dict) else None
    return str(permission) if isinstance(permission, str) else "another permission"


def _code(body: Any) -> str:
    return str(body.get("error_code", "")) if isinstance(body, dict) else ""


def list_users(admin: Admin) -> list[dict[str, Any]]:
    """Every user: ``username`` and ``is_admin``."""
    status, body = admin.call("GET", f"{USERS}/list")
    if status != 200:
        raise TeamServerError(f"the users could not be listed: {_reason(body, status)}")
    users = body.get("users") if isinstance(body, dict) else None
    if not isinstance(users, list) or not all(isinstance(u, dict) and isinstance(u.get("username"), str)
                                              for u in users):
        raise TeamServerError(f"{admin.url} answered the user list with something else than MLflow's users "
                              f"({_first_line(body)!r}): is it the team server?")
    return [{"username": u["username"], "is_admin": bool(u.get("is_admin"))} for u in users]


def _first_line(value: Any) -> str:
    lines = str(value).strip().splitlines()
    return lines[0][:300] if lines else ""


def _reason(body: Any, status: int) -> str:
    if isinstance(body, dict):
        return f"{body.get('error_code', f'HTTP {status}')}: {_first_line(body.get('message', ''))}"
    return f"HTTP {status}: {_first_line(body)}"

"""Credentials and permissions on a tracking server with MLflow's basic-auth app (``mlflow server --app-name
basic-auth``), from the client's side.

- :func:`credentials_from_argv`: a ``user:password@`` typed into a ``tracking.uri`` override moves into
  ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` before Hydra sees the command line, so that no saved
  file (``.hydra/``, params, tags) ever holds it.
- :func:`check_access`: before a job opens any run, the server is asked who we are (401: wrong or missing
  password) and what we may do on the experiments the job writes (EDIT or MANAGE needed); either refusal is one
  :class:`~xaitk_exp.errors.TrackingError` line.
- :func:`refusal`: a 401/403 met later (a resource the preflight could not foresee) as the same kind of line.

Credentials come from where MLflow's own client takes them: ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``, else
``~/.mlflow/credentials``, else (through ``requests``) the user info of the URL or ``~/.netrc``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import unquote, urlsplit, urlunsplit

from xaitk_exp import schema
from xaitk_exp.errors import ConfigError, TrackingError

if TYPE_CHECKING:
    from xaitk_exp.tracking.tracker import Tracker

CURRENT_USER = "/api/2.0/mlflow/users/current"
GET_PERMISSION = "/api/3.0/mlflow/users/permissions/get"
#: the permissions that let a user create runs in an experiment and write to them
WRITE_PERMISSIONS = ("EDIT", "MANAGE")
#: the experiments (``<model class> - <stage>``) each ``stage`` writes runs into
STAGE_EXPERIMENTS = {
    "all": schema.EXPERIMENT_SUFFIXES,
    "train": (schema.TRAIN,),
    "evaluation": (schema.EVALUATION,),
    "saliency": (schema.SALIENCY,),
}
USERNAME_ENV, PASSWORD_ENV = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
HOW_TO_LOG_IN = f"set {USERNAME_ENV}/{PASSWORD_ENV}"


class Identity(NamedTuple):
    """Who the server says we are."""

    username: str
    is_admin: bool


# ----- credentials out of the command line ---------------------------------------------------------------------
def credentials_from_argv(argv: list[str], environ: MutableMapping[str, str] | None = None) -> list[str]:
    """``argv`` with the user info removed from every ``tracking.uri=`` override (and from ``MLFLOW_TRACKING_URI``),
    the user name and password moved into ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` of
    ``environ`` (default ``os.environ``; subprocesses and sweep workers inherit them).

    A sweep over several URLs must use one set of credentials for all of them: :class:`ConfigError` otherwise.
    """
    env = os.environ if environ is None else environ
    found: set[tuple[str, str | None]] = set()
    out = []
    for token in argv:
        key, sep, value = token.partition("=")
        if not sep or key.lstrip("+~") != "tracking.uri" or "@" not in value:
            out.append(token)
            continue
        quote = value[0] if len(value) >= 2 and value[0] in "'\"" and value[-1] == value[0] else ""
        inner = value[1:-1] if quote else value
        parts = [inner] if quote else inner.split(",")
        clean = []
        for part in parts:
            url, creds = _split_userinfo(part)
            clean.append(url)
            if creds is not None:
                found.add(creds)
        out.append(f"{key}={quote}{','.join(clean)}{quote}")
    env_uri = env.get("MLFLOW_TRACKING_URI", "")
    if "@" in env_uri:
        url, creds = _split_userinfo(env_uri)
        if creds is not None:
            env["MLFLOW_TRACKING_URI"] = url
            if not found:  # a tracking.uri typed on the command line wins, as its URL does
                found.add(creds)
    if len(found) > 1:
        raise ConfigError("tracking.uri", "<several URLs with user info>", "one user name and password for every "
                          "tracking URL", f"{HOW_TO_LOG_IN} instead of typing them into the URL")
    if found:
        user, password = found.pop()
        env[USERNAME_ENV] = user
        if password is not None:
            env[PASSWORD_ENV] = password
    return out


def take_credentials(argv: list[str]) -> str | None:
    """:func:`credentials_from_argv` on ``argv[1:]`` in place (``sys.argv`` before Hydra reads it); the one-line
    error for the command line, or None."""
    try:
        argv[1:] = credentials_from_argv(argv[1:])
    except ConfigError as exc:
        return str(exc)
    return None


def _split_userinfo(url: str) -> tuple[str, tuple[str, str | None] | None]:
    """``(url without user info, (user, password or None))``, or ``(url, None)`` when it has none."""
    parts = urlsplit(url.replace("\\", ""))  # Hydra escapes ':' in sweep values
    if "@" not in parts.netloc or parts.scheme not in ("http", "https"):
        return url, None
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, colon, password = userinfo.partition(":")
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment)), (
        unquote(user), unquote(password) if colon else None)


# ----- who am I, what may I do ---------------------------------------------------------------------------------
def client_username(uri: str) -> str | None:
    """The user name this process sends to ``uri``, from the places MLflow's client and ``requests`` read it."""
    from mlflow.utils.credentials import read_mlflow_creds

    name = read_mlflow_creds().username
    if name:
        return name
    parts = urlsplit(uri)
    if parts.username:
        return unquote(parts.username)
    try:
        from requests.utils import get_netrc_auth

        auth = get_netrc_auth(uri)
    except Exception:  # an unreadable or malformed .netrc: requests ignores it too
        auth = None
    return auth[0] if auth else None


def whoami(uri: str) -> Identity | None:
    """The signed-in user of an authenticating server; None when the server has no basic-auth app.

    Raises :class:`TrackingError` (one line) when the server refuses the credentials.
    """
    status, body = _get(uri, CURRENT_USER)
    if status == 401:
        raise TrackingError(unauthorized_message(uri))
    if status != 200 or not isinstance(body, Mapping) or not isinstance(body.get("user"), Mapping):
        return None
    user = body["user"]
    return Identity(str(user.get("username")), bool(user.get("is_admin")))


def experiment_permission(uri: str, username: str, experiment_id: str) -> str:
    """The permission (``READ``, ``EDIT``, ``MANAGE``, ``NO_PERMISSIONS``...) ``username`` holds on an experiment,
    as the server resolves it for a real request."""
    status, body = _get(uri, GET_PERMISSION,
                        {"username": username, "resource_type": "experiment", "resource_id": experiment_id})
    if status != 200 or not isinstance(body, Mapping):
        raise TrackingError(f"tracking.uri: the server did not say what user {username!r} may do on experiment "
                            f"{experiment_id} (HTTP {status})")
    return str(body.get("permission", "NO_PERMISSIONS"))


def job_experiments(cfg: Any, stage: str) -> list[str]:
    """The experiments a job of ``cfg`` (its model node) at ``stage`` writes runs into ([] when the model class is
    known only after loading a stored model, or for ``stage=reproduce``)."""
    from omegaconf import OmegaConf

    target = OmegaConf.select(cfg, "model._target_", default=None)
    if not target or OmegaConf.select(cfg, "model.uri", default=None):
        return []
    cls = str(target).rsplit(".", 1)[-1]
    return [schema.experiment_name(cls, stage) for stage in STAGE_EXPERIMENTS.get(stage, ())]


def check_access(cfg: Any, stage: str, tracker: Tracker) -> None:
    """Refuse a job, before it opens any run, that the tracking server would refuse halfway.

    Only for ``http(s)://`` servers with MLflow's basic-auth app; admins pass. An experiment that does not exist
    yet passes too: any signed-in user may create one (and then manages it).
    """
    uri = str(tracker.uri)
    if not uri.startswith(("http://", "https://")):
        return
    me = whoami(uri)
    if me is None or me.is_admin:
        return
    for name in job_experiments(cfg, stage):
        exp = _experiment(tracker, name)
        if exp is None:
            continue
        permission = experiment_permission(uri, me.username, exp.experiment_id)
        if permission not in WRITE_PERMISSIONS:
            raise TrackingError(
                f"tracking.uri: user {me.username!r} has no EDIT permission on experiment {name!r} (it has "
                f"{permission}); an admin grants it with: python -m xaitk_exp.teamserver user grant {me.username} "
                f"--experiment '{name}' --permission EDIT"
            )


def _experiment(tracker: Tracker, name: str) -> Any:
    """Experiment ``name`` or None; a 401/403 on the lookup itself is the refusal to report."""
    from mlflow.exceptions import MlflowException

    try:
        return tracker.client.get_experiment_by_name(name)
    except MlflowException as exc:
        line = refusal(exc, str(tracker.uri), f"read experiment {name!r}")
        if line:
            raise TrackingError(line) from None
        raise


def unauthorized_message(uri: str) -> str:
    """The one line for a 401: who was refused, and how to log in."""
    user = client_username(uri)
    if user:
        return (f"tracking.uri: the server refused user {user!r} (wrong or missing password; {HOW_TO_LOG_IN} "
                "or a ~/.netrc entry)")
    return (f"tracking.uri: the server requires a user name and password ({HOW_TO_LOG_IN}, or a ~/.netrc entry "
            "for its host)")


#: what a refused REST call was trying to do, for the one-line message
_ACTIONS = {
    "runs/create": "create a run", "runs/update": "update a run", "runs/log-batch": "log to a run",
    "runs/set-tag": "tag a run", "experiments/create": "create an experiment", "mlflow-artifacts": "upload artifacts",
}


def refusal(exc: BaseException, uri: str, action: str | None = None) -> str | None:
    """The one line for an HTTP 401/403 anywhere in ``exc``'s chain (MLflow's REST errors, artifact uploads),
    naming the user and what was refused; None for any other error."""
    status, endpoint = _refused_status(exc)
    if status == 401:
        return unauthorized_message(uri)
    if status != 403:
        return None
    user = client_username(uri) or "anonymous"
    if action is None:
        action = next((v for k, v in _ACTIONS.items() if endpoint and k in endpoint),
                      f"call {endpoint}" if endpoint else "do this")
    return (f"tracking.uri: user {user!r} is not allowed to {action} (HTTP 403); an admin grants EDIT on an "
            f"experiment with: python -m xaitk_exp.teamserver user grant {user} --experiment NAME --permission EDIT")


def _refused_status(exc: BaseException) -> tuple[int | None, str | None]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        status = None
        getter = getattr(current, "get_http_status_code", None)
        if callable(getter):
            try:
                status = int(getter())
            except Exception:
                status = None
        response = getattr(current, "response", None)
        if status not in (401, 403) and response is not None:
            status = getattr(response, "status_code", None)
        text = str(current)
        match = re.search(r"endpoint (\S+) failed with error code (\d{3})", text)
        if status not in (401, 403) and match:
            status = int(match.group(2))
        if status in (401, 403):
            return status, (match.group(1) if match else None)
        current = current.__cause__ or current.__context__
    return None, None


def _get(uri: str, endpoint: str, params: Mapping[str, str] | None = None) -> tuple[int, Any]:
    """GET ``endpoint`` with the credentials MLflow's client would send; ``(status, JSON body or None)``."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    try:
        creds = get_default_host_creds(uri)  # type: ignore[no-untyped-call]  # MLflow leaves both unannotated
        resp = http_request(creds, endpoint, "GET", params=dict(params or {}))  # type: ignore[no-untyped-call]
    except Exception as exc:
        from xaitk_exp.security.redact import redact_text

        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise TrackingError(redact_text(f"tracking.uri: the tracking store cannot be read ({type(exc).__name__}: "
                                        f"{first})"[:600], uri)) from None
    try:
        body = resp.json()
    except ValueError:
        body = None
    return resp.status_code, body

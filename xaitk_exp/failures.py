"""Failures of what a job runs on, met halfway through it, as one line: a tracking server that stopped answering or
failed every try, a full disk, memory. :func:`failure_line` reads an exception's chain (MLflow wraps the
``requests``/``urllib3`` errors it meets) and names the cause; anything it does not know stays a traceback, as a
bug should.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator
from urllib.parse import urlsplit

#: what a REST call that failed was doing, by its endpoint (for the one line)
_ACTIONS = (
    ("runs/create", "create a run"), ("runs/update", "close a run"), ("runs/log-batch", "log to a run"),
    ("runs/set-tag", "tag a run"), ("runs/get", "read a run"), ("runs/search", "search runs"),
    ("experiments/", "read or create an experiment"), ("mlflow-artifacts", "store an artifact"),
    ("logged-models", "record a logged model"), ("model-versions", "register a model"),
)
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it was raised from or while handling (each once)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def failure_line(exc: BaseException, uri: str | None) -> str | None:
    """One line naming the cause of ``exc`` when it is a failure of the machine or of the tracking server (not of
    the code); None otherwise. ``uri`` is the job's tracking URI (named without its credentials)."""
    errors = list(chain(exc))
    for e in errors:
        if isinstance(e, MemoryError):
            what = str(e).strip().splitlines()[0] if str(e).strip() else "an allocation failed"
            return (f"out of memory: {what}; make dataset.shape, the model or chunk_size smaller, or lower n_jobs")
    for e in errors:
        if isinstance(e, OSError) and e.errno in _DISK_FULL:
            where = e.filename2 or e.filename
            return f"the disk is full: no space left on device writing {where}" + _disk_hint(str(where or ""), uri)
    for e in errors:
        if "database or disk is full" in str(e):
            return f"the disk is full: the SQLite store {_store_path(uri)} cannot grow (database or disk is full)"
    return _server_line(errors, uri)


def _disk_hint(path: str, uri: str | None) -> str:
    if uri and uri.startswith("sqlite:") and "artifacts" not in path and "mlartifacts" not in path:
        return "; free space there"
    return " (the local artifact disk: free space there, or point tracking.artifact_root elsewhere)"


def _store_path(uri: str | None) -> str:
    return str(uri or "")[len("sqlite:///"):] if str(uri or "").startswith("sqlite:///") else str(uri)


def _server_line(errors: list[BaseException], uri: str | None) -> str | None:
    """A tracking server that stopped answering, or answered an error status to every retry."""
    import requests
    from urllib3.exceptions import MaxRetryError, ResponseError

    failed = next((e for e in errors if isinstance(e, (MaxRetryError, requests.exceptions.RequestException))), None)
    if failed is None:
        return None
    server = _server(uri, errors)
    url = getattr(failed, "url", None) or (getattr(getattr(failed, "request", None), "url", None)) or ""
    if not url:
        found = re.search(r"with url: (\S+)", str(failed))
        url = found.group(1) if found else ""
    action = next((a for key, a in _ACTIONS if key in url), "answer a request")
    reason = getattr(failed, "reason", None)
    if isinstance(reason, ResponseError) or "error responses" in str(failed):
        status = re.search(r"too many (\d{3}) error responses", str(failed))
        code = status.group(1) if status else "5xx"
        if "mlflow-artifacts" in url:
            return (f"tracking.uri: the tracking server {server} failed to store an artifact (HTTP {code} to every "
                    f"try of {urlsplit(url).path.split('/artifacts/', 1)[-1] or url}): its artifact disk is most "
                    "likely full (or unwritable); the server's log says which")
        return (f"tracking.uri: the tracking server {server} failed to {action} (HTTP {code} to every try); its "
                "database or disk is failing; the server's log says why")
    if any(isinstance(e, requests.exceptions.Timeout) or "timed out" in str(e).lower() for e in errors):
        cause = "no answer in time"
    elif any(isinstance(e, ConnectionRefusedError) or "Connection refused" in str(e) for e in errors):
        cause = "connection refused"
    else:
        cause = "connection lost"
    return (f"tracking.uri: the tracking server {server} stopped answering ({cause}) when the job tried to "
            f"{action}; what it recorded before is kept, and the run open at that moment stays RUNNING on it")


def _server(uri: str | None, errors: list[BaseException]) -> str:
    """The server's address without credentials or path: the job's URI, else the failed request's host."""
    if uri and uri.startswith(("http://", "https://")):
        parts = urlsplit(uri)
        return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"
    found = next((m for e in errors if (m := re.search(r"host='([^']+)', port=(\d+)", str(e)))), None)
    return f"{found.group(1)}:{found.group(2)}" if found else "(unknown)"

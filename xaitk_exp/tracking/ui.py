"""Where a person finds a run in the MLflow UI: the runs table of an experiment (optionally with a filter), a run's
page, and for a local store the command that starts the UI."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

#: where ``mlflow ui`` listens unless told otherwise
LOCAL_UI = "http://127.0.0.1:5000"


def ui_base(uri: str) -> str | None:
    """The UI's address for tracking ``uri``: the server itself (without credentials), the local UI for a SQLite
    store, None for a database only a server can show."""
    scheme = urlsplit(uri).scheme
    if scheme in ("http", "https"):
        parts = urlsplit(uri)
        host = parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))
    if scheme == "sqlite":
        return LOCAL_UI
    return None


def runs_table_url(
    uri: str, experiment_id: str, search_filter: str | None = None, order_by: str | None = None
) -> str | None:
    """The experiment's runs table (MLflow 3 otherwise opens an experiment on its GenAI overview), filtered by
    ``search_filter`` and sorted by ``order_by`` (``metrics.<name> [ASC|DESC]``).

    MLflow's table folds nested runs under their collapsed parent while it sorts by start time; an evaluation's image
    runs are top-level (linked to their summary by tag), so a typed query lists them in any order.
    """
    base = ui_base(uri)
    if base is None:
        return None
    params = []
    if search_filter:
        params.append(f"searchFilter={quote(search_filter, safe='')}")
    if order_by:
        key, _, direction = order_by.strip().partition(" ")
        kind, _, name = key.partition(".")
        params.append(f"orderByKey={quote(f'{kind}.`{name.strip(chr(96))}`', safe='')}")
        params.append(f"orderByAsc={'true' if direction.strip().upper() == 'ASC' else 'false'}")
    url = f"{base}/#/experiments/{experiment_id}/runs"
    return f"{url}?{'&'.join(params)}" if params else url


def run_url(uri: str, experiment_id: str, run_id: str) -> str | None:
    base = ui_base(uri)
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}" if base else None


def ui_command(uri: str) -> str | None:
    """The command that shows a local SQLite store, runnable as typed from the working directory: the ``mlflow``
    beside this Python (``.venv/bin/mlflow`` for the README's set-up), the store path relative when it can be."""
    if not uri.startswith("sqlite:///"):
        return None
    mlflow = Path(sys.executable).parent / "mlflow"
    db = Path(uri[len("sqlite:///") :])
    cwd = Path.cwd()
    exe = _relative(mlflow, cwd)
    store = f"sqlite:///{_relative(db, cwd)}"
    return f"{exe} ui --backend-store-uri {store} --port {urlsplit(LOCAL_UI).port}"


def _relative(path: Path, cwd: Path) -> str:
    try:
        rel = path.absolute().relative_to(cwd)
    except ValueError:
        return str(path)
    text = str(rel)
    return text if os.sep in text or text.startswith(".") else f"./{text}"

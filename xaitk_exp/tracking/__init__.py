"""Tracking: one interface (:class:`~xaitk_exp.tracking.base.Tracker`), three MLflow API levels.

- ``high``: :mod:`xaitk_exp.tracking.high`, MLflow's flavour and convenience functions (``mlflow.sklearn.log_model``,
  ``mlflow.log_dict``, ``mlflow.log_table``) on top of the fluent API.
- ``mid``: :mod:`xaitk_exp.tracking.mid`, the fluent ``mlflow.*`` API (active-run stack).
- ``low``: :mod:`xaitk_exp.tracking.low`, ``MlflowClient`` with explicit run ids and batched writes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xaitk_exp.tracking.base import Tracker

LEVELS = {
    "high": "xaitk_exp.tracking.high:HighTracker",
    "mid": "xaitk_exp.tracking.mid:MidTracker",
    "low": "xaitk_exp.tracking.low:LowTracker",
}


def make_tracker(level: str, uri: str, artifact_root: str | None = None, sqlite_journal: str = "wal") -> Tracker:
    """The tracker for ``logging.level``; the class is imported only when asked for. ``sqlite_journal`` is the
    journal mode of a SQLite store (``tracking.sqlite_journal``)."""
    import importlib

    from xaitk_exp.errors import ConfigError

    if level not in LEVELS:
        raise ConfigError("logging.level", level, f"one of {', '.join(LEVELS)}")
    module, cls = LEVELS[level].split(":")
    return getattr(importlib.import_module(module), cls)(uri, artifact_root, sqlite_journal)


#: per worker process: the tracker of the last store it wrote to (see :func:`worker_tracker`)
_WORKER_TRACKERS: dict[tuple, Tracker] = {}


def worker_tracker(reopen_args: tuple) -> Tracker:
    """The tracker :meth:`Tracker.reopen_args` describes, opened once per process: worker processes that write
    runs to the stage's store open it with this."""
    tracker = _WORKER_TRACKERS.get(reopen_args)
    if tracker is None:
        _WORKER_TRACKERS.clear()
        tracker = _WORKER_TRACKERS[reopen_args] = make_tracker(*reopen_args)
    return tracker


def use_tracking_uri(uri: str) -> None:
    """Point MLflow's fluent API at ``uri`` without leaking it into ``MLFLOW_TRACKING_URI``.

    ``mlflow.set_tracking_uri`` also exports the environment variable, which later jobs in the same process and
    every subprocess would then take as their default store.
    """
    import os

    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before

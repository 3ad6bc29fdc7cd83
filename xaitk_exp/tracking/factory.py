"""Open the tracker of a logging level: in the job's process (:func:`make_tracker`) or once per worker process
(:func:`worker_tracker`). The level's module is imported only when asked for."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from xaitk_exp.errors import ConfigError

if TYPE_CHECKING:
    from xaitk_exp.tracking.tracker import Tracker

#: what reopens a tracker in another process: (level, uri, artifact_root, sqlite_journal)
ReopenArgs = tuple[str, str, str | None, str]

IMPLEMENTATIONS = {
    "high": "xaitk_exp.tracking.high:HighTracker",
    "mid": "xaitk_exp.tracking.mid:MidTracker",
    "low": "xaitk_exp.tracking.low:LowTracker",
}


def make_tracker(level: str, uri: str, artifact_root: str | None = None, sqlite_journal: str = "wal") -> Tracker:
    """The tracker for ``logging.level``; the class is imported only when asked for. ``sqlite_journal`` is the
    journal mode of a SQLite store (``tracking.sqlite_journal``)."""
    if level not in IMPLEMENTATIONS:
        raise ConfigError("logging.level", level, f"one of {', '.join(IMPLEMENTATIONS)}")
    module, cls = IMPLEMENTATIONS[level].split(":")
    tracker: Tracker = getattr(importlib.import_module(module), cls)(uri, artifact_root, sqlite_journal)
    return tracker


#: per worker process: the tracker of the last store it wrote to (see :func:`worker_tracker`)
_WORKER_TRACKERS: dict[ReopenArgs, Tracker] = {}


def worker_tracker(reopen_args: ReopenArgs) -> Tracker:
    """The tracker :meth:`Tracker.reopen_args` describes, opened once per process: worker processes that write
    runs to the stage's store open it with this."""
    tracker = _WORKER_TRACKERS.get(reopen_args)
    if tracker is None:
        _WORKER_TRACKERS.clear()
        tracker = _WORKER_TRACKERS[reopen_args] = make_tracker(*reopen_args)
    return tracker



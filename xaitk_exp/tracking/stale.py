"""Runs left RUNNING by a process that is gone (``kill -9``, a crash of the machine, a lost server connection).

Every run records the process that opened it (tags ``Host``, ``Pid``, ``Process``: boot id, PID namespace and the
process's start time, so that a reused pid is not taken for the old process). Two ways out of RUNNING:

- at the start of every stage, :func:`close_dead_runs` closes KILLED the RUNNING runs that a process of *this* host
  (same boot, same PID namespace) opened and that process is gone; runs of other hosts are left alone;
- ``python -m xaitk_exp.tracking.stale --older-than 2h [--uri URI]`` closes KILLED every RUNNING run older than an
  age, whichever host opened it (a team server's runs of machines that are gone), ``--dry-run`` lists them.

A relaunch replaces a KILLED run of the same work rather than adding a second one (:func:`drop_killed`).
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from xaitk_exp import schema
from xaitk_exp.tracking.processes import (  # noqa: F401 (process_tags, drop_killed: this module's API too)
    _open_runs,
    drop_killed,
    process_gone,
    process_tags,
)
from xaitk_exp.tracking.tracker import Tracker


def _experiments(tracker: Tracker) -> dict[str, str]:
    """id -> name of every active experiment."""
    out: dict[str, str] = {}
    token = None
    while True:
        page = tracker.client.search_experiments(max_results=1000, page_token=token)
        out.update({e.experiment_id: e.name for e in page})
        token = page.token
        if not token:
            return out


def _close(tracker: Tracker, runs: list[Any], reason: str, names: dict[str, str]) -> Counter[str]:
    """Close ``runs`` KILLED with a ``Closed_stale`` tag; per experiment name, how many were closed."""
    closed: Counter[str] = Counter()
    for run in runs:
        try:
            tracker.client.set_tag(run.info.run_id, schema.CLOSED_STALE, reason)
            tracker.client.set_terminated(run.info.run_id, "KILLED")
        except Exception:  # another user's run on a server (no EDIT right), deleted meanwhile: left as it is
            continue
        closed[names.get(run.info.experiment_id, run.info.experiment_id)] += 1
    return closed


def _says(closed: Counter[str]) -> str:
    return ", ".join(f"{n} in '{name}'" for name, n in sorted(closed.items()))


def close_dead_runs(tracker: Tracker) -> int:
    """Close KILLED the RUNNING runs this host's processes opened and left behind; print one line if any. A store
    that cannot be read at all is the stage's one-line error (raised here, the first read); a run that cannot be
    searched or closed is left as it is. Returns how many were closed."""
    try:
        names = _experiments(tracker)
    except Exception as exc:  # an unreachable server: one line now, not a second wait for the stage's own read
        from xaitk_exp.errors import TrackingError
        from xaitk_exp.tracking.limits import short_error

        raise TrackingError(
            tracker._scrub(f"tracking.uri: the tracking store cannot be read ({short_error(exc)})")
        ) from exc
    try:
        flt = f"attributes.status = 'RUNNING' and tags.{schema.HOST} = '{_quote(socket.gethostname())}'"
        dead = [r for r in _open_runs(tracker, list(names), flt) if process_gone(r.data.tags)]
    except Exception:
        return 0
    if not dead:
        return 0
    closed = _close(tracker, dead, "its process was gone (found by a later stage on its host)", names)
    if closed:
        print(f"xaitk-exp: closed {sum(closed.values())} run(s) KILLED that a process of this host left RUNNING "
              f"when it died: {_says(closed)}", file=sys.stderr)
    return sum(closed.values())


def close_older_than(tracker: Tracker, seconds: float, experiments: list[str] | None = None,
                     dry_run: bool = False) -> Counter[str]:
    """Close KILLED every RUNNING run started more than ``seconds`` ago (in ``experiments``, by name, else all),
    whichever host opened it; ``dry_run`` only counts them. Per experiment name, how many."""
    names = _experiments(tracker)
    if experiments:
        missing = [e for e in experiments if e not in names.values()]
        if missing:
            from xaitk_exp.errors import ConfigError

            raise ConfigError("--experiment", missing[0], f"an experiment of {tracker.display_uri}")
        names = {i: n for i, n in names.items() if n in experiments}
    cutoff = int((time.time() - seconds) * 1000)
    flt = f"attributes.status = 'RUNNING' and attributes.start_time < {cutoff}"
    old = list(_open_runs(tracker, list(names), flt))
    if dry_run:
        return Counter(names.get(r.info.experiment_id, r.info.experiment_id) for r in old)
    return _close(tracker, old, f"RUNNING for more than {_age(seconds)} (closed by the stale-run command)", names)


def _quote(text: str) -> str:
    return text.replace("'", "''")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_age(text: str) -> float:
    """``90s``, ``30m``, ``2h``, ``7d`` (or plain seconds) -> seconds."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(text))
    if not found:
        raise argparse.ArgumentTypeError(f"{text!r}: an age such as 90s, 30m, 2h or 7d")
    return float(found.group(1)) * _UNITS[found.group(2) or "s"]


def _age(seconds: float) -> str:
    for unit in ("d", "h", "m"):
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xaitk_exp.tracking.stale",
        description="Close KILLED the runs left RUNNING for longer than an age, on any host (a team server's runs "
                    "of clients that died). Credentials come from MLFLOW_TRACKING_USERNAME/PASSWORD as for xaitk-exp.",
    )
    parser.add_argument("--older-than", type=parse_age, required=True, help="age such as 30m, 2h, 7d")
    default = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'outputs' / 'mlflow.db'}"
    parser.add_argument("--uri", default=default,
                        help="tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///outputs/mlflow.db)")
    parser.add_argument("--experiment", action="append", help="only this experiment (repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be closed, close nothing")
    args = parser.parse_args(argv)
    from xaitk_exp.errors import XaitkExpError
    from xaitk_exp.settings.config import HttpSettings
    from xaitk_exp.tracking.factory import make_tracker

    for name, value in HttpSettings().environment().items():  # a server that does not answer: xaitk-exp's bounds
        os.environ.setdefault(name, value)

    try:
        if args.uri.startswith("sqlite:///") and not Path(args.uri.removeprefix("sqlite:///")).is_file():
            raise XaitkExpError(f"--uri={args.uri!r}: no such SQLite store")
        tracker = make_tracker("low", args.uri)
        counts = close_older_than(tracker, args.older_than, args.experiment, args.dry_run)
    except XaitkExpError as exc:
        print(f"xaitk-exp: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # unreachable server, refused credentials
        from xaitk_exp.security.redact import redact_text

        first = (str(exc).splitlines() or [""])[0]
        print(f"xaitk-exp: error: {args.uri and redact_text(f'{type(exc).__name__}: {first}', args.uri)}",
              file=sys.stderr)
        return 2
    verb = "would close" if args.dry_run else "closed"
    total = sum(counts.values())
    print(f"{verb} {total} run(s) KILLED that were RUNNING for more than {_age(args.older_than)}"
          + (f": {_says(counts)}" if total else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

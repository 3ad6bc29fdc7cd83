"""The process that opens a run (tags ``Host``, ``Pid``, ``Process``) and whether it is gone; the deletion of KILLED
runs a relaunch redoes. What the tracker needs of :mod:`xaitk_exp.tracking.stale`, below it (no import cycle)."""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from xaitk_exp import schema
from xaitk_exp.tracking.reads import StoreReader

#: search page size when looking for open runs (one request per page against a server)
PAGE = 5000


@functools.cache
def _boot_and_namespace() -> str:
    """``<boot id>:<pid namespace>`` of this machine and process, or '' where /proc does not say."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid").strip("pid:[]")
    except OSError:
        return ""
    return f"{boot}:{namespace}"


def _start_ticks(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks after boot, /proc/<pid>/stat field 22), None if gone;
    '' where /proc does not exist. A zombie counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None if Path("/proc/self/stat").exists() else ""
    except OSError:
        return ""
    fields = stat.rsplit(")", 1)[-1].split()  # the name in parentheses may hold spaces
    if fields and fields[0] in ("Z", "X"):
        return None
    return fields[19] if len(fields) > 19 else ""


def process_tags() -> dict[str, str]:
    """Tags naming the process that opens a run: ``Host``, ``Pid``, ``Process`` (boot:namespace:start)."""
    return dict(_process_tags(os.getpid()))


@functools.cache
def _process_tags(pid: int) -> tuple[tuple[str, str], ...]:  # per pid: a forked worker computes its own
    ident = _boot_and_namespace()
    start = _start_ticks(pid) or ""
    tags = {schema.HOST: socket.gethostname(), schema.PID: str(pid)}
    if ident and start:
        tags[schema.PROCESS] = f"{ident}:{start}"
    return tuple(tags.items())


def process_gone(tags: dict[str, str]) -> bool:
    """True when the process a run's tags name is certainly gone: on this host, and either this machine rebooted
    since, or (same PID namespace) the pid is free or now a younger process. False when unsure."""
    if tags.get(schema.HOST) != socket.gethostname() or not str(tags.get(schema.PID, "")).isdigit():
        return False
    pid, recorded = int(tags[schema.PID]), tags.get(schema.PROCESS, "")
    ident = _boot_and_namespace()
    if recorded and ident:
        boot, _, rest = recorded.partition(":")
        namespace, _, start = rest.partition(":")
        if boot != ident.split(":")[0]:
            return True  # the machine rebooted: no process of before is alive
        if namespace != ident.split(":")[1]:
            return False  # another container's pids: not ours to judge
        now = _start_ticks(pid)
        return now is None or (bool(now) and now != start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: someone else's live process
        return False
    return False


def _open_runs(tracker: StoreReader, experiment_ids: list[str], filter_string: str) -> Iterable[Any]:
    token = None
    while experiment_ids:
        page = tracker.client.search_runs(experiment_ids, filter_string, max_results=PAGE, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def drop_killed(tracker: StoreReader, experiment_id: str, filter_string: str, key: str | None = None,
                keys: Iterable[str] | None = None) -> int:
    """Delete the KILLED runs matching ``filter_string`` (and, with ``key``, whose tag ``key`` is in ``keys``) and
    their child runs: a relaunch replaces a killed run of the same work instead of adding a second one (deleted runs
    are hidden from the UI and searches; ``mlflow gc`` removes them for good). Returns how many were deleted."""
    wanted = None if keys is None else {str(k) for k in keys}
    flt = f"attributes.status = 'KILLED' and {filter_string}" if filter_string else "attributes.status = 'KILLED'"
    runs = [r for r in _open_runs(tracker, [experiment_id], flt)
            if key is None or (wanted is not None and r.data.tags.get(key) in wanted)]
    deleted = 0
    for run in runs:
        children = {  # image runs are linked to their summary by tag; stores written before nest them
            child.info.run_id: child
            for link in (schema.EVALUATION_SUMMARY_RUN_ID, f"`{schema.PARENT_RUN_ID}`")
            for child in _open_runs(tracker, [experiment_id], f"tags.{link} = '{run.info.run_id}'")
        }
        for child in [*children.values(), run]:
            try:
                tracker.client.delete_run(child.info.run_id)
                deleted += 1
            except Exception:
                continue
    return deleted

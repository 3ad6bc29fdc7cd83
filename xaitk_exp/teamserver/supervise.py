"""Supervision of a team server's two children: is each alive, does it hold its port, what an earlier start left
running, and whether the port is free before anything starts."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

from xaitk_exp.teamserver.files import STATE_FILE, TeamServerError
from xaitk_exp.teamserver.postgres import Postgres, tail_file


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def read_state(root: Path) -> dict:
    """The pids and ports the server of folder ``root`` recorded ({} when there is no record)."""
    try:
        state = json.loads((root / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _is_process(pid: object, *words: str) -> bool:
    """True when ``pid`` is a live process whose command line holds every one of ``words`` (not a reused pid)."""
    if not isinstance(pid, int) or not _alive(pid):
        return False
    import psutil

    try:
        cmdline = " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return False
    return all(word in cmdline for word in words)


def _refuse_leftovers(root: Path, pg: Postgres) -> None:
    """Servers of an earlier start of this folder that still run (the wrapper was killed): one line naming them."""
    state = read_state(root)
    mlflow_pid = state.get("mlflow")
    mlflow_alive = _is_process(mlflow_pid, "mlflow", "server")
    if mlflow_alive and _alive(state.get("wrapper")) and state.get("wrapper") != os.getpid():
        raise TeamServerError(f"--dir={str(root)!r} is already served by pid {state['wrapper']} on port "
                              f"{state.get('port')}; stop it (kill {state['wrapper']}) or use another folder")
    left = []
    if mlflow_alive:
        left.append(f"mlflow server pid {mlflow_pid} on port {state.get('port')} (stop: kill -- -{mlflow_pid})")
    pg_pid = pg.running_pid()
    if pg_pid and _is_process(pg_pid, "postgres"):
        on_port = f" on port {state['postgres_port']}" if state.get("postgres_port") else ""
        as_postgres = ", as the postgres user" if os.geteuid() == 0 else ""
        left.append(f"PostgreSQL pid {pg_pid}{on_port} (stop: pg_ctl -D {pg.data} -m fast stop{as_postgres})")
    if left:
        raise TeamServerError(f"--dir={str(root)!r}: servers of an earlier start still run: {'; '.join(left)}")


def _refuse_taken_port(host: str, port: int) -> None:
    """One line when another process already listens on ``host:port`` (no credential is ever sent to it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            who = _listener(port)
            raise TeamServerError(f"--port={port} is taken{f' by {who}' if who else ''} on {host}: choose another "
                                  "--port, or stop that process") from None


def _listener(port: int) -> str:
    import psutil

    try:
        for conn in psutil.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return f"pid {conn.pid} ({psutil.Process(conn.pid).name()})"
    except psutil.Error:
        pass
    return ""


def listens(pid: int, port: int) -> bool:
    """True when process ``pid`` or one of its descendants listens on TCP ``port``."""
    import psutil

    try:
        parent = psutil.Process(pid)
        family = [parent, *parent.children(recursive=True)]
    except psutil.Error:
        return False
    for proc in family:
        try:
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in proc.net_connections("inet")):
                return True
        except psutil.Error:
            continue
    return False


def _check_alive(proc: subprocess.Popen, pg: Postgres, pg_pid: int | None, root: Path) -> None:
    if proc.poll() is not None:
        raise TeamServerError(f"mlflow server (pid {proc.pid}) exited with code {proc.returncode}; PostgreSQL is "
                              f"stopped too{tail_file(root / 'mlflow-server.log', 3)}")
    if not _alive(pg_pid):
        raise TeamServerError(f"PostgreSQL (pid {pg_pid}, port {pg.port}) is gone; mlflow server is stopped too"
                              f"{tail_file(pg.log, 3)}")

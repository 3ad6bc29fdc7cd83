"""A private team tracking server: PostgreSQL + ``mlflow server`` with proxied artifacts, on loopback.

Use it from Python (tests, benchmarks)::

    from xaitk_exp.teamserver import team_server

    with team_server(workers=4) as url:      # e.g. "http://127.0.0.1:40123"
        subprocess.run(["xaitk-exp", f"tracking.uri={url}"], check=True)

or by hand, until Ctrl-C (``--dir`` keeps the database and artifacts between starts)::

    python -m xaitk_exp.teamserver --workers 4 --port 5000 --dir ~/mlflow-team

What it does: ``initdb`` a PostgreSQL cluster in a folder (once), ``pg_ctl start`` it listening on 127.0.0.1 only,
create the ``mlflow`` database, start ``mlflow server --backend-store-uri postgresql://...`` (SQLAlchemy maps that
to psycopg 3) with ``--serve-artifacts --artifacts-destination <dir>/artifacts``, wait until ``/health`` answers,
yield the URL, and stop both on the way out, error or not. PostgreSQL refuses to run as root; as root, its commands
run as the ``postgres`` user. The database password is random per cluster and reaches ``mlflow server`` through
``PGPASSWORD``, never its command line.

Front ends: ``frontend="gunicorn"`` (Flask app under gunicorn, ``--gunicorn-opts``) answered a keep-alive request
in a few ms on a 2-core machine; ``frontend="uvicorn"`` (MLflow's default FastAPI app) several times slower.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from xaitk_exp.errors import XaitkExpError

PG_BINARIES = ("initdb", "pg_ctl", "postgres")
FRONTENDS = ("gunicorn", "uvicorn")
DB_USER, DB_NAME = "mlflow", "mlflow"
PG_RUN_AS = "postgres"  # the unprivileged user PostgreSQL runs as when we are root


class TeamServerError(XaitkExpError):
    """PostgreSQL or ``mlflow server`` could not be started; the message ends with the tail of its log."""


class ServerURL(str):
    """The tracking server's ``http://127.0.0.1:<port>`` (a plain ``str``), plus where its pieces live:
    ``backend_uri`` (``postgresql://mlflow@127.0.0.1:<port>/mlflow``, no password; the password is in
    ``workdir/pgpassword``), ``workdir`` and ``artifacts`` (the proxied artifact destination)."""

    backend_uri: str
    workdir: Path
    artifacts: Path


def postgres_bindir() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres`` (``$PG_BINDIR``, else ``PATH``), or None."""
    candidates = [os.environ.get("PG_BINDIR")] if os.environ.get("PG_BINDIR") else []
    found = shutil.which("pg_ctl")
    if found:
        candidates.append(str(Path(found).parent))
    for folder in candidates:
        if all(Path(folder, b).is_file() and os.access(Path(folder, b), os.X_OK) for b in PG_BINARIES):
            return Path(folder)
    return None


def postgres_missing_reason() -> str | None:
    """Why a private PostgreSQL cannot be started here (for ``pytest.skip``), or None when it can."""
    if postgres_bindir() is None:
        return f"PostgreSQL server binaries ({', '.join(PG_BINARIES)}) not found on PATH or in $PG_BINDIR"
    if os.geteuid() == 0 and not _user_exists(PG_RUN_AS):
        return f"running as root, and PostgreSQL refuses root: no {PG_RUN_AS!r} user to run it as"
    return None


def postgres_available() -> bool:
    """True when :func:`team_server` can start its own PostgreSQL here."""
    return postgres_missing_reason() is None


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def team_server(
    workers: int = 4,
    frontend: str = "gunicorn",
    port: int | None = None,
    workdir: str | Path | None = None,
    startup_timeout: float = 180.0,
) -> Iterator[ServerURL]:
    """Run PostgreSQL + ``mlflow server`` for the ``with`` block; yields the server's ``http://127.0.0.1:<port>``
    (a :class:`ServerURL`).

    ``workers``: server worker processes; ``frontend``: ``"gunicorn"`` (fastest measured) or ``"uvicorn"``;
    ``port``: default a free one; ``workdir``: where the cluster, artifacts and logs live (default a temporary
    folder, removed afterwards; an existing one is reused as is). Raises :class:`TeamServerError` when either
    server does not come up within ``startup_timeout`` seconds.
    """
    if frontend not in FRONTENDS:
        raise ValueError(f"frontend={frontend!r} is invalid: one of {', '.join(FRONTENDS)}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r} is invalid: a positive integer")
    reason = postgres_missing_reason()
    if reason:
        raise TeamServerError(reason)
    with ExitStack() as stack:
        if workdir is None:
            root = Path(tempfile.mkdtemp(prefix="xaitk-team-"))
            stack.callback(shutil.rmtree, root, ignore_errors=True)
        else:
            root = Path(workdir).expanduser().resolve()
            root.mkdir(parents=True, exist_ok=True)
        pg = _Postgres(root, startup_timeout)
        stack.callback(pg.stop)
        pg.start()
        url = ServerURL(_start_mlflow(stack, root, pg, workers, frontend, port or free_port(), startup_timeout))
        url.backend_uri, url.workdir, url.artifacts = pg.uri, root, root / "artifacts"
        yield url


# ----- PostgreSQL ----------------------------------------------------------------------------------------------
class _Postgres:
    """One PostgreSQL cluster under ``root/pgdata``, socket and log in ``root``, listening on 127.0.0.1 only."""

    def __init__(self, root: Path, timeout: float) -> None:
        self.root, self.timeout = root, timeout
        self.data, self.log = root / "pgdata", root / "postgres.log"
        self.bindir = postgres_bindir()
        self.port = 0
        self.started = False
        pw_file = root / "pgpassword"
        if not pw_file.exists():
            pw_file.write_text(secrets.token_urlsafe(24))
            pw_file.chmod(0o600)
        self.password = pw_file.read_text().strip()

    @property
    def uri(self) -> str:
        """The backend store URI, without the password (``mlflow server`` gets it through ``PGPASSWORD``)."""
        return f"postgresql://{DB_USER}@127.0.0.1:{self.port}/{DB_NAME}"

    def start(self) -> None:
        self._hand_over(self.root)
        if not (self.data / "PG_VERSION").exists():
            pw = self.root / ".initdb-pw"
            pw.write_text(self.password + "\n")
            self._hand_over(pw)
            try:
                self._pg("initdb", "-D", str(self.data), "-U", DB_USER, "--auth=scram-sha-256",
                         f"--pwfile={pw}", "-E", "UTF8", "--no-sync")
            finally:
                pw.unlink(missing_ok=True)
        self.port = free_port()
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off"
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w",
                 "-t", str(int(self.timeout)), "start")
        self.started = True
        self._create_database()

    def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        try:
            self._pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
        except TeamServerError:
            pid_file = self.data / "postmaster.pid"
            if pid_file.exists():  # last resort: the postmaster's pid is the file's first line
                try:
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
                except (OSError, ValueError):
                    pass

    def _create_database(self) -> None:
        import psycopg

        conninfo = dict(host="127.0.0.1", port=self.port, user=DB_USER, password=self.password, dbname="postgres")
        with psycopg.connect(**conninfo, autocommit=True, connect_timeout=30) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone()
            if not exists:
                conn.execute(f"CREATE DATABASE {DB_NAME}")

    def _pg(self, binary: str, *args: str) -> None:
        cmd = [str(self.bindir / binary), *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", PG_RUN_AS, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout + 30, check=False,
                              cwd=self.root)
        if proc.returncode != 0:
            raise TeamServerError(
                f"{binary} failed (exit {proc.returncode}): {_tail(proc.stderr + proc.stdout)}{_tail_file(self.log)}"
            )

    @staticmethod
    def _hand_over(path: Path) -> None:
        """As root, give ``path`` to the ``postgres`` user (PostgreSQL will not run as root)."""
        if os.geteuid() == 0:
            import pwd

            entry = pwd.getpwnam(PG_RUN_AS)
            os.chown(path, entry.pw_uid, entry.pw_gid)


# ----- mlflow server -------------------------------------------------------------------------------------------
def _start_mlflow(
    stack: ExitStack, root: Path, pg: _Postgres, workers: int, frontend: str, port: int, timeout: float
) -> str:
    artifacts = root / "artifacts"
    artifacts.mkdir(exist_ok=True)
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", pg.uri,
        "--serve-artifacts", "--artifacts-destination", str(artifacts),
        "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers),
    ]
    if frontend == "gunicorn":
        cmd += ["--gunicorn-opts", f"--workers {workers} --timeout 120"]
    env = {
        **os.environ,
        "PGPASSWORD": pg.password,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no background job runner processes
        "PYTHONWARNINGS": "ignore",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    log_path = root / "mlflow-server.log"
    log = open(log_path, "ab")  # noqa: SIM115 - closed by the stack
    stack.callback(log.close)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True)
    stack.callback(_stop_group, proc)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise TeamServerError(f"mlflow server exited with {proc.returncode} while starting:{_tail_file(log_path)}")
        if _healthy(url):
            return url
        if time.monotonic() > deadline:
            raise TeamServerError(f"mlflow server did not answer {url}/health within {timeout:.0f} s:"
                                  f"{_tail_file(log_path)}")
        time.sleep(0.5)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop_group(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM ``mlflow server`` and its front-end workers (one process group), SIGKILL after ``grace`` s."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:  # workers may outlive the parent; the group id is the parent's pid
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait(10)


def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())


def _tail_file(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return f" [{path.name}: {_tail(text, lines)}]" if text.strip() else ""


# ----- by hand -------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xaitk_exp.teamserver",
        description="Run a private PostgreSQL + mlflow server (proxied artifacts) on 127.0.0.1 until Ctrl-C.",
    )
    parser.add_argument("--workers", type=int, default=4, help="server worker processes (default 4)")
    parser.add_argument("--frontend", choices=FRONTENDS, default="gunicorn", help="default gunicorn (fastest)")
    parser.add_argument("--port", type=int, default=5000, help="port of the tracking server (default 5000)")
    parser.add_argument("--dir", default=None, help="keep the database and artifacts here (default: a temp folder)")
    args = parser.parse_args(argv)
    stopping: list[int] = []

    def _stop(signum: int, _frame: object) -> None:
        stopping.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        with team_server(workers=args.workers, frontend=args.frontend, port=args.port, workdir=args.dir) as url:
            print(f"tracking server: {url}   (PostgreSQL backend, artifacts proxied; Ctrl-C stops both)")
            print(f"use it: xaitk-exp tracking.uri={url}    or    export MLFLOW_TRACKING_URI={url}", flush=True)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 0
    except (TeamServerError, ValueError) as exc:
        print(f"xaitk-exp teamserver: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

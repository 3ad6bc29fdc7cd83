"""The PostgreSQL half of a team server: a cluster in a folder, run as an unprivileged user when we are root,
listening on loopback only, with a random password that reaches mlflow only through ``PGPASSWORD``."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from xaitk_exp.errors import XaitkExpError

DB_USER, DB_NAME, AUTH_DB_NAME = "mlflow", "mlflow", "mlflow_auth"


class TeamServerError(XaitkExpError):
    """PostgreSQL or ``mlflow server`` could not be started; the message ends with the tail of its log."""


PG_BINARIES = ("initdb", "pg_ctl", "postgres")


PG_RUN_AS = "postgres"  # the unprivileged user PostgreSQL runs as when we are root


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
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


# ----- PostgreSQL ----------------------------------------------------------------------------------------------
class Postgres:
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
            for name in (DB_NAME, AUTH_DB_NAME):  # tracking data, and MLflow's users and permissions
                exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
                if not exists:
                    conn.execute(f"CREATE DATABASE {name}")

    def _pg(self, binary: str, *args: str) -> None:
        cmd = [str(self.bindir / binary), *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", PG_RUN_AS, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout + 30, check=False,
                              cwd=self.root)
        if proc.returncode != 0:
            raise TeamServerError(
                f"{binary} failed (exit {proc.returncode}): {tail_text(proc.stderr + proc.stdout)}{tail_file(self.log)}"
            )

    @staticmethod
    def _hand_over(path: Path) -> None:
        """As root, give ``path`` to the ``postgres`` user (PostgreSQL will not run as root)."""
        if os.geteuid() == 0:
            import pwd

            entry = pwd.getpwnam(PG_RUN_AS)
            os.chown(path, entry.pw_uid, entry.pw_gid)


def stop_group(proc: subprocess.Popen, grace: float = 20.0) -> None:
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


def tail_text(text: str, lines: int = 5) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())


def tail_file(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return f" [{path.name}: {tail_text(text, lines)}]" if text.strip() else ""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

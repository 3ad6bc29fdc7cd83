"""The PostgreSQL half of a team server: a cluster in ``<dir>/pgdata``, listening on 127.0.0.1 only.

Two roles: a bootstrap owner (``initdb -U``, a superuser whose password only this command knows, kept in
``pgowner-password``) creates the databases; MLflow connects as ``mlflow``, a plain login role (no superuser, no
CREATEDB, no CREATEROLE) that owns its two databases and nothing else. Started as root, PostgreSQL runs as the
``postgres`` account, which owns the data folder and nothing else in the server folder."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

from xaitk_exp.teamserver.files import TeamServerError, create_secret, own_subfolder, read_secret, write_secret

DB_USER, DB_NAME, AUTH_DB_NAME = "mlflow", "mlflow", "mlflow_auth"
OWNER_USER = "xaitk_owner"  # the cluster's bootstrap superuser; MLflow never gets its password
PASSWORD_FILE, OWNER_PASSWORD_FILE = "pgpassword", "pgowner-password"

__all__ = ["TeamServerError", "Postgres", "free_port", "stop_group", "tail_file", "postgres_missing_reason"]

PG_BINARIES = ("initdb", "pg_ctl", "postgres")


PG_RUN_AS = "postgres"  # the unprivileged user PostgreSQL runs as when we are root


def postgres_bindir() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres`` (``$PG_BINDIR``, else ``PATH``), or None."""
    candidates = [os.environ["PG_BINDIR"]] if os.environ.get("PG_BINDIR") else []
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
    if os.geteuid() == 0:
        import sysconfig

        private = [p for p in (sysconfig.get_paths()["purelib"], os.path.dirname(os.path.dirname(__file__)))
                   if not _passable(p)]
        if private:  # mlflow server runs as an unprivileged account, which must read this environment's packages
            return f"the server's account could not read this environment's packages: {private[0]} is private"
    return None


def _passable(path: str) -> bool:
    """True when every folder from ``/`` down to ``path`` lets other accounts through."""
    import stat

    current = os.path.realpath(path)
    while True:
        if not os.stat(current).st_mode & stat.S_IXOTH:
            return False
        parent = os.path.dirname(current)
        if parent == current:
            return True
        current = parent


def postgres_available() -> bool:
    """True when :func:`team_server` can start its own PostgreSQL here."""
    return postgres_missing_reason() is None


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _new_secret(path: Path) -> str:
    if not os.path.lexists(path):
        write_secret(path, secrets.token_urlsafe(24))
    return read_secret(path)


# ----- PostgreSQL ----------------------------------------------------------------------------------------------
class Postgres:
    """One PostgreSQL cluster under ``root/pgdata`` (its socket and log there too), listening on 127.0.0.1 only."""

    def __init__(self, root: Path, timeout: float) -> None:
        self.root, self.timeout = root, timeout
        self.data = root / "pgdata"
        self.log = self.data / "postgres.log"
        self.bindir = postgres_bindir()
        self.port = 0
        self.started = False
        fresh = not (self.data / "PG_VERSION").exists()
        if not fresh and not os.path.lexists(root / OWNER_PASSWORD_FILE):
            raise TeamServerError(
                f"--dir={str(root)!r}: its database was made by an older version, whose MLflow role is a superuser; "
                "start a new folder (or dump the 'mlflow' and 'mlflow_auth' databases and restore them into one)")
        self.password = _new_secret(root / PASSWORD_FILE)  # the mlflow role's
        self.owner_password = _new_secret(root / OWNER_PASSWORD_FILE)

    @property
    def uri(self) -> str:
        """The backend store URI, without the password (``mlflow server`` gets it through ``PGPASSWORD``)."""
        return f"postgresql://{DB_USER}@127.0.0.1:{self.port}/{DB_NAME}"

    def running_pid(self) -> int | None:
        """The postmaster's pid from ``postmaster.pid`` when that process is alive, else None."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _alive(pid) else None

    def start(self) -> None:
        runner = pwd.getpwnam(PG_RUN_AS) if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
        if not (self.data / "PG_VERSION").exists():
            own_subfolder(self.data, runner.pw_uid, runner.pw_gid)
            pw = self.root / f".initdb-pw-{secrets.token_hex(6)}"
            create_secret(pw, self.owner_password, owner=(runner.pw_uid, runner.pw_gid))
            try:
                self._pg("initdb", "-D", str(self.data), "-U", OWNER_USER, "--auth=scram-sha-256",
                         f"--pwfile={pw}", "-E", "UTF8", "--no-sync")
            finally:
                pw.unlink(missing_ok=True)
        else:
            own_subfolder(self.data, runner.pw_uid, runner.pw_gid)
        self.port = free_port()
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.data} -c fsync=off"
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w",
                 "-t", str(int(self.timeout)), "start")
        self.started = True
        self._create_databases()

    def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        try:
            self._pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
        except TeamServerError:
            pid = self.running_pid()
            if pid:  # last resort
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    def _create_databases(self) -> None:
        """As the owner: the ``mlflow`` login role (no superuser), its two databases, and nothing else open to it."""
        import psycopg
        from psycopg import sql

        conninfo: dict[str, Any] = dict(host="127.0.0.1", port=self.port, user=OWNER_USER, password=self.owner_password,
                        dbname="postgres")
        with psycopg.connect(**conninfo, autocommit=True, connect_timeout=30) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (DB_USER,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(sql.SQL("{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS "
                                 "PASSWORD {}").format(sql.SQL(verb), sql.Identifier(DB_USER),
                                                       sql.Literal(self.password)))
            for name in (DB_NAME, AUTH_DB_NAME):  # tracking data, and MLflow's users and permissions
                if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                    conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name),
                                                                              sql.Identifier(DB_USER)))
                conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name)))
            for name in ("postgres", "template1"):  # MLflow's role reaches its own two databases only
                conn.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(
                    sql.Identifier(name)))

    def has_auth_user(self, name: str) -> bool:
        """True when MLflow's auth database already holds user ``name`` (MLflow then needs no admin password)."""
        import psycopg

        conninfo: dict[str, Any] = dict(host="127.0.0.1", port=self.port, user=OWNER_USER, password=self.owner_password,
                        dbname=AUTH_DB_NAME)
        with psycopg.connect(**conninfo, autocommit=True, connect_timeout=30) as conn:
            row = conn.execute("SELECT to_regclass('public.users')").fetchone()
            if row is None or not row[0]:
                return False
            return conn.execute("SELECT 1 FROM users WHERE username = %s", (name,)).fetchone() is not None

    def _pg(self, binary: str, *args: str) -> None:
        if self.bindir is None:
            raise TeamServerError(str(postgres_missing_reason()))
        cmd = [str(self.bindir / binary), *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", PG_RUN_AS, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout + 30, check=False,
                              cwd=self.data if self.data.is_dir() else "/")
        if proc.returncode != 0:
            raise TeamServerError(
                f"{binary} failed (exit {proc.returncode}): {tail_text(proc.stderr + proc.stdout)}{tail_file(self.log)}"
            )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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

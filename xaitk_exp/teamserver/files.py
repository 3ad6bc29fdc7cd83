"""Secret files and folders of a team server, handled so that no other account reads or redirects them.

A secret file is created mode 0600 from its first instant (``os.open`` with ``O_CREAT | O_EXCL``), never through a
symbolic link (``O_NOFOLLOW``), and read only when it is a regular file owned by this account and private to it.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from xaitk_exp.errors import XaitkExpError

#: the files of a team server's folder that the modules of this package share
ADMIN_USER = "admin"
ADMIN_PASSWORD_FILE = "admin-password"
LOOPBACK_HOSTS = "localhost,localhost:*,127.0.0.1,127.0.0.1:*"  # Host headers always answered
URL_FILE = "url"  # the running server's URL, for the ``user`` commands given only ``--dir``
STATE_FILE = "server.json"  # pids and ports of the running servers: the ``user`` commands and leftovers check them


class TeamServerError(XaitkExpError):
    """PostgreSQL or ``mlflow server`` could not be started, or a team-server file or command is refused."""


def write_secret(path: Path, value: str) -> None:
    """Write ``value`` to ``path``, readable by its owner only from the start; refuse a symbolic link or a file
    another account owns. The new content replaces the old one atomically (a fresh file renamed over it)."""
    _refuse_foreign(path, must_exist=False)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(value + "\n")
        os.replace(tmp, path)  # rename does not follow a link at ``path``; the folder is ours alone
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def create_secret(path: Path, value: str, owner: tuple[int, int] | None = None) -> None:
    """Create ``path`` (it must not exist) mode 0600 holding ``value``; ``owner`` (uid, gid) hands it to the account
    that must read it (PostgreSQL's ``initdb --pwfile``)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        if owner is not None:
            os.fchown(f.fileno(), *owner)
        f.write(value + "\n")


def read_secret(path: Path) -> str:
    """The first line of the secret file ``path``; :class:`TeamServerError` unless it is a regular file (not a
    link), owned by this account and readable by no one else."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        why = "a symbolic link" if os.path.islink(path) else exc.strerror
        raise TeamServerError(f"{path}: refused ({why}); a secret file must be a plain file of this account") from None
    with os.fdopen(fd) as f:
        info = os.fstat(f.fileno())
        _check_private(path, info)
        return f.read().strip()


def _check_private(path: Path, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise TeamServerError(f"{path}: refused (not a regular file); a secret file must be a plain file")
    if info.st_uid != os.geteuid():
        raise TeamServerError(f"{path}: refused (owned by uid {info.st_uid}, not by this account, uid "
                              f"{os.geteuid()}); run the command as the account that started the server")
    if info.st_mode & 0o077:
        raise TeamServerError(f"{path}: refused (mode {stat.S_IMODE(info.st_mode):04o}: other accounts may read it); "
                              f"make it private with: chmod 600 {path}")


def _refuse_foreign(path: Path, must_exist: bool) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        if must_exist:
            raise
        return
    if stat.S_ISLNK(info.st_mode):
        raise TeamServerError(f"{path}: refused (a symbolic link); a secret file is never written through a link")
    _check_private(path, info)


def check_folder(folder: Path) -> None:
    """Refuse a server folder that is a link, owned by another account, or writable by anyone but its owner."""
    info = os.lstat(folder)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise TeamServerError(f"--dir={str(folder)!r}: refused (not a plain folder)")
    if info.st_uid != os.geteuid():
        raise TeamServerError(f"--dir={str(folder)!r}: refused (owned by uid {info.st_uid}, not by this account, uid "
                              f"{os.geteuid()}): the server folder must belong to the account that starts the server")
    if info.st_mode & 0o022:
        raise TeamServerError(f"--dir={str(folder)!r}: refused (mode {stat.S_IMODE(info.st_mode):04o}: other accounts "
                              f"may write in it); fix it with: chmod go-w {folder}")


def own_subfolder(path: Path, uid: int, gid: int, mode: int = 0o700) -> None:
    """Create ``path`` (a plain folder, not a link) owned by ``uid``/``gid`` with ``mode``; an existing one owned by
    another account is handed over, contents included (files written before this ownership rule)."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise TeamServerError(f"{path}: refused (not a plain folder)")
    if (info.st_uid, info.st_gid) != (uid, gid):
        for dirpath, dirnames, filenames in os.walk(path):  # walk does not follow links
            for name in dirnames + filenames:
                os.lchown(os.path.join(dirpath, name), uid, gid)
        os.lchown(path, uid, gid)
    os.chmod(path, mode)  # a plain folder (checked above) in a folder no other account writes

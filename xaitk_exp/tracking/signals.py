"""SIGTERM as an exception, so that an open run can be closed KILLED instead of the process vanishing."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from xaitk_exp.errors import RunKilled


def _raise_killed(signum: int, frame: Any) -> None:
    raise RunKilled(f"received signal {signum}")


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """SIGTERM raises :class:`RunKilled` inside the block (main thread only), so that work in other processes that
    the block waits for can be stopped and its runs closed instead of the process vanishing."""
    previous = install_sigterm()
    try:
        yield
    finally:
        restore_sigterm(previous)


def install_sigterm() -> Any:

    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        return signal.signal(signal.SIGTERM, _raise_killed)
    except ValueError:
        return None


def restore_sigterm(previous: Any) -> None:

    if previous is None or threading.current_thread() is not threading.main_thread():
        return
    try:
        signal.signal(signal.SIGTERM, previous)
    except ValueError:
        pass

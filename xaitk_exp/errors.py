"""Named exceptions. Each message is one line a user can act on."""

from __future__ import annotations

from typing import Any


class XaitkExpError(Exception):
    """Base class for errors caused by user input or environment, reported as one line."""


class ConfigError(XaitkExpError):
    """A configuration value is invalid: names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str, hint: str = "") -> None:
        self.key, self.value, self.allowed, self.hint = key, value, allowed, hint
        msg = f"{key}={value!r} is invalid: {allowed}"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)

    def __reduce__(self) -> tuple:  # picklable: a failed sweep job hands its error back to the launcher process
        return (type(self), (self.key, self.value, self.allowed, self.hint))


class QueryError(XaitkExpError):
    """A saliency query is malformed or matches nothing."""


class DataError(XaitkExpError):
    """A dataset cannot be loaded or does not fit the model."""


class TrackingError(XaitkExpError):
    """The tracking store is unreachable, or a referenced run is missing or unusable."""


class UnsafeConfigError(XaitkExpError):
    """A stored config or model names a class outside the allow-list."""


class WorkerDied(XaitkExpError):
    """A worker process died (a crash, the OS's OOM killer, ``os._exit``) or the executor running the workers
    stopped: the jobs it held can never finish."""


class RunKilled(BaseException):
    """Raised from a SIGTERM handler so that the open run can be marked KILLED."""

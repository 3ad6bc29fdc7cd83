"""Per-job records of a sweep: ``sweep_job.json`` in each job's folder."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Any

SWEEP_KEY = "sweep_run_id"
JOB_RECORD = "sweep_job.json"
JOB_OUTPUT = "output.txt"  # a job's own console lines; the sweep prints one line per job
QUIET_KEY = "progress"  # set false in every job the user did not set it for: parallel progress bars interleave


def write_record(folder: Path, record: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{JOB_RECORD}.tmp"
    tmp.write_text(json.dumps(record, indent=2, default=str))
    tmp.replace(folder / JOB_RECORD)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_job_records(sweep_dir: Path, sweep_run_id: str | None = None) -> list[dict[str, Any]]:
    """The ``sweep_job.json`` of every job under ``sweep_dir`` (of sweep ``sweep_run_id`` only: two sweeps started
    in the same second share a folder), by job number."""
    records = [r for p in sweep_dir.rglob(JOB_RECORD) if (r := read_json(p)) is not None]
    records = [r for r in records if sweep_run_id is None or r.get(SWEEP_KEY) == sweep_run_id]
    return sorted(records, key=lambda r: int(r.get("job", 0)))


def job_value(job_return: Any) -> Any:
    """What a finished job returned, or the exception a failed one raised (Hydra's public ``return_value`` raises
    it again for a failed job, after printing "Error executing job with overrides": read quietly where it can)."""
    import contextlib
    import io

    from hydra.core.utils import JobStatus

    if job_return.status == JobStatus.FAILED and isinstance(getattr(job_return, "_return_value", None), BaseException):
        return job_return._return_value
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return job_return.return_value
    except Exception as exc:  # the job's own error
        return exc


def end_leaked_fluent_runs() -> None:
    """The joblib launcher reuses worker processes: close any fluent run a previous job left on this thread."""
    mlflow = sys.modules.get("mlflow")
    if mlflow is None:
        return
    while mlflow.active_run() is not None:
        mlflow.end_run(status="KILLED")


@contextmanager
def job_output(folder: Path) -> Iterator[None]:
    """This process's console lines into ``folder``'s :data:`JOB_OUTPUT` for the time of the block."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / JOB_OUTPUT, "a", buffering=1) as fh, redirect_stdout(fh):
        yield

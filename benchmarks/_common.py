"""Helpers shared by the benchmark scripts: composed configs, fresh stores, interleaved timing, tables.

The machine these run on is shared and noisy, so every script runs its compared variants side by side: each repeat
runs every variant once, in an order that rotates between repeats, and the tables report medians and ratios.
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def quiet() -> None:
    """Silence MLflow's INFO lines and third-party warnings, so the tables stay readable."""
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")


def compose(uri: str, *overrides: str) -> Any:
    """The shipped config composed with ``overrides``, pointed at ``uri``, progress bars off."""
    from xaitk_exp.app import compose_config

    return compose_config([f"tracking.uri={uri}", "progress=false", *overrides])


def sqlite_uri(folder: str | Path) -> str:
    return f"sqlite:///{Path(folder) / 'mlflow.db'}"


class TrainedStore:
    """A SQLite store with one train run (the seed MLP on digits), built once, untimed.

    :meth:`fresh` copies its database into a new folder, so each timed variant writes to its own store that has
    already run its schema migrations (about 1.5 s on a brand-new file) and holds the model to evaluate.
    """

    def __init__(self, root: Path, *overrides: str) -> None:
        from xaitk_exp.app import run

        self.root = root
        self.folder = root / "template"
        self.folder.mkdir(parents=True)
        self.overrides = overrides
        ctx = run(compose(sqlite_uri(self.folder), "stage=train", "logging=low", *overrides), [], self.folder)
        self.model, self.train_run_id, self.train_exp_id = ctx.model, ctx.train_run_id, ctx.train_exp_id
        self.split = ctx.split
        self._n = 0

    def fresh(self, label: str, journal: str | None = None) -> Path:
        """A copy of the template store in a new folder; ``journal`` sets its SQLite journal mode (``delete``:
        what ``sqlite:///mlflow.db`` gets when MLflow alone creates it; ``wal``)."""
        self._n += 1
        folder = self.root / f"{self._n:03d}-{label}"
        folder.mkdir()
        copy_store(self.folder / "mlflow.db", folder / "mlflow.db")
        if journal is not None:
            set_journal(folder / "mlflow.db", journal)
        return folder

    def context(self, folder: Path, level: str, *overrides: str) -> Any:
        """A stage context on the store in ``folder`` with the trained model already in memory."""
        from xaitk_exp.stages import Context
        from xaitk_exp.tracking.factory import make_tracker
        from xaitk_exp.tracking.stores import resolve_tracking

        cfg = compose(sqlite_uri(folder), f"logging={level}", *self.overrides, *overrides)
        uri, artifact_root = resolve_tracking(cfg)
        ctx = Context(cfg=cfg, tracker=make_tracker(level, uri, artifact_root), output_dir=folder)
        ctx.model, ctx.train_run_id, ctx.train_exp_id = self.model, self.train_run_id, self.train_exp_id
        ctx.split = self.split  # cached_property: reuse the loaded data
        return ctx


def copy_store(src: Path, dst: Path) -> None:
    """A consistent copy of a SQLite store that may be open in WAL mode: SQLite's backup API, which also reads
    what still sits in ``<db>-wal`` (a plain file copy would miss it)."""
    import sqlite3

    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    a.close()
    b.close()


def set_journal(db: Path, journal: str) -> None:
    import sqlite3

    con = sqlite3.connect(db)
    mode = con.execute(f"PRAGMA journal_mode={journal.upper()}").fetchone()[0]
    con.close()
    if mode != journal:
        raise RuntimeError(f"{db}: journal mode {mode}, wanted {journal}")


class StatementCounter:
    """Counts SQL statements and commits sent to every SQLAlchemy engine (the store traffic a variant causes):
    unlike seconds, these counts do not depend on how busy the machine is."""

    def __init__(self) -> None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        self.statements = self.commits = 0
        event.listen(Engine, "before_cursor_execute", self._statement)
        event.listen(Engine, "commit", self._commit)

    def _statement(self, *args: Any) -> None:
        self.statements += 1

    def _commit(self, *args: Any) -> None:
        self.commits += 1

    def snapshot(self) -> tuple[int, int]:
        return self.statements, self.commits


def interleave(
    variants: dict[str, Callable[[], float | None]], repeats: int, warmup: bool = False, log: bool = True
) -> dict[str, list[float]]:
    """Run every variant once per repeat, rotating the order; a variant returns its own time or None (timed
    here around the call). Returns the seconds of every repeat per variant."""
    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    if warmup:
        for n in names:
            variants[n]()
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            t0 = time.perf_counter()
            got = variants[n]()
            dt = got if got is not None else time.perf_counter() - t0
            times[n].append(dt)
            if log:
                print(f"  repeat {r + 1}/{repeats} {n:<32} {dt:8.3f} s", file=sys.stderr, flush=True)
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (it reads fine in a terminal too)."""
    cells = [[str(c) for c in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells[1:]]
    return "\n".join(lines)


def _fmt(c: Any) -> str:
    if isinstance(c, float):
        return f"{c:.3f}" if abs(c) < 10 else f"{c:.1f}"
    return str(c)


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def temp_root(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"xaitk-bench-{prefix}-"))


def machine() -> str:
    import platform

    return f"Python {platform.python_version()}, {os.cpu_count()} cores, {platform.machine()}"


def timed_saliency(ctx: Any, images: int) -> float:
    """Seconds the saliency stage takes on ``ctx``; refuses a run that explained another number of images."""
    import time

    from xaitk_exp.stages.saliency.stage import run_saliency

    t0 = time.perf_counter()
    ids = run_saliency(ctx)
    dt = time.perf_counter() - t0
    if len(ids) != images:
        raise RuntimeError(f"the stage explained {len(ids)} images, expected {images}")
    return dt


def postgres_ready() -> bool:
    """True when PostgreSQL's server binaries are here; else says why the benchmark is skipped."""
    from xaitk_exp.teamserver import postgres_missing_reason

    reason = postgres_missing_reason()
    if reason:
        print(f"skipped: {reason}")
    return reason is None

"""Benchmark 6: benchmark 1 against a team server (``mlflow server`` on loopback, PostgreSQL behind it).

    python benchmarks/bench_server.py                  # 100 images, 3 repeats, both front ends, about 5-8 minutes
    python benchmarks/bench_server.py --frontends gunicorn --images 200

For each front end (``uvicorn``, MLflow's default FastAPI app, and ``gunicorn``, the Flask app, each with
``--workers``), :func:`xaitk_exp.teamserver.team_server` starts PostgreSQL + ``mlflow server`` in a temporary
folder, a model is trained once (untimed), then the variants of benchmark 1 run side by side, each in its own new
experiment (the stage variants in the stage's own experiment, with ``force=true``):

- ``stage-high`` / ``stage-mid`` / ``stage-low``: the evaluation stage; the low level writes the per-image runs with a
  few threads at once (``xaitk_exp.tracking.low.PARALLEL_WORKERS``), the fluent levels one after another;
- ``notebook``: fluent ``start_run``, one ``log_metric`` per metric, ``set_tags``, per image;
- ``floor``: ``create_run`` + one ``log_batch`` + ``set_terminated`` per image, one after another.

Target: the evaluation stage against the server at least 8x faster than the notebook style.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import compose, interleave, machine, median, postgres_ready, quiet, table, verdict  # noqa: E402

from xaitk_exp.schema import LEVELS  # noqa: E402


class ServerStore:
    """The trained model on a tracking server, and stage contexts against it."""

    def __init__(self, url: str) -> None:
        from xaitk_exp.app import run

        self.url = url
        ctx = run(compose(url, "stage=train", "logging=low", "force=true"), [], ".")
        self.model, self.train_run_id, self.train_exp_id = ctx.model, ctx.train_run_id, ctx.train_exp_id
        self.split = ctx.split

    def context(self, level: str, *overrides: str):
        from xaitk_exp.stages import Context
        from xaitk_exp.tracking.factory import make_tracker

        cfg = compose(self.url, f"logging={level}", *overrides)
        ctx = Context(cfg=cfg, tracker=make_tracker(level, self.url, None), output_dir=Path("."))
        ctx.model, ctx.train_run_id, ctx.train_exp_id = self.model, self.train_run_id, self.train_exp_id
        ctx.split = self.split
        return ctx


def run_frontend(frontend: str, workers: int, images: int, repeats: int) -> dict[str, list[float]]:
    import bench_logging as bl

    from xaitk_exp.stages.evaluation import run_evaluation
    from xaitk_exp.teamserver import team_server

    print(f"starting PostgreSQL + mlflow server ({frontend}, {workers} workers) ...", file=sys.stderr, flush=True)
    with team_server(workers=workers, frontend=frontend) as url:
        store = ServerStore(url)
        records = bl.image_records(store, images)
        counter = [0]

        def stage(level: str) -> float:
            ctx = store.context(level, "stage=evaluation", "evaluation.split=train", f"evaluation.num_images={images}",
                                "force=true")
            ctx.tracker.experiment(ctx.experiment_name("Evaluation"))
            t0 = time.perf_counter()
            run_evaluation(ctx)
            return time.perf_counter() - t0

        def baseline(fn, name: str) -> float:
            counter[0] += 1  # a new experiment per call, as each SQLite variant gets a new store
            return fn(url, records, f"{name} - Evaluation {frontend} #{counter[0]}")

        variants = {f"stage-{lv}": (lambda lv=lv: stage(lv)) for lv in LEVELS}
        variants["notebook"] = lambda: baseline(bl.notebook, "Notebook")
        variants["floor"] = lambda: baseline(bl.floor, "Floor")
        return interleave(variants, repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=4, help="server worker processes")
    ap.add_argument("--frontends", nargs="+", default=["uvicorn", "gunicorn"], choices=["uvicorn", "gunicorn"])
    args = ap.parse_args()
    quiet()
    if not postgres_ready():
        return
    n = args.images
    all_rows, verdicts, best = [], [], {}
    for frontend in args.frontends:
        times = run_frontend(frontend, args.workers, n, args.repeats)
        med = {k: median(v) for k, v in times.items()}
        for k in times:
            all_rows.append([f"{frontend} ({args.workers} workers)", k, med[k], 1000 * med[k] / n,
                             med["notebook"] / med[k], med[k] / med["floor"]])
        stages = {lv: med[f"stage-{lv}"] for lv in LEVELS}
        fastest = min(stages, key=stages.get)
        best[frontend] = stages[fastest]
        ratio = med["notebook"] / stages[fastest]
        verdicts.append([f"{frontend}: fastest level ({fastest}) >= 8x faster than notebook", f"{ratio:.2f}x",
                         verdict(ratio >= 8)])
    print(f"\n## Per-image evaluation logging against mlflow server + PostgreSQL: {n} images, {args.repeats} repeats "
          f"({machine()})\n")
    print(table(["server", "variant", "median s", "ms / image", "notebook / this", "this / floor"], all_rows))
    print()
    print(table(["target", "measured", "status"], verdicts))
    if len(best) > 1:
        winner = min(best, key=best.get)
        print(f"\nfastest setup: {winner} ({1000 * best[winner] / n:.1f} ms per image for the fastest level)")


if __name__ == "__main__":
    main()

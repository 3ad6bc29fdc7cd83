"""Benchmark: the team server at scale. 5,000 and 50,000 evaluation image runs in a PostgreSQL-backed ``mlflow
server`` on loopback: the seed's query latency and the time the UI's runs table takes to show its first rows.

    python benchmarks/bench_team_scale.py                        # 5,000 then 50,000 runs, about 5-10 minutes here
    python benchmarks/bench_team_scale.py --sizes 5000 --repeats 5

How the store is filled (documented shortcut): :func:`xaitk_exp.teamserver.team_server` starts PostgreSQL and
``mlflow server`` (gunicorn, ``--workers``) in a temporary folder; the train stage and a real evaluation of the
digits test split (``logging=low``, every image) run through the server, so the summary and its image runs are
exactly what the stage writes. Those image runs are then cloned in SQL, straight in PostgreSQL (one ``INSERT ...
SELECT`` per MLflow table: ``runs``, ``tags``, ``metrics``, ``latest_metrics``, ``params``), until the experiment
holds ``size`` image runs: each clone gets a new run id, its own ``Image_id`` and run name (``ImageID-<k>_conf``),
a start time of its own, and the tags and metrics of the real run it copies (so the seed query's selectivity is the
real one: image ``k`` copies real image ``k mod n``). Filling through the REST API would take about 45 ms a run
(REFERENCE.md section 4: 40 minutes for 50,000); the clones are what a long evaluation would have written. Then
``ANALYZE``.

Measured through the server, as a user meets it:

- the seed notebook's query (``metrics.Predicted_class_conf >= 0.9 and tags.Predicted_class = '4'``, best first,
  the first 100 runs) and the saliency stage's own filter (the same plus the evaluation's summary link and
  ``Run_type = 'image'``, first run only): ``MlflowClient.search_runs``, median of ``--repeats``;
- the UI: a fresh headless Chromium (``tests/cdp.py``) opens ``http://localhost:<port>/#/experiments/<id>/runs``
  (the runs table, no filter) and the seed filter pre-applied (``?searchFilter=``); the time from navigation to the
  first ``ImageID-`` row on the page, median of ``--repeats`` (browser start-up not counted).

Every process started here (PostgreSQL, ``mlflow server``, Chromium) is stopped before the script ends.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
import urllib.parse
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))  # the DevTools helper the browser tests use

from _common import compose, machine, median, postgres_ready, quiet, table  # noqa: E402

SEED_FILTER = "metrics.Predicted_class_conf >= 0.9 and tags.Predicted_class = '4'"
SEED_ORDER = ["metrics.Predicted_class_conf DESC"]
TABLES = ("runs", "tags", "metrics", "latest_metrics", "params")


def _columns(conn, name: str) -> list[str]:
    rows = conn.execute("SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                        "ORDER BY ordinal_position", (name,)).fetchall()
    return [r[0] for r in rows]


def image_runs(conn, exp_id: str) -> int:
    return conn.execute(
        "SELECT count(*) FROM runs r JOIN tags k ON k.run_uuid = r.run_uuid AND k.key = 'Run_type' "
        "AND k.value = 'image' WHERE r.experiment_id = %s", (int(exp_id),)).fetchone()[0]


def clone_to(conn, exp_id: str, size: int, real: int) -> int:
    """Clone the experiment's ``real`` real image runs (``Image_id`` below ``real``) until it holds ``size`` image
    runs: image ``k`` copies real image ``k mod real``. Returns the count added."""
    have = image_runs(conn, exp_id)
    if size <= have:
        return 0
    conn.execute("DROP TABLE IF EXISTS src, clone")
    conn.execute(
        "CREATE TEMP TABLE src AS SELECT r.run_uuid, r.name, t.value::int AS i "
        "FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'Image_id' "
        "JOIN tags k ON k.run_uuid = r.run_uuid AND k.key = 'Run_type' AND k.value = 'image' "
        "WHERE r.experiment_id = %s AND t.value::int < %s", (int(exp_id), real))
    conn.execute(
        "CREATE TEMP TABLE clone AS SELECT s.run_uuid AS src, s.name AS src_name, g AS image_id, "
        "md5(g::text || '-' || clock_timestamp()::text) AS uuid FROM generate_series(%s::bigint, %s::bigint) g "
        "JOIN src s ON s.i = g %% %s::bigint", (have, size - 1, real))
    for name in TABLES:
        cols = _columns(conn, name)
        exprs = []
        for c in cols:
            if c == "run_uuid":
                exprs.append("c.uuid")
            elif name == "runs" and c == "name":
                exprs.append("'ImageID-' || c.image_id || '_conf'")
            elif name == "runs" and c == "artifact_uri":
                exprs.append("replace(x.artifact_uri, x.run_uuid, c.uuid)")
            elif name == "runs" and c == "start_time":
                exprs.append("x.start_time + c.image_id")
            elif name == "tags" and c == "value":
                exprs.append("CASE x.key WHEN 'Image_id' THEN c.image_id::text "
                             "WHEN 'mlflow.runName' THEN 'ImageID-' || c.image_id || '_conf' "
                             "ELSE replace(x.value, c.src_name, 'ImageID-' || c.image_id || '_conf') END")
            else:
                exprs.append(f"x.{c}")
        conn.execute(f"INSERT INTO {name} ({', '.join(cols)}) SELECT {', '.join(exprs)} "  # noqa: S608 (names from
                     f"FROM clone c JOIN {name} x ON x.run_uuid = c.src")  # information_schema, values bound)
    for name in TABLES:
        conn.execute(f"ANALYZE {name}")
    return size - have


def ui_seconds(chromium: str, url: str, timeout: float = 600) -> float:
    """Seconds from navigation to the first image run's row on the page (a fresh browser each time)."""
    from cdp import Browser

    listed = "Array.from(document.querySelectorAll('a')).some(a => a.innerText.startsWith('ImageID-'))"
    with Browser(chromium) as browser:
        browser.open("about:blank")
        t0 = time.perf_counter()
        browser.open(url)
        browser.wait_for(listed, timeout)
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[5000, 50000])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workers", type=int, default=4)
    args = ap.parse_args()
    quiet()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not postgres_ready():
        return
    import psycopg
    from mlflow import MlflowClient

    from xaitk_exp.app import run
    from xaitk_exp.stages.saliency.stage import build_filter
    from xaitk_exp.teamserver import team_server
    from xaitk_exp.teamserver.postgres import DB_NAME, DB_USER, PASSWORD_FILE

    rows = []
    with team_server(workers=args.workers, frontend="gunicorn") as url:
        t0 = time.perf_counter()
        run(compose(url, "stage=train", "logging=low"), [], ".")
        ctx = run(compose(url, "stage=evaluation", "logging=low", "evaluation.num_images=null",
                          "query.min_conf=0.9", "query.predicted_class=4"), [], ".")
        real_s = time.perf_counter() - t0
        summary = ctx.evaluation_run_id
        client = MlflowClient(url)
        exp_id = client.get_run(summary).info.experiment_id
        stage_filter = build_filter(ctx.settings.query, summary)
        port = urllib.parse.urlsplit(url.backend_uri).port
        password = (Path(url.workdir) / PASSWORD_FILE).read_text().strip()
        base = str(url).replace("127.0.0.1", "localhost")
        pages = {
            "UI runs table s": f"{base}/#/experiments/{exp_id}/runs",
            "UI seed filter s": f"{base}/#/experiments/{exp_id}/runs?searchFilter={urllib.parse.quote(SEED_FILTER)}",
        }
        print(f"real evaluation through the server: {real_s:.1f} s (train + evaluation)", file=sys.stderr)
        with psycopg.connect(host="127.0.0.1", port=port, user=DB_USER, password=password, dbname=DB_NAME,
                             autocommit=True) as conn:
            real = image_runs(conn, exp_id)
            for size in [real, *sorted(args.sizes)]:  # the real runs alone first
                t0 = time.perf_counter()
                clone_to(conn, exp_id, size, real)
                fill_s = time.perf_counter() - t0
                images = image_runs(conn, exp_id)
                seed, stage = [], []
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    hits = client.search_runs([exp_id], SEED_FILTER, max_results=100, order_by=SEED_ORDER)
                    seed.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    first = client.search_runs([exp_id], stage_filter, max_results=1, order_by=SEED_ORDER)
                    stage.append(time.perf_counter() - t)
                assert hits and first, "the seed query finds image runs"
                row = [size, images, round(fill_s, 1), round(1000 * median(seed), 1),
                       round(1000 * statistics.pstdev(seed), 1), round(1000 * median(stage), 1)]
                for page in pages.values():
                    if chromium is None:
                        row.append("no chromium")
                        continue
                    times = [ui_seconds(chromium, page) for _ in range(args.repeats)]
                    row.append(round(median(times), 2))
                rows.append(row)
                print(f"  {size} runs: {row}", file=sys.stderr, flush=True)
    load = os.getloadavg()
    print(f"\nTeam server (PostgreSQL + mlflow server, gunicorn {args.workers} workers, loopback): image runs of one "
          f"evaluation experiment, {args.repeats} repeats, medians; {machine()}; load {load[0]:.2f} {load[1]:.2f}")
    print(table(["target runs", "image runs", "fill s (SQL clone)", "seed query ms (100 rows)", "sd ms",
                 "stage filter ms (1 row)", *pages], rows))


if __name__ == "__main__":
    main()

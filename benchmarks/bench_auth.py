"""Benchmark: what MLflow's basic-auth app costs per logged run, and what ``auth_cache_ttl_seconds`` buys back.

    python benchmarks/bench_auth.py --runs 15 --repeats 3   # about 12 minutes on a busy 2-core machine
    python benchmarks/bench_auth.py                         # 50 runs, 5 repeats: the cache-off variants take long

Three team servers (:func:`xaitk_exp.teamserver.team_server`, PostgreSQL + ``mlflow server`` with gunicorn, each in
its own temporary folder) run at once: without authentication, with authentication and ``auth_cache_ttl_seconds =
0`` (MLflow's default: a PBKDF2 password hash is checked on every request), and with authentication and a 60 s
credential cache. Against each, one client logs ``--runs`` runs the way the evaluation stage's low level does:
``create_run`` + one ``log_batch`` (10 metrics, 5 params, 5 tags) + ``set_terminated``, one run after another. With
authentication it logs as the admin (MLflow skips permission checks for admins) and as a plain user holding EDIT on
the experiment (every request also looks the user's permission up). The variants run side by side, in an order that
rotates between repeats; the table reports medians per run and the ratio to the server without authentication.

Measured here (MLflow 3.17.2, werkzeug's default ``scrypt:32768:8:1`` password hash, about 0.3 s a check on a busy
2-core machine, checked several times per request without the cache): the cache makes a run about 12x faster and
brings it back to the cost without authentication (admin) or about 1.4x (a plain user, whose permission is looked up
on every request). Hence the team server's default, 60 s; see docs/team-server.md for what it trades.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import interleave, machine, median, postgres_ready, quiet, table  # noqa: E402

USER, USER_PASSWORD = "bench-user", "bench-user-password-1"
TTLS = (0, 60)


class Target:
    """One server, one experiment, and the credentials a variant logs with."""

    def __init__(self, url: str, user: str | None, password: str | None, experiment_id: str) -> None:
        self.url, self.user, self.password, self.experiment_id = url, user, password, experiment_id
        self.count = 0

    def log_runs(self, n: int) -> float:
        """Seconds to log ``n`` runs (create, one batch, terminate), with this target's credentials."""
        from mlflow import MlflowClient
        from mlflow.entities import Metric, Param, RunTag

        for key, value in (("MLFLOW_TRACKING_USERNAME", self.user), ("MLFLOW_TRACKING_PASSWORD", self.password)):
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        client = MlflowClient(self.url)
        client.get_experiment(self.experiment_id)  # warm the connection and the credential cache, untimed
        now = int(time.time() * 1000)
        params = [Param(f"p{i}", str(i)) for i in range(5)]
        tags = [RunTag(f"t{i}", "x") for i in range(5)]
        t0 = time.perf_counter()
        for _ in range(n):
            self.count += 1
            run = client.create_run(self.experiment_id, run_name=f"run {self.count}")
            metrics = [Metric(f"m{i}", float(i), now, 0) for i in range(10)]
            client.log_batch(run.info.run_id, metrics=metrics, params=params, tags=tags)
            client.set_terminated(run.info.run_id, "FINISHED")
        return time.perf_counter() - t0


def _setup(url, admin_env: dict[str, str], with_user: bool) -> str:
    """Create the experiment as the admin and, with ``with_user``, a plain user holding EDIT on it."""
    from mlflow import MlflowClient

    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        os.environ.pop(key, None)
    os.environ.update(admin_env)
    exp_id = MlflowClient(url).create_experiment("bench-auth")
    if with_user:
        from xaitk_exp.teamserver.users import Admin, add_user, grant

        admin = Admin(url, admin_env["MLFLOW_TRACKING_USERNAME"], admin_env["MLFLOW_TRACKING_PASSWORD"])
        add_user(admin, USER, USER_PASSWORD)
        grant(admin, USER, "bench-auth", "EDIT")
    return exp_id


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=50, help="runs logged per variant and repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2, help="gunicorn workers per server")
    args = ap.parse_args()
    quiet()
    if not postgres_ready():
        return
    from xaitk_exp.teamserver import team_server

    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        os.environ.pop(key, None)
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"  # no "View run ... at" line per run
    targets: dict[str, Target] = {}
    with ExitStack() as stack:
        print("starting three servers (no auth; auth, cache off; auth, 60 s cache) ...", file=sys.stderr, flush=True)
        url = stack.enter_context(team_server(workers=args.workers))
        targets["no auth"] = Target(url, None, None, _setup(url, {}, False))
        for ttl in TTLS:
            url = stack.enter_context(team_server(workers=args.workers, auth=True, auth_cache_ttl=ttl))
            admin_env = url.admin_env()
            exp_id = _setup(url, admin_env, True)
            label = f"auth, cache {ttl} s" if ttl else "auth, cache off"
            targets[f"{label}, admin"] = Target(url, url.admin_username, url.admin_password, exp_id)
            targets[f"{label}, EDIT user"] = Target(url, USER, USER_PASSWORD, exp_id)
        times = interleave({name: (lambda t=t: t.log_runs(args.runs)) for name, t in targets.items()}, args.repeats)
    per_run = {name: 1000 * median(v) / args.runs for name, v in times.items()}
    base = per_run["no auth"]
    rows = [[name, ms, ms / base, min(times[name]) * 1000 / args.runs] for name, ms in per_run.items()]
    print(f"\n## Per-run logging (create_run + log_batch + set_terminated) against mlflow server + PostgreSQL, "
          f"gunicorn {args.workers} workers: {args.runs} runs x {args.repeats} repeats ({machine()})\n")
    print(table(["server", "median ms / run", "this / no auth", "best ms / run"], rows))
    for who in ("admin", "EDIT user"):
        off, on = per_run[f"auth, cache off, {who}"], per_run[f"auth, cache 60 s, {who}"]
        print(f"\n{who}: the 60 s credential cache makes a run {off / on:.2f}x faster than checking the hash on every "
              f"request ({off:.1f} -> {on:.1f} ms)")


if __name__ == "__main__":
    main()

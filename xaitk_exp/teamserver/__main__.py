"""``python -m xaitk_exp.teamserver``: run the team server until Ctrl-C, or manage its users (``user ...``)."""

from __future__ import annotations

import argparse
import signal
import sys
import time

from xaitk_exp import schema
from xaitk_exp.teamserver import (
    ADMIN_PASSWORD_FILE,
    DEFAULT_AUTH_CACHE_TTL,
    DEFAULT_RUN_AS,
    FRONTENDS,
    TeamServerError,
    is_loopback,
    team_server,
    users,
)

TLS_NOTE = ("note: basic auth sends the password with every request: put a TLS reverse proxy (nginx, Caddy) in "
            "front and give clients its https:// address (docs/team-server.md)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m xaitk_exp.teamserver",
        description="Run a private PostgreSQL + mlflow server (proxied artifacts, MLflow's basic-auth app) until "
        "Ctrl-C; or manage its users with 'user ...'.",
    )
    parser.add_argument("--workers", type=int, default=4, help="server worker processes (default 4)")
    parser.add_argument("--frontend", choices=FRONTENDS, default="gunicorn", help="default gunicorn (fastest)")
    parser.add_argument("--port", type=int, default=5000, help="port of the tracking server (default 5000)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; beyond loopback only with authentication)")
    parser.add_argument("--allowed-hosts", default=None,
                        help="MLflow's --allowed-hosts: host names clients use, comma-separated (localhost is "
                        "always added)")
    parser.add_argument("--dir", default=None, help="keep the database, artifacts, users and admin password here "
                        "(default: a temporary folder)")
    parser.add_argument("--no-auth", action="store_true",
                        help="no authentication: anyone who reaches the server reads, writes and deletes everything")
    parser.add_argument("--auth-cache-ttl", type=int, default=DEFAULT_AUTH_CACHE_TTL, metavar="SECONDS",
                        help=f"how long a worker trusts a checked password (default {DEFAULT_AUTH_CACHE_TTL}; 0: "
                        "check the hash on every request)")
    parser.add_argument("--user", default=None, metavar="NAME",
                        help=f"started by root: the account mlflow server runs as (default {DEFAULT_RUN_AS}; never "
                        "root; a dedicated account is better); otherwise the server runs as you")
    sub = parser.add_subparsers(dest="command", metavar="user", required=False)
    user = sub.add_parser("user", help="manage the users of a running server (as its admin)")
    actions = user.add_subparsers(dest="action", required=True, metavar="{add,password,grant,revoke,list}")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dir", dest="user_dir", default=None,
                       help="the server folder: its admin-password and URL are used")
        p.add_argument("--url", default=None, help="the server (default: the URL in --dir, else "
                       "MLFLOW_TRACKING_URI, else http://127.0.0.1:5000)")

    p = actions.add_parser("add", help="add a user (password from a prompt or one line of stdin)")
    p.add_argument("name")
    common(p)
    p = actions.add_parser("password", help="change a user's password (from a prompt or one line of stdin)")
    p.add_argument("name")
    common(p)
    p = actions.add_parser("grant", help="give a user a permission on experiments")
    p.add_argument("name")
    p.add_argument("--experiment", action="append", default=[], help="experiment name (repeat for several)")
    p.add_argument("--model", action="append", default=[], metavar="CLASS",
                   help="shorthand: the experiments '<CLASS> - Train', '- Evaluation', '- Saliency Map Generation'")
    p.add_argument("--permission", required=True, help=f"one of {', '.join(users.PERMISSIONS)} (MLflow's); "
                   "replaces a grant the user has there")
    p.add_argument("--create", action="store_true", help="create experiments that do not exist yet")
    common(p)
    p = actions.add_parser("revoke", help="take back a user's grant on experiments (the default permission, READ, "
                           "applies again)")
    p.add_argument("name")
    p.add_argument("--experiment", action="append", default=[], help="experiment name (repeat for several)")
    p.add_argument("--model", action="append", default=[], metavar="CLASS",
                   help="shorthand: the three stage experiments of CLASS")
    common(p)
    p = actions.add_parser("list", help="list the users")
    common(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``; serve, or run one ``user`` command. Errors are one line, exit 2."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "user":
            return _user(args)
        return _serve(args)
    except (TeamServerError, ValueError) as exc:
        print(f"xaitk-exp teamserver: error: {exc}", file=sys.stderr)
        return 2


def _serve(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise ValueError(f"--workers={args.workers} is invalid: a positive integer")
    if args.auth_cache_ttl < 0:
        raise ValueError(f"--auth-cache-ttl={args.auth_cache_ttl} is invalid: a whole number of seconds, 0 or more")
    if not 0 < args.port < 65536:
        raise ValueError(f"--port={args.port} is invalid: 1 to 65535")
    auth = not args.no_auth
    open_to_network = not is_loopback(args.host)
    if open_to_network and not auth:
        print(f"xaitk-exp teamserver: WARNING: --host={args.host} with --no-auth: anyone who reaches this port reads, "
              "writes and deletes every run", file=sys.stderr)
    stopping: list[int] = []

    def _stop(signum: int, _frame: object) -> None:
        stopping.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        with team_server(workers=args.workers, frontend=args.frontend, port=args.port, workdir=args.dir,
                         auth=auth, host=args.host, auth_cache_ttl=args.auth_cache_ttl,
                         allowed_hosts=args.allowed_hosts, user=args.user) as url:
            kind = "basic auth, default permission READ" if auth else "NO authentication"
            print(f"tracking server: {url}   (PostgreSQL backend, artifacts proxied, {kind}; Ctrl-C stops both)")
            if auth:
                print(f"admin user 'admin': its password is in {url.workdir / ADMIN_PASSWORD_FILE} (owner-only file)")
                where = f"--dir {args.dir}" if args.dir else f"--url {url} (admin credentials in the environment)"
                print(f"add a user: python -m xaitk_exp.teamserver user add NAME {where}")
                print(f"use it: export MLFLOW_TRACKING_USERNAME=NAME MLFLOW_TRACKING_PASSWORD=...; "
                      f"xaitk-exp tracking.uri={url}")
            else:
                print(f"use it: xaitk-exp tracking.uri={url}    or    export MLFLOW_TRACKING_URI={url}")
            if open_to_network:
                print(f"listening on {args.host}:{args.port}; {TLS_NOTE}")
                if not args.allowed_hosts:
                    print("note: MLflow answers requests addressed to localhost or a private IP address only; "
                          "--allowed-hosts names the host names clients use")
            sys.stdout.flush()
            while True:  # watch both servers: one that dies stops the other, with one line naming it
                time.sleep(1.0)
                url.check()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 0


def _user(args: argparse.Namespace) -> int:
    if args.action in ("grant", "revoke"):
        if args.action == "grant" and args.permission not in users.PERMISSIONS:
            raise TeamServerError(f"--permission={args.permission!r} is invalid: one of {', '.join(users.PERMISSIONS)}")
        names = [*args.experiment, *(schema.experiment_name(c, s) for c in args.model for s in users.STAGES)]
        if not names:
            raise TeamServerError("--experiment is missing: name at least one experiment (or --model CLASS)")
    if args.action != "list":
        users.check_name(args.name)
    admin = users.admin_from(args.url, args.user_dir)
    if args.action == "add":
        users.add_user(admin, args.name, users.read_password(f"password for new user {args.name}"))
        print(f"user {args.name!r} added (READ on every experiment until granted more)")
    elif args.action == "password":
        users.set_password(admin, args.name, users.read_password(f"new password for {args.name}"))
        print(f"password of {args.name!r} changed")
    elif args.action == "grant":
        for name in names:
            print(users.grant(admin, args.name, name, args.permission, create=args.create))
    elif args.action == "revoke":
        for name in names:
            print(users.revoke(admin, args.name, name))
    elif args.action == "list":
        for user in users.list_users(admin):
            print(f"{user['username']}{'  (admin)' if user['is_admin'] else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

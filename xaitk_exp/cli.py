"""The entry point: ``xaitk-exp`` / ``python -m xaitk_exp``. Hydra composes the config; a stage runner runs it.

Heavy libraries (mlflow, xaitk-saliency, scikit-learn) are imported only once a stage starts, so ``--help`` and
``--cfg job`` stay fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

GROUPS = ("dataset", "model", "saliency", "logging")
CONFIG_PACKAGE = "xaitk_exp.conf"


def group_options(group: str) -> list[str]:
    """The option names of a config group (the YAML files shipped in ``xaitk_exp.conf/<group>``)."""
    from importlib.resources import files

    folder = files(CONFIG_PACKAGE).joinpath(group)
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def precheck_overrides(argv: list[str]) -> str | None:
    """A one-line error for ``group=option`` overrides naming an option that does not exist, else None."""
    for token in argv:
        if token.startswith("-") or "=" not in token:
            continue
        key, _, value = token.partition("=")
        key = key.lstrip("+~")
        if key not in GROUPS or any(ch in value for ch in "()[]{}*$"):
            continue
        options = group_options(key)
        for choice in value.split(","):
            if choice.strip() and choice.strip() not in options:
                return f"{key}={choice.strip()!r} is invalid: one of {', '.join(options)}"
    return None


def run(cfg: DictConfig, overrides: list[str] | None = None, output_dir: str | Path | None = None) -> object:
    """Validate ``cfg``, open the tracker for its logging level and run ``cfg.stage``. Returns the stage context."""
    from xaitk_exp.config import resolve_tracking, validate
    from xaitk_exp.errors import ConfigError
    from xaitk_exp.stages import STAGES, Context
    from xaitk_exp.tracking import make_tracker
    from xaitk_exp.tracking.access import check_access

    validate(cfg)
    _http_settings(cfg)
    uri, artifact_root = resolve_tracking(cfg)
    tracker = make_tracker(str(cfg.logging.level), uri, artifact_root, str(cfg.tracking.get("sqlite_journal", "wal")))
    check_access(cfg, tracker)  # 401/403 of an authenticating server: one line, before any run opens
    ctx = Context(cfg=cfg, tracker=tracker, output_dir=Path(output_dir or "."), overrides=list(overrides or []))
    if cfg.stage == "reproduce":
        from xaitk_exp.reproduce import run_reproduce

        run_reproduce(ctx)
        return ctx
    runner = STAGES.get(str(cfg.stage))
    if runner is None:
        raise ConfigError("stage", cfg.stage, f"one of {', '.join([*STAGES, 'reproduce'])}")
    runner(ctx)
    if uri.startswith("sqlite:"):
        print(f"View the runs: mlflow ui --backend-store-uri {uri}")
    return ctx


def _http_settings(cfg: DictConfig) -> None:
    """Bound how long an unreachable tracking server can stall a job (MLflow retries for minutes by default)."""
    http = cfg.tracking.get("http") or {}
    for key, env in (
        ("timeout", "MLFLOW_HTTP_REQUEST_TIMEOUT"),
        ("max_retries", "MLFLOW_HTTP_REQUEST_MAX_RETRIES"),
        ("backoff_factor", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"),
    ):
        if http.get(key) is not None:
            os.environ[env] = str(http[key])


@hydra.main(version_base="1.3", config_path="pkg://xaitk_exp.conf", config_name="config")
def _hydra_main(cfg: DictConfig) -> dict | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from xaitk_exp.errors import RunKilled, XaitkExpError
    from xaitk_exp.sweep.jobs import job_result
    from xaitk_exp.tracking.access import refusal

    hc = HydraConfig.get()
    try:
        return job_result(run(cfg, list(hc.overrides.task), hc.runtime.output_dir))
    except RunKilled as exc:  # SIGTERM: the open runs are closed KILLED by now
        print(f"xaitk-exp: stopped ({exc}); open runs were closed KILLED", file=sys.stderr)
        if hc.mode == RunMode.MULTIRUN:
            raise
        sys.exit(143)  # 128 + SIGTERM, as a shell reports a process the signal ended
    except XaitkExpError as exc:
        print(f"xaitk-exp: error: {_scrub(str(exc), cfg)}", file=sys.stderr)
        if hc.mode == RunMode.MULTIRUN:
            raise
        sys.exit(2)
    except Exception as exc:
        text = str(exc)
        denied = refusal(exc, str(cfg.tracking.get("uri") or os.environ.get("MLFLOW_TRACKING_URI") or ""))
        if denied is None and _scrub(text, cfg) == text:
            raise
        # an error quoting the tracking URL with its credentials: report it without them, and without its chain
        from xaitk_exp.errors import TrackingError

        message = denied or f"{type(exc).__name__}: {_scrub(text, cfg).splitlines()[0]}"
        print(f"xaitk-exp: error: {message}", file=sys.stderr)
        if hc.mode == RunMode.MULTIRUN:
            raise TrackingError(message) from None
        sys.exit(2)


def _hide_credentials_in_logs(argv: list[str]) -> None:
    """Log records (Hydra prints every job's overrides) never show the password of a tracking URI."""
    from xaitk_exp.config import redact_text

    given = [a.partition("=")[2] for a in argv if a.lstrip("+~").startswith("tracking.uri=")]
    uris = [u.replace("\\", "").strip("'\"") for u in [*given, os.environ.get("MLFLOW_TRACKING_URI", "")] if "@" in u]
    if not uris:
        return
    import logging

    make_record = logging.getLogRecordFactory()

    def scrubbed_record(*args: object, **kwargs: object) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        text = clean = record.getMessage()
        for uri in uris:
            clean = redact_text(clean, uri)
        if clean != text:
            record.msg, record.args = clean, ()
        return record

    logging.setLogRecordFactory(scrubbed_record)


def _scrub(text: str, cfg: DictConfig) -> str:
    """``text`` without the credentials of the tracking URI in use."""
    from xaitk_exp.config import redact_text

    return redact_text(text, cfg.tracking.get("uri") or os.environ.get("MLFLOW_TRACKING_URI"))


_NO_COMPOSE_FLAGS = (
    "-m", "--multirun", "-h", "--help", "--hydra-help", "--version", "-i", "--info", "-sc", "--shell-completion",
    "-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir",
)


def compose_config(overrides: list[str]) -> DictConfig:
    """The shipped config composed with ``overrides`` as ``xaitk-exp`` composes it, minus Hydra's own node.

    For running stages in-process, ``run(compose_config([...]))``: tests, benchmarks and notebooks use it.
    """
    from hydra import compose, initialize_config_module
    from omegaconf import open_dict

    with initialize_config_module(config_module=CONFIG_PACKAGE, version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


def precheck_keys(argv: list[str]) -> str | None:
    """A one-line error for an override Hydra cannot apply (unknown key, bad syntax), else None.

    Hydra reports these in several lines with exit code 1; composing once here first lets the user see one line.
    Only for a single run with the shipped config (a sweep's values and a user's own config are Hydra's to check).
    """
    if any(a.split("=", 1)[0] in _NO_COMPOSE_FLAGS for a in argv):
        return None
    overrides = [a for a in argv if "=" in a and not a.startswith("-") and not a.lstrip("+~").startswith("hydra")]
    if not overrides:
        return None
    from hydra.errors import HydraException

    try:
        compose_config(overrides)
    except HydraException as exc:
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        cause = exc.__cause__
        reason = f" ({str(cause).splitlines()[0]})" if cause is not None and str(cause).strip() else ""
        return f"{first}{reason}; 'xaitk-exp --cfg job' lists every key, '+key=value' adds a new one"
    return None


def main() -> None:
    from xaitk_exp.tracking.access import take_credentials  # user:password@ in tracking.uri: to the env

    message = take_credentials(sys.argv) or precheck_overrides(sys.argv[1:]) or precheck_keys(sys.argv[1:])
    if message:
        print(f"xaitk-exp: error: {message}", file=sys.stderr)
        sys.exit(2)
    _hide_credentials_in_logs(sys.argv[1:])
    try:
        _hydra_main()
    finally:  # a sweep that Hydra aborted (a failed job, Ctrl-C) still gets its summary and an honest status
        from xaitk_exp.sweep import finish_open_sweeps

        finish_open_sweeps()


if __name__ == "__main__":
    main()

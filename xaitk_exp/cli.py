"""The entry point: ``xaitk-exp`` / ``python -m xaitk_exp``. Hydra composes the config; a stage runner runs it.

Heavy libraries (mlflow, xaitk-saliency, scikit-learn) are imported only once a stage starts, so ``--help`` and
``--cfg job`` stay fast.
"""

from __future__ import annotations

import logging
import os
import sys
from importlib.resources import files

import hydra
from omegaconf import DictConfig

from xaitk_exp.app import CONFIG_PACKAGE, job_result, run
from xaitk_exp.overrides import GROUPS, precheck_keys, precheck_sweep


def group_options(group: str) -> list[str]:
    """The option names of a config group (the YAML files shipped in ``xaitk_exp.conf/<group>``)."""
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


@hydra.main(version_base="1.3", config_path="pkg://xaitk_exp.conf", config_name="config")
def _hydra_main(cfg: DictConfig) -> dict | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from xaitk_exp.errors import RunKilled, XaitkExpError
    from xaitk_exp.tracking.access import refusal

    hc = HydraConfig.get()
    # urllib3 logs each retry of a request to a server that stopped answering; the job says it once, in one line
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
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
        from xaitk_exp.failures import failure_line

        text = str(exc)
        uri = str(cfg.tracking.get("uri") or os.environ.get("MLFLOW_TRACKING_URI") or "")
        # a refused user, a dead server, a full disk or memory: one line naming the cause; a bug stays a traceback
        denied = refusal(exc, uri) or failure_line(exc, uri)
        if denied is None and _scrub(text, cfg) == text:
            raise
        # an error quoting the tracking URL with its credentials: report it without them, and without its chain
        from xaitk_exp.errors import TrackingError

        message = _scrub(denied, cfg) if denied else f"{type(exc).__name__}: {_scrub(text, cfg).splitlines()[0]}"
        print(f"xaitk-exp: error: {message}", file=sys.stderr)
        if hc.mode == RunMode.MULTIRUN:
            raise TrackingError(message) from None
        sys.exit(2)


def _hide_credentials_in_logs(argv: list[str]) -> None:
    """Log records (Hydra prints every job's overrides) never show the password of a tracking URI."""
    from xaitk_exp.security.redact import redact_text

    given = [a.partition("=")[2] for a in argv if a.lstrip("+~").startswith("tracking.uri=")]
    uris = [u.replace("\\", "").strip("'\"") for u in [*given, os.environ.get("MLFLOW_TRACKING_URI", "")] if "@" in u]
    if not uris:
        return
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
    from xaitk_exp.security.redact import redact_text

    return redact_text(text, cfg.tracking.get("uri") or os.environ.get("MLFLOW_TRACKING_URI"))


#: where a job's and a sweep's folders go when the config is not the shipped one (a ``.hydra`` folder saved with a run
#: has no ``hydra:`` node, so Hydra would fall back to its own ``outputs/<date>/<time>``)
RUN_DIR = "outputs/runs/${now:%Y-%m-%d}/${now:%H-%M-%S-%f}"
SWEEP_DIR = "outputs/multirun/${now:%Y-%m-%d}/${now:%H-%M-%S}"


def _output_folders(argv: list[str]) -> list[str]:
    """With ``--config-path``/``--config-dir`` (a rerun from a saved ``.hydra`` folder), keep runs in ``outputs/runs``."""
    if not any(a.split("=", 1)[0] in ("-cp", "--config-path", "-cd", "--config-dir") for a in argv):
        return argv
    extra = []
    if not any(a.lstrip("+~").startswith("hydra.run.dir=") for a in argv):
        extra.append(f"hydra.run.dir={RUN_DIR}")
    if not any(a.lstrip("+~").startswith("hydra.sweep.dir=") for a in argv):
        extra.append(f"hydra.sweep.dir={SWEEP_DIR}")
    return [*argv, *extra]


_NO_JOB_FLAGS = (
    "-c", "--cfg", "-h", "--help", "--hydra-help", "--version", "-i", "--info", "-sc", "--shell-completion",
)


def precheck_output_dir(argv: list[str]) -> str | None:
    """A one-line error when the job's folder (``hydra.run.dir``; a sweep's ``hydra.sweep.dir``) cannot be created
    by this user (a path under a file, a folder without write permission), else None: Hydra would stop there with a
    traceback. The folder's fixed part (before any ``${...}``) is checked by creating and removing a temporary
    folder in its nearest existing parent."""
    import tempfile
    from pathlib import Path

    if any(a.split("=", 1)[0] in _NO_JOB_FLAGS for a in argv):  # prints something, runs no job
        return None
    key = "hydra.sweep.dir" if any(a in ("-m", "--multirun") for a in argv) else "hydra.run.dir"
    value = next((a.partition("=")[2] for a in argv if a.lstrip("+~").startswith(f"{key}=")), "outputs")
    fixed = value.split("${", 1)[0].strip("'\"")
    existing = Path(fixed or ".").expanduser().absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{key}={value!r} is invalid: a folder this user can create ({existing} is a file, not a folder)"
    try:
        Path(tempfile.mkdtemp(prefix=".xaitk-exp-check-", dir=existing)).rmdir()
    except OSError as exc:
        return f"{key}={value!r} is invalid: a folder this user can create ({existing}: {exc.strerror})"
    return None


def print_help() -> None:
    """``xaitk-exp --help``: ``conf/hydra/help/xaitk.yaml`` rendered as Hydra renders it, without Hydra's help path,
    which composes every config group to list them (about 0.7 s); the groups' options are the shipped files."""
    import yaml

    node = yaml.safe_load(files(CONFIG_PACKAGE).joinpath("hydra").joinpath("help").joinpath("xaitk.yaml").read_text())
    groups = "\n".join(f"{group}: {', '.join(group_options(group))}" for group in sorted(GROUPS))
    text = (
        node["template"]
        .replace("${hydra.help.header}", node["header"])
        .replace("${hydra.help.footer}", node["footer"])
        .replace("$APP_CONFIG_GROUPS", groups)
        .replace("$$", "$")
    )
    print(text.rstrip("\n"))


def main() -> None:
    if sys.argv[1:] in (["--help"], ["-h"]):  # with overrides, Hydra's help shows the composed config's groups
        print_help()
        return
    from xaitk_exp.tracking.access import take_credentials  # user:password@ in tracking.uri: to the env

    message = take_credentials(sys.argv) or precheck_overrides(sys.argv[1:]) or precheck_keys(sys.argv[1:])
    if not message:
        message, sys.argv[1:] = precheck_sweep(sys.argv[1:])
    if message:
        print(f"xaitk-exp: error: {message}", file=sys.stderr)
        sys.exit(2)
    _hide_credentials_in_logs(sys.argv[1:])
    sys.argv[1:] = _output_folders(sys.argv[1:])
    message = precheck_output_dir(sys.argv[1:])
    if message:
        print(f"xaitk-exp: error: {message}", file=sys.stderr)
        sys.exit(2)
    try:
        _hydra_main()
    finally:  # a sweep that Hydra aborted (a failed job, Ctrl-C) still gets its summary and an honest status
        from xaitk_exp.sweep import finish_open_sweeps

        finish_open_sweeps()
    from xaitk_exp.sweep.callback import FAILED

    if FAILED:  # a sweep whose failed jobs each said why in one line: the summary is printed, the parent FAILED
        print(f"xaitk-exp: error: {FAILED[-1]}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

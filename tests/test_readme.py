"""Every shell command in the README runs as typed, in a fresh shell, after the two set-up commands.

The commands come out of the README's ```bash blocks (a trailing ``\\`` continues a command on the next line). Each
runs with ``bash -c`` exactly as written, in a temporary working directory holding a ``.venv`` symlink to this
test's virtual environment, with the environment's ``bin`` folder taken off ``PATH`` and no ``MLFLOW_TRACKING_URI``:
what a newcomer's fresh shell has after ``python3 -m venv .venv && .venv/bin/pip install .``. A command that is
not on that ``PATH`` (``xaitk-exp ...`` instead of ``.venv/bin/xaitk-exp ...``) exits 127 and fails the test.

Before the commands, the test runs the default pipeline (``.venv/bin/xaitk-exp``) in that directory; placeholders
such as ``<run_id>`` are filled from the store it wrote, when the command comes up. Commands that cannot run here
are listed in :data:`EXCEPTIONS` with the reason; a command that should fail says so in a trailing comment
(``# exits 2``) or in :data:`EXPECTED_EXIT`. Every other command must exit 0.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT

README = ROOT / "README.md"
VENV = Path(sys.executable).parent.parent  # the environment running the tests (not resolved: a venv's python
VENV_PREFIX = ".venv/bin/"  # is a symlink to the base interpreter)

#: the set-up commands: a test cannot create and install the environment it is running in
SETUP_MARKERS = ("pip install",)

#: command prefix (as typed, a leading ``.venv/bin/`` ignored) -> why it does not run here
EXCEPTIONS: dict[str, str] = {
    "mlflow ui": "starts the MLflow UI, a server that runs until Ctrl-C (tests/test_ui_browser.py starts one)",
    "mlflow server": "starts a tracking server that runs until Ctrl-C (tests/teamserver/test_team_server.py starts one)",
    "python -m xaitk_exp.teamserver": "starts PostgreSQL and mlflow server until Ctrl-C (tests/teamserver/test_team_server.py)",
    "PGPASSWORD=": "starts a long-lived mlflow server on PostgreSQL by hand",
    "initdb ": "sets up a long-lived PostgreSQL cluster in the user's home folder",
    "pg_ctl ": "starts a long-lived PostgreSQL server",
    "psql ": "needs the PostgreSQL server set up by the lines before it",
    "xaitk-exp tracking.uri=http": "needs a tracking server at that address",
    "export MLFLOW_TRACKING_URI=http": "points later commands at a tracking server",
    "MLFLOW_TRACKING_USERNAME=": "logs in to a team server (tests/teamserver/test_team_server_auth.py runs one)",
    "xaitk-exp dataset=image_folder dataset.path=/data/": "needs the user's image folder",
    "xaitk-exp -m hydra/launcher=slurm": "needs a SLURM cluster (the submitit_local line runs the same locally)",
    "xaitk-exp model=onnx model.path=": "needs the user's model file and photos (tests/models/ run the same on models they make)",
    "xaitk-exp model=torch": "needs the user's model file (tests/models/ run the same on a TorchScript file they make)",
    "xaitk-exp model=maite": "needs the user's MAITE factory (tests/models/ run the same on a MAITE model they make)",
}

#: programs the project's environment provides: a fresh shell finds them only as ``.venv/bin/<name>``
VENV_TOOLS = ("xaitk-exp", "mlflow", "python", "python3", "pytest", "pip")

#: command prefix -> the exit code the README documents for it (an error example); also ``# exits N`` on the line
EXPECTED_EXIT: dict[str, int] = {}


@dataclass
class Store:
    """What the test's own default pipeline recorded, to fill the README's placeholders."""

    cwd: Path
    client: object = None

    def runs(self, experiment: str, flt: str = "") -> list:
        exp = self.client.get_experiment_by_name(experiment)
        return self.client.search_runs([exp.experiment_id], flt, order_by=["attributes.start_time ASC"])

    def first(self, experiment: str, flt: str = "") -> str:
        return self.runs(experiment, flt)[0].info.run_id

    def hydra_folder(self) -> tuple[str, str]:
        first = sorted((self.cwd / "outputs" / "runs").glob("*/*/.hydra"))[0]
        return first.parent.parent.name, first.parent.name


TRAIN, EVAL, SAL = "MLPClassifier - Train", "MLPClassifier - Evaluation", "MLPClassifier - Saliency Map Generation"

#: placeholder (without <>) -> its value, from the store the default pipeline wrote
PLACEHOLDERS: dict[str, Callable[[Store], str]] = {
    "run_id": lambda s: s.first(TRAIN),  # runs:/<run_id>/sklearn-model
    "train_run_id": lambda s: s.first(TRAIN),
    "RUN_ID": lambda s: s.first(TRAIN),  # stage=reproduce run_id=<RUN_ID>: a train run
    "evaluation_run_id": lambda s: s.first(EVAL, "tags.Run_type != 'image'"),
    "saliency_run_id": lambda s: s.first(SAL),
    "experiment_id": lambda s: s.client.get_experiment_by_name(EVAL).experiment_id,
    "id": lambda s: s.client.get_experiment_by_name(EVAL).experiment_id,
    "date": lambda s: s.hydra_folder()[0],
    "time": lambda s: s.hydra_folder()[1],
}


@dataclass
class Command:
    line: int  #: README line where it starts
    text: str  #: as typed (continuation lines joined)

    @property
    def bare(self) -> str:
        """The command without its ``.venv/bin/`` prefix, for matching the tables above."""
        return self.text[len(VENV_PREFIX):] if self.text.startswith(VENV_PREFIX) else self.text

    @property
    def setup(self) -> bool:
        return any(m in self.text for m in SETUP_MARKERS)

    @property
    def exception(self) -> str | None:
        return next((why for prefix, why in EXCEPTIONS.items() if self.bare.startswith(prefix)), None)

    @property
    def expected_exit(self) -> int:
        said = re.search(r"#.*\bexits? (\d+)", self.text)
        if said:
            return int(said.group(1))
        return next((code for prefix, code in EXPECTED_EXIT.items() if self.bare.startswith(prefix)), 0)

    @property
    def placeholders(self) -> list[str]:
        return re.findall(r"<([A-Za-z_][\w-]*)>", self.text.split(" #")[0])


def readme_commands(text: str | None = None) -> list[Command]:
    """Every command of the README's ```bash blocks, in order (comments and blank lines skipped)."""
    lines = (README.read_text() if text is None else text).splitlines()
    out: list[Command] = []
    in_bash = False
    pending: tuple[int, str] | None = None
    for number, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if stripped.startswith("```"):
            in_bash = not in_bash and stripped[3:].strip() in ("bash", "sh", "shell", "console")
            continue
        if not in_bash:
            continue
        if pending is None and (not stripped or stripped.startswith("#")):
            continue
        start, so_far = pending if pending is not None else (number, "")
        if stripped.endswith("\\"):
            pending = (start, so_far + stripped[:-1].rstrip() + " ")
            continue
        pending = None
        out.append(Command(start, so_far + stripped))
    return out


def fresh_shell_env() -> dict[str, str]:
    """This process's environment as a new shell would have it: no virtual environment active, default store."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "VIRTUAL_ENV", "PYTHONPATH")}
    bin_dirs = {str(VENV / "bin"), str(Path(sys.executable).parent)}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p not in bin_dirs)
    env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # quieter logs; changes no result
    return env


def fill(command: Command, store: Store) -> str:
    text = command.text
    for name in command.placeholders:
        text = text.replace(f"<{name}>", PLACEHOLDERS[name](store))
    return text


def shell(text: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", text], cwd=cwd, env=fresh_shell_env(), capture_output=True, text=True, timeout=timeout,
        check=False,
    )


# ----- fast checks on the README's text ----------------------------------------------------------------------


def test_the_readme_has_commands_and_the_two_set_up_lines():
    commands = readme_commands()
    assert sum(c.setup for c in commands) == 2, [c.text for c in commands if c.setup]
    assert len([c for c in commands if not c.setup and not c.exception]) >= 10


def test_extraction_joins_continuations_and_skips_comments():
    text = "x\n```bash\n# a comment\na b \\\n  c  # note\n\nd\n```\n```python\nnot_this()\n```\n"
    assert [(c.line, c.text) for c in readme_commands(text)] == [(4, "a b c  # note"), (7, "d")]


def test_every_placeholder_has_a_value():
    unknown = {(c.line, p) for c in readme_commands() if not c.setup and not c.exception for p in c.placeholders
               if p not in PLACEHOLDERS}
    assert not unknown, f"README placeholders without a value (add them to PLACEHOLDERS): {sorted(unknown)}"


def test_every_command_names_something_a_fresh_shell_finds():
    """``xaitk-exp ...`` is not on a fresh shell's PATH: the README must say ``.venv/bin/xaitk-exp ...``. Commands
    listed as exceptions are held to it too when they start a tool of the project's environment (``mlflow ui``)."""
    import shutil

    path = fresh_shell_env()["PATH"]
    missing = []
    for c in readme_commands():
        if c.setup:
            continue
        # the program: the first word after any VAR=value assignments
        word = next((w for w in c.text.split() if not re.match(r"^[A-Za-z_]\w*=", w)), "")
        if c.exception and word not in VENV_TOOLS:
            continue  # initdb, pg_ctl, ...: the machine's, not ours
        if word.startswith(VENV_PREFIX):
            found = (VENV / "bin" / word[len(VENV_PREFIX):]).exists()
        else:
            found = shutil.which(word, path=path) is not None
        if not found:
            missing.append(f"README line {c.line}: {word}")
    assert not missing, "not found in a fresh shell (write .venv/bin/...): " + "; ".join(missing)


# ----- every command, run -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_readme_command_runs_as_typed(tmp_path):
    from mlflow import MlflowClient

    (tmp_path / ".venv").symlink_to(VENV, target_is_directory=True)
    first = shell(".venv/bin/xaitk-exp", tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    store = Store(tmp_path, MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"))
    failures, ran, took = [], 0, []
    for command in readme_commands():
        if command.setup or command.exception:
            continue
        text = fill(command, store)
        start = time.monotonic()
        proc = shell(text, tmp_path)
        took.append(f"{time.monotonic() - start:6.1f} s  README line {command.line}: {command.bare.split('  #')[0]}")
        ran += 1
        if proc.returncode != command.expected_exit:
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
            failures.append(
                f"README line {command.line}: exit {proc.returncode} (expected {command.expected_exit}): {text}\n"
                f"    {tail}"
            )
    print("\n".join(took))  # shown with -s or -rP: where the time goes
    assert ran >= 10
    assert not failures, f"{len(failures)} of {ran} README commands fail as typed:\n" + "\n".join(failures)

"""Benchmark 3: start-up of the command line, against ``python -c "import mlflow"`` as the yardstick.

    python benchmarks/bench_startup.py                 # 9 repeats, about 1 minute

Each repeat runs every command once, in a rotating order, in a temporary working directory, with the installed
``xaitk-exp`` of this interpreter's environment. Targets: ``--help`` and ``--cfg job`` each at most 1.0 s median
(heavy libraries stay lazy: neither may import mlflow, scikit-learn or xaitk-saliency). ``--imports`` also lists
the slowest imports of ``--cfg job`` (``python -X importtime``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import interleave, machine, median, table, verdict  # noqa: E402

HEAVY = ("mlflow", "sklearn", "xaitk_saliency", "matplotlib", "sqlalchemy")


def exe() -> list[str]:
    found = shutil.which("xaitk-exp", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "xaitk_exp"]


def timed(cmd: list[str], cwd: str) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    dt = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr[-500:]}")
    return dt


def importtime(args: list[str], cwd: str) -> list[tuple[str, int, float]]:
    """``(module, nesting depth, cumulative seconds)`` per import of ``xaitk-exp <args>`` (``-X importtime``)."""
    code = "import sys; from xaitk_exp.cli import main; sys.argv = ['xaitk-exp', *sys.argv[1:]]; main()"
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code, *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    rows = []
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line[len("import time:") :].split("|")
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        rows.append((name.strip(), depth, int(cumulative) / 1e6))
    return rows


def heavy_imports(args: list[str], cwd: str) -> list[str]:
    """The heavy packages (:data:`HEAVY`) a command imports."""
    return sorted({name.split(".")[0] for name, _, _ in importtime(args, cwd) if name.split(".")[0] in HEAVY})


def slowest_imports(args: list[str], cwd: str, top: int = 8) -> list[tuple[str, float]]:
    rows = [(name, seconds) for name, depth, seconds in importtime(args, cwd) if depth == 0]
    return sorted(rows, key=lambda r: -r[1])[:top]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--imports", action="store_true", help="also list the slowest imports of --cfg job")
    args = ap.parse_args()
    cwd = tempfile.mkdtemp(prefix="xaitk-bench-startup-")
    env_note = "MLFLOW_TRACKING_URI unset" if "MLFLOW_TRACKING_URI" not in os.environ else "MLFLOW_TRACKING_URI set"
    cli = exe()
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        'python -c "import mlflow"': [sys.executable, "-c", "import mlflow"],
        "xaitk-exp --help": [*cli, "--help"],
        "xaitk-exp --cfg job": [*cli, "--cfg", "job"],
    }
    times = interleave({k: (lambda c=c: timed(c, cwd)) for k, c in commands.items()}, args.repeats, warmup=True)
    med = {k: median(v) for k, v in times.items()}
    yard = med['python -c "import mlflow"']
    print(f"\n## Start-up: {args.repeats} repeats, medians ({machine()}; {env_note})\n")
    print(
        table(
            ["command", "median s", "min s", "this / import mlflow"],
            [[k, med[k], f"{min(times[k]):.3f}", med[k] / yard] for k in commands],
        )
    )
    print()
    rows = []
    for label, extra in (("xaitk-exp --help", ["--help"]), ("xaitk-exp --cfg job", ["--cfg", "job"])):
        heavy = heavy_imports(extra, cwd)
        rows.append([f"{label} <= 1.0 s", f"{med[label]:.3f} s", verdict(med[label] <= 1.0),
                     ", ".join(heavy) or "none"])
    print(table(["target", "measured", "status", "heavy packages imported"], rows))
    if args.imports:
        print("\nslowest top-level imports of --cfg job (cumulative s):")
        for name, seconds in slowest_imports(["--cfg", "job"], cwd):
            print(f"  {seconds:6.3f}  {name}")
    shutil.rmtree(cwd, ignore_errors=True)


if __name__ == "__main__":
    main()

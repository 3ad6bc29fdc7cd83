"""The pictures of an optuna study: optimisation history per objective, parameter importances when there are
enough trials, the Pareto front for two or three objectives (optuna's matplotlib plots, drawn headless)."""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: parameter importances need a few completed trials to mean anything
MIN_TRIALS_FOR_IMPORTANCE = 4


def study_pictures(study: Any, objectives: Sequence[str], folder: Path) -> list[Path]:
    """Optimisation history (per objective), parameter importances (enough trials), Pareto front (several), as PNGs in
    ``folder``; nothing without a completed trial."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as ovm

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        return []
    out: list[Path] = []
    folder.mkdir(parents=True, exist_ok=True)

    def save(ax: Any, name: str) -> None:
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        fig.set_size_inches(8, 5)
        fig.tight_layout()
        fig.savefig(folder / name, dpi=100)
        plt.close(fig)
        out.append(folder / name)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna's matplotlib plots are marked experimental
        for i, name in enumerate(objectives):
            target = None if len(objectives) == 1 else (lambda t, i=i: t.values[i])
            suffix = "" if len(objectives) == 1 else "_" + _file_part(name)
            save(ovm.plot_optimization_history(study, target=target, target_name=name),
                 f"optimization_history{suffix}.png")
        searched = {k for t in complete for k in t.params}
        if len(complete) >= MIN_TRIALS_FOR_IMPORTANCE and searched:
            try:
                for i, name in enumerate(objectives):
                    target = None if len(objectives) == 1 else (lambda t, i=i: t.values[i])
                    suffix = "" if len(objectives) == 1 else "_" + _file_part(name)
                    save(ovm.plot_param_importances(study, target=target, target_name=name),
                         f"param_importances{suffix}.png")
            except (RuntimeError, ValueError, ZeroDivisionError) as exc:  # e.g. every trial had one value
                print(f"xaitk-exp: warning: no parameter importances: {exc}", file=sys.stderr)
        if len(objectives) in (2, 3):
            save(ovm.plot_pareto_front(study, target_names=list(objectives)), "pareto_front.png")
    return out


def _file_part(name: str) -> str:
    """``train.Train loss`` -> ``train_Train_loss``: a metric name as part of a file name."""
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")

"""``hydra/sweeper=optuna``: a Hydra sweeper on Optuna's ask-and-tell API (the study's work is in
``xaitk_exp.sweep.search``). Hydra imports this module when it scans its plugins: it imports nothing heavy."""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig


class OptunaSweeper(Sweeper):
    """Runs ``n_trials`` trials of a study, ``n_jobs`` at a time through the configured launcher."""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings  # direction, study_name, storage, n_trials, n_jobs, sampler, params (the config)
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.hydra_context: Any = None
        self.job_idx = 0

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        from xaitk_exp.sweep import search

        assert self.config is not None
        study = search.active(self.config) or search.open_search(self.config)  # no sweep callback: open it here
        sweeper = self.config.hydra.sweeper
        self.job_idx = study.run(self.launcher, list(arguments), int(sweeper.n_trials), int(sweeper.n_jobs),
                                 self.job_idx)
        return study.study

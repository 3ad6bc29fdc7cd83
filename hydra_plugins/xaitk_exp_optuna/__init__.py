"""xaitk-exp's Optuna sweeper for Hydra (``hydra/sweeper=optuna``); Hydra finds it by scanning ``hydra_plugins``."""

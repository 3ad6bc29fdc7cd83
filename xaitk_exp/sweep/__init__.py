"""Sweep-wide work for ``xaitk-exp -m``: the Hydra callback (``callback``), what is known before the jobs run
(``jobs``), per-job records (``records``), the summary (``summary``) and its montage (``montage``)."""

from xaitk_exp.sweep.callback import SweepCallback, finish_open_sweeps

__all__ = ["SweepCallback", "finish_open_sweeps"]

"""Stage runners and the registry the entry point dispatches on."""

from __future__ import annotations

from collections.abc import Callable

from xaitk_exp.stages.context import Context


def _train(ctx: Context) -> None:
    from xaitk_exp.stages.train import run_train

    run_train(ctx)


def _evaluation(ctx: Context) -> None:
    from xaitk_exp.stages.evaluation import run_evaluation

    run_evaluation(ctx)


def _saliency(ctx: Context) -> None:
    from xaitk_exp.stages.saliency.stage import run_saliency

    ctx.check_saliency_fits()
    run_saliency(ctx)


def _all(ctx: Context) -> None:
    stop_after = ctx.settings.sweep.stop_after  # an optuna trial whose objective needs no saliency maps
    if stop_after is None:
        ctx.check_saliency_fits()  # a window larger than the images is refused before the train run opens
    _train(ctx)
    if stop_after != "train":
        _evaluation(ctx)
    if stop_after is None:
        _saliency(ctx)


#: stage name -> runner, for every name in ``schema.STAGES`` but ``reproduce`` (``app.run`` dispatches that one)
STAGES: dict[str, Callable[[Context], None]] = {
    "all": _all,
    "train": _train,
    "evaluation": _evaluation,
    "saliency": _saliency,
}

__all__ = ["STAGES", "Context"]

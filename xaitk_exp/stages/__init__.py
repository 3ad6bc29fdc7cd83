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

    run_saliency(ctx)


def _all(ctx: Context) -> None:
    from xaitk_exp.settings.nodes import to_dict
    from xaitk_exp.settings.validate import SALIENCY_RESERVED, validate_saliency

    # sizes that only the data can check (a window larger than the image) are refused before the train run opens
    node = {k: v for k, v in to_dict(ctx.cfg.saliency).items() if k not in SALIENCY_RESERVED}
    validate_saliency(node, tuple(ctx.split.image_shape[:2]))
    _train(ctx)
    _evaluation(ctx)
    _saliency(ctx)


STAGES: dict[str, Callable[[Context], None]] = {
    "all": _all,
    "train": _train,
    "evaluation": _evaluation,
    "saliency": _saliency,
}

__all__ = ["STAGES", "Context"]

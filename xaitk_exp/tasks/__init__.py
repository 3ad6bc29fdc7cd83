"""Tasks: what kind of question a model answers, and so what every stage records about it.

A task is chosen by the ``task`` config key (``classification``, the default); its module in this folder assigns
``TASK = <Task subclass>()`` at its top level and is found there on the first lookup (:func:`task_named`). The
stages ask their task (``ctx.task``) instead of assuming class scores:

- what a model returns: :meth:`Task.check_model` refuses a model whose outputs the task cannot read, and
  :meth:`Task.blackbox` wraps it as the black box xaitk-saliency queries;
- what an evaluation run records: :meth:`Task.evaluation` returns the task's :class:`EvaluationRecords` (per image:
  tags and metrics; per split: the summary's metrics and artifacts);
- which saliency generators apply: :attr:`Task.generator_interface`, the xaitk-saliency interface a
  ``saliency._target_`` must implement (:meth:`Task.check_saliency` refuses a mismatch in one line); which of a
  model's outputs get maps (:meth:`Task.explained_outputs`) and the names the maps are recorded under
  (:meth:`Task.output_labels`, :meth:`Task.output_names`). The saliency stage hands its worker processes the task's
  name, not the task: each looks it up here;
- which quality metrics apply: :attr:`Task.quality_metrics` (:meth:`Task.check_metrics`).

Object detection (issue 22) is one more module here, ``detection.py``, with ``TASK = Detection()``: ``check_model``
accepts a MAITE / torchvision-style / ONNX detector (boxes, labels, scores per image); ``blackbox`` wraps it as
smqtk-detection's ``DetectImageObjects``; ``generator_interface`` is xaitk-saliency's
``GenerateObjectDetectorBlackboxSaliency`` (D-RISE, ``RandomGridStack``); ``evaluation`` returns records with
``Detections`` and ``Max_score`` per image (AP@0.5 with ground truth, a detections table and a boxes picture as
artifacts) and mAP in the summary; ``explained_outputs`` keeps an image's detections above a score, named by
``output_labels``; ``quality_metrics`` are the detection deletion / insertion, their random
baselines and the pointing game. Its name joins ``settings.config.TASKS`` so that ``task=detection`` validates.
"""

from __future__ import annotations

from xaitk_exp.errors import ConfigError
from xaitk_exp.lazy import registered_in
from xaitk_exp.tasks.base import EvaluationRecords, Task

_TASKS: dict[str, Task] = {}


def tasks() -> list[Task]:
    """Every task a module of this folder registers, by name."""
    if not _TASKS:
        for _, task in registered_in(__name__, "TASK"):
            if isinstance(task, Task):
                _TASKS[task.name] = task
    return [_TASKS[n] for n in sorted(_TASKS)]


def task_named(name: str) -> Task:
    """The task ``task=<name>`` selects; one-line :class:`ConfigError` naming ``task`` otherwise."""
    found = {t.name: t for t in tasks()}
    if name not in found:
        raise ConfigError("task", name, f"one of {', '.join(sorted(found))}")
    return found[name]


__all__ = ["EvaluationRecords", "Task", "task_named", "tasks"]

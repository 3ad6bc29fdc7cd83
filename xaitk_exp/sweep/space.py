"""A search space from Hydra override syntax, and the objective a search optimises; no Optuna import here.

``choice(a, b)`` / ``a,b`` (categorical), ``range(start, stop[, step])`` (integers or stepped floats, stop
excluded), ``interval(low, high)`` (floats; ``tag(int, interval(...))`` integers; ``tag(log, interval(...))`` a
log scale), given on the command line or as ``hydra.sweeper.params: {key: "interval(0.001, 0.1)"}``.
Every check here runs before the first trial, so a bad space costs one line, not a study.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from omegaconf import DictConfig, ListConfig, OmegaConf

from xaitk_exp import schema
from xaitk_exp.errors import ConfigError

#: the stages whose runs a job's summary row holds, by the job's ``stage``
STAGE_COLUMNS = {
    "all": ("train", "evaluation", "saliency"),
    "saliency": ("train", "evaluation", "saliency"),
    "evaluation": ("train", "evaluation"),
    "train": ("train",),
    "reproduce": (),
}
#: metrics each stage logs (summary column ``<stage>.<name>``); saliency adds the quality metrics of
#: ``xaitk_exp.metrics.summary.DIRECTIONS`` (and their ``_std`` spreads)
STAGE_METRICS = {
    "train": (schema.TRAIN_ACCURACY, schema.TRAIN_LOSS),
    "evaluation": (
        schema.ACCURACY, schema.ACCURACY_EVALUATED, schema.MEAN_PREDICTED_CLASS_CONF, schema.EVALUATED_IMAGES,
        schema.SPLIT_IMAGES,
    ),
    "saliency": (schema.PREDICTED_CLASS_CONF,),
}
_MINIMISED = (schema.TRAIN_LOSS,)


@dataclass
class Param:
    """One searched key: ``kind`` is ``float``, ``int`` or ``choice``; ``prefix`` is the override's ``+``/``++``."""

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False
    choices: list[str] = field(default_factory=list)
    prefix: str = ""
    written: str = ""  #: the value as given, for error messages

    def distribution(self) -> Any:
        """The Optuna distribution (imports Optuna)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "choice":
            return CategoricalDistribution(self.choices)
        low, high = self.low, self.high
        if low is None or high is None:  # set for every numeric parameter (see _make_param)
            raise ValueError(f"{self.key}: a {self.kind} parameter without bounds")
        if self.kind == "int":
            return IntDistribution(int(low), int(high), log=self.log, step=int(self.step or 1))
        return FloatDistribution(float(low), float(high), log=self.log, step=self.step)

    def override(self, value: Any) -> str:
        """The override that sets this key to ``value`` (a categorical value is already override syntax)."""
        if self.kind == "choice":
            return f"{self.prefix}{self.key}={value}"
        return f"{self.prefix}{self.key}={int(value) if self.kind == 'int' else repr(float(value))}"

    def probes(self) -> list[str]:
        """Two far-apart values as overrides (the ends of the range): for checks that need a composed config."""
        if self.kind == "choice":
            return [self.override(self.choices[0]), self.override(self.choices[-1])]
        return [self.override(self.low), self.override(self.high)]


def parse_space(arguments: list[str], params: Any, loader: Any) -> tuple[list[str], list[Param]]:
    """Split ``arguments`` (+ ``hydra.sweeper.params``) into fixed overrides and searched :class:`Param`s.

    A key on the command line wins over the same key in ``params``. Errors are one-line :class:`ConfigError`s.
    """
    parser = OverridesParser.create(config_loader=loader)
    raw: Any = OmegaConf.to_container(params) if isinstance(params, DictConfig) else dict(params or {})
    given = [f"{k}={v}" for k, v in _flat(raw).items()]
    parsed_cli = parser.parse_overrides(list(arguments))
    cli_keys = {o.key_or_group for o in parsed_cli}
    parsed = [o for o in parser.parse_overrides(given) if o.key_or_group not in cli_keys] + parsed_cli
    fixed: list[str] = []
    space: list[Param] = []
    for override in parsed:
        if not override.is_sweep_override():
            fixed.append(str(override.input_line))
            continue
        space.append(_param(override))
    return fixed, space


def _flat(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{model: {alpha: v}}`` (``+hydra.sweeper.params.model.alpha=...``) as ``{"model.alpha": v}``."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _param(override: Any) -> Param:
    param = _make_param(override)
    param.written = override.get_value_string()
    return param


def _make_param(override: Any) -> Param:
    key = override.get_key_element()
    prefix = key[: len(key) - len(key.lstrip("+~"))]
    name = key[len(prefix):]
    value = override.value()
    written = override.get_value_string()
    tags = set(getattr(value, "tags", set()) or set())
    unknown = tags - {"log", "int"}
    if unknown:
        raise ConfigError(name, written, f"tags log and int only (not {', '.join(sorted(unknown))})")
    if isinstance(value, IntervalSweep):
        low, high = value.start, value.end
        if low is None or high is None or not low < high:
            raise ConfigError(name, written, "a non-empty interval(low, high) with low < high")
        if "log" in tags and low <= 0:
            raise ConfigError(name, written, "an interval with low > 0 on a log scale")
        kind = "int" if "int" in tags else "float"
        if kind == "int" and math.ceil(low) > math.floor(high):
            raise ConfigError(name, written, "an interval that holds an integer")
        return Param(name, kind, math.ceil(low) if kind == "int" else float(low),
                     math.floor(high) if kind == "int" else float(high), log="log" in tags, prefix=prefix)
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        if start is None or stop is None:
            raise ConfigError(name, written, "a range(start, stop, step) with its bounds")
        count = math.ceil((stop - start) / step) if step else 0
        if count <= 0:
            raise ConfigError(name, written, "a non-empty range(start, stop, step) (stop is excluded)")
        if count == 1:
            return Param(name, "choice", choices=[next(iter(override.sweep_string_iterator()))], prefix=prefix)
        is_int = all(isinstance(v, int) for v in (start, stop, step))
        high = start + step * (count - 1)
        return Param(name, "int" if is_int else "float", start, round(high, 12) if not is_int else high,
                     step=step, log="log" in tags, prefix=prefix)
    if isinstance(value, ChoiceSweep):
        choices = list(override.sweep_string_iterator())
        if not choices:
            raise ConfigError(name, written, "a choice of one value or more")
        if "log" in tags or "int" in tags:
            raise ConfigError(name, written, "no log/int tag on a choice (use interval or range)")
        return Param(name, "choice", choices=list(dict.fromkeys(choices)), prefix=prefix)
    raise ConfigError(name, written, "choice(...), range(...) or interval(...) (glob is not searchable)")


# ----- the objective -------------------------------------------------------------------------------------------------
def objectives(sweep_cfg: Any) -> list[str]:
    """``sweep.objective`` (else ``sweep.metric``) as a list of summary columns such as ``evaluation.Accuracy``."""
    raw = (sweep_cfg or {}).get("objective") or (sweep_cfg or {}).get("metric")
    if raw is None:
        raise ConfigError("sweep.objective", None, "a metric to optimise, e.g. evaluation.Accuracy or "
                          "saliency.Deletion_AUC (a list for several)")
    names = [str(x) for x in raw] if isinstance(raw, (list, tuple, ListConfig)) else [str(raw)]
    return [qualify(n) for n in names]


def qualify(name: str) -> str:
    """``Deletion_AUC`` -> ``saliency.Deletion_AUC``; an already qualified name is returned as is."""
    if "." in name and name.split(".", 1)[0] in STAGE_METRICS:
        return name
    for stage, known in _known_metrics().items():
        if name in known:
            return f"{stage}.{name}"
    return name


def _known_metrics() -> dict[str, tuple[str, ...]]:
    from xaitk_exp.metrics.summary import DIRECTIONS

    quality = tuple(DIRECTIONS)
    return {**STAGE_METRICS, "saliency": STAGE_METRICS["saliency"] + quality + tuple(f"{m}_std" for m in quality)}


def check_objectives(names: list[str], job: DictConfig) -> None:
    """Each objective is a column the job's stage logs (a one-line error naming what is allowed otherwise)."""
    stage = str(job.get("stage"))
    stages = STAGE_COLUMNS.get(stage, ())
    known = _known_metrics()
    allowed = [f"{s}.{m}" for s in stages for m in known[s]]
    metrics_on = bool(OmegaConf.select(job, "metrics.enabled", default=True))
    for name in names:
        prefix, _, metric = name.partition(".")
        if prefix in stages and metric in known[prefix]:
            if prefix == "saliency" and metric not in STAGE_METRICS["saliency"] and not metrics_on:
                raise ConfigError("sweep.objective", name, "a metric that is logged (metrics.enabled=false)")
            continue
        raise ConfigError("sweep.objective", name,
                          f"a metric that stage={stage} logs: {', '.join(allowed) or 'none'}")


def directions(names: list[str], given: Any) -> list[str]:
    """``minimize``/``maximize`` per objective: ``hydra.sweeper.direction`` when given, else the known direction."""
    from xaitk_exp.metrics.summary import DIRECTIONS

    if given is not None:
        raw = [str(x) for x in given] if isinstance(given, (list, tuple, ListConfig)) else [str(given)]
        words = {"min": "minimize", "minimize": "minimize", "max": "maximize", "maximize": "maximize"}
        if len(raw) != len(names) or any(d not in words for d in raw):
            raise ConfigError("hydra.sweeper.direction", given,
                              f"minimize or maximize, one per objective ({len(names)}: {', '.join(names)})")
        return [words[d] for d in raw]
    out = []
    for name in names:
        metric = name.split(".", 1)[-1]
        base = metric[: -len("_std")] if metric.endswith("_std") else metric
        sign = -1 if metric in _MINIMISED or metric.endswith("_std") else DIRECTIONS.get(base, 1)
        if sign == 0:
            raise ConfigError("hydra.sweeper.direction", None,
                              f"minimize or maximize for {name}, a descriptive metric with no known direction")
        out.append("minimize" if sign < 0 else "maximize")
    return out

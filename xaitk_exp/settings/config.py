"""The run's settings as typed, frozen records, parsed and checked once per run (``settings.validate.validate``).

Each record mirrors a block of ``conf/config.yaml`` and says in a comment per field what it does. Its
``__post_init__`` checks the type and the range of every field and raises :class:`ConfigError` (one line: the key,
the value, what is allowed). The composed config is left as it is: its hashes decide run reuse and it is what a run
records, so the records are only what the code reads.

The types are checked here rather than by a Hydra structured config: OmegaConf coerces (``1`` into ``1.0`` for a
float field, which changes a config's hash; ``yes`` or ``1`` into ``true``), and a saved config of an older
version, which ``stage=reproduce`` replays, may lack keys or carry extra ones.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from xaitk_exp.errors import ConfigError
from xaitk_exp.schema import LEVELS, PREDICTED_CLASS_CONF, REPRODUCED_FROM, SQLITE_JOURNALS, STAGES
from xaitk_exp.settings.metrics import MetricSettings
from xaitk_exp.settings.nodes import to_dict
from xaitk_exp.settings.saliency import SaliencySettings

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

SPLITS = ("train", "test")
#: the ``task`` values: the names of the tasks in ``xaitk_exp/tasks/`` (``tests/test_tasks.py`` keeps them equal)
TASKS = ("classification", "detection")
#: ``task=auto`` (the default): classification, or detection for a MAITE model that answers with detections
TASK_AUTO = "auto"
SWEEP_MODES = ("auto", "max", "min")
_ORDER_BY = re.compile(r"[\w.`' ]+?( (ASC|DESC))?", re.IGNORECASE)


# ----- checks shared by the records -----------------------------------------------------------------------------------
def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_flag(key: str, v: Any) -> None:
    if not isinstance(v, bool):
        raise ConfigError(key, v, "true or false")


def check_int(key: str, v: Any, minimum: int | None = None) -> None:
    if not is_int(v):
        raise ConfigError(key, v, "an integer")
    if minimum is not None and v < minimum:
        raise ConfigError(key, v, f"an integer >= {minimum}")


def check_text(key: str, v: Any) -> None:
    """A string or null (a run id, a filter, a URI)."""
    if v is not None and not isinstance(v, str):
        raise ConfigError(key, v, "a string or null")


R = TypeVar("R", bound="DataclassInstance")  # a settings record


def from_node(cls: type[R], node: Any, key: str, **given: Any) -> R:
    """``cls`` built from a config mapping (``None``: all defaults) and the fields in ``given``. Missing keys take
    the field's default (saved configs of older versions lack some); keys the record does not know are left to
    whoever reads them."""
    node = {} if node is None else to_dict(node)
    if not isinstance(node, Mapping):
        raise ConfigError(key, node, f"a mapping with keys {', '.join(f.name for f in fields(cls))}")
    kwargs = dict(given)
    for f in fields(cls):
        if f.name not in node or f.name in given:
            continue
        nested = f.default_factory if f.default_factory is not MISSING else None
        if nested is not None and is_dataclass(nested):
            kwargs[f.name] = from_node(nested, node[f.name], f"{key}.{f.name}" if key else f.name)
        else:
            kwargs[f.name] = node[f.name]
    return cls(**kwargs)


# ----- the blocks of conf/config.yaml ---------------------------------------------------------------------------------
#: ``evaluation.num_images: auto`` for a model trained here (the first 20 test images get a run each)
AUTO_NUM_IMAGES = 20
def trained_here(model: Any) -> bool:
    """True when the train stage fits the ``model`` node's estimator here (scikit-learn: no ``model.source``, no
    ``model.uri``); False for a model made elsewhere (any registered source, ``pretrained``): no train split, every
    image is evaluated. The same rule as the sources' ``trained_here`` in ``xaitk_exp.models.registry``."""
    model = to_dict(model) if model is not None else {}
    return not (isinstance(model, Mapping) and (model.get("source") or model.get("uri")))


def resolved_num_images(value: Any, model: Any) -> Any:
    """``evaluation.num_images`` with ``auto`` resolved: 20 for a model trained here, None (every image of the
    split) for a model made elsewhere; any other value unchanged."""
    if value != "auto":
        return value
    return AUTO_NUM_IMAGES if trained_here(model) else None


@dataclass(frozen=True)
class EvaluationSettings:
    num_images: int | None = AUTO_NUM_IMAGES  # one run per image, the first N of the split (>= 1); None: every image
    split: str = "test"  # test | train

    def __post_init__(self) -> None:
        if self.num_images is not None:
            check_int("evaluation.num_images", self.num_images, 1)
        if self.split not in SPLITS:
            raise ConfigError("evaluation.split", self.split, f"one of {', '.join(SPLITS)}")


@dataclass(frozen=True)
class QuerySettings:
    filter: str | None = None  # raw MLflow filter on the evaluation's image runs
    min_conf: float | None = None  # shortcut: metrics.Predicted_class_conf >= value, a confidence in [0, 1]
    predicted_class: Any = None  # shortcut: tags.Predicted_class = value
    gt_class: Any = None  # shortcut: tags.GT_class = value
    order_by: str | None = f"metrics.{PREDICTED_CLASS_CONF} DESC"  # '<entity>.<name> [ASC|DESC]'
    max_results: int = 1  # images explained (>= 1)
    min_score: float | None = None  # task=detection: explain an image's detections scoring at least this, in [0, 1]
    label: Any = None  # task=detection: explain only detections of this class (its name, or its index)

    def __post_init__(self) -> None:
        check_text("query.filter", self.filter)
        if self.min_conf is not None and not (is_number(self.min_conf) and 0 <= self.min_conf <= 1):
            raise ConfigError("query.min_conf", self.min_conf, "a confidence in [0, 1]")
        if self.min_score is not None and not (is_number(self.min_score) and 0 <= self.min_score <= 1):
            raise ConfigError("query.min_score", self.min_score, "a detection score in [0, 1]")
        if self.label is not None and (isinstance(self.label, bool) or not isinstance(self.label, (str, int))):
            raise ConfigError("query.label", self.label, "a class name or a class index")
        if self.order_by is not None and not _ORDER_BY.fullmatch(str(self.order_by)):
            raise ConfigError("query.order_by", self.order_by, "'<metrics|params|tags|attributes>.<name> [ASC|DESC]'")
        check_int("query.max_results", self.max_results, 1)


@dataclass(frozen=True)
class MapSettings:
    top_k: int | None = None  # classes whose maps are kept; None (auto): every class up to 20, else 5; 0: every class

    KEY: ClassVar[str] = "maps.top_k"

    def __post_init__(self) -> None:
        if self.top_k == "auto":  # type: ignore[comparison-overlap]  # a config may say auto
            object.__setattr__(self, "top_k", None)
        elif self.top_k is not None and not (is_int(self.top_k) and self.top_k >= 0):
            raise ConfigError(self.KEY, self.top_k, "auto, 0 (every class) or a positive number of classes")


@dataclass(frozen=True)
class SweepSettings:
    metric: str | None = None  # rank a multirun's summary by this column
    mode: str = "auto"  # auto (the metric's known direction, else max) | max | min
    prepare_upstream: bool = True  # run a train/evaluation that several jobs share once, before they start
    lookup_reused: bool = True  # a relaunch whose jobs all have FINISHED runs looks them up in one process
    objective: Any = None  # hydra/sweeper=optuna: the summary column(s) to optimise (a name or a list)
    trial: int | None = None  # set by the optuna sweeper: the trial's number, tagged on its runs
    stop_after: str | None = None  # set by the optuna sweeper: stage=all stops after this stage (its objective's)

    def __post_init__(self) -> None:
        check_text("sweep.metric", self.metric)
        if self.mode not in SWEEP_MODES:
            raise ConfigError("sweep.mode", self.mode, f"one of {', '.join(SWEEP_MODES)}")
        check_flag("sweep.prepare_upstream", self.prepare_upstream)
        check_flag("sweep.lookup_reused", self.lookup_reused)
        if self.trial is not None:
            check_int("sweep.trial", self.trial, 0)
        if self.stop_after not in (None, "train", "evaluation"):
            raise ConfigError("sweep.stop_after", self.stop_after, "train, evaluation or null")


@dataclass(frozen=True)
class HttpSettings:
    timeout: float | None = 20  # seconds MLflow waits for a tracking server's answer
    max_retries: int | None = 2  # retries of a request the server did not answer
    backoff_factor: float | None = 1  # growth of the wait between retries

    def __post_init__(self) -> None:
        if self.timeout is not None and not (is_number(self.timeout) and self.timeout > 0):
            raise ConfigError("tracking.http.timeout", self.timeout, "a positive number of seconds or null")
        if self.max_retries is not None:
            check_int("tracking.http.max_retries", self.max_retries, 0)
        if self.backoff_factor is not None and not (is_number(self.backoff_factor) and self.backoff_factor >= 0):
            raise ConfigError("tracking.http.backoff_factor", self.backoff_factor, "a non-negative number or null")

    def environment(self) -> dict[str, str]:
        """The MLflow environment variables these bounds set (unset ones are left to MLflow)."""
        names = {
            "timeout": "MLFLOW_HTTP_REQUEST_TIMEOUT",
            "max_retries": "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
            "backoff_factor": "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
        }
        return {env: str(getattr(self, key)) for key, env in names.items() if getattr(self, key) is not None}


@dataclass(frozen=True)
class TrackingSettings:
    uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/outputs/mlflow.db
    artifact_root: str | None = None  # default for a SQLite store: mlartifacts/ beside the database
    sqlite_journal: str = SQLITE_JOURNALS[0]  # wal | delete (network disks)
    http: HttpSettings = field(default_factory=HttpSettings)  # bounds for a tracking server that does not answer

    def __post_init__(self) -> None:
        check_text("tracking.uri", self.uri)
        check_text("tracking.artifact_root", self.artifact_root)
        if self.sqlite_journal not in SQLITE_JOURNALS:
            raise ConfigError("tracking.sqlite_journal", self.sqlite_journal, " or ".join(SQLITE_JOURNALS))


@dataclass(frozen=True)
class LoggingSettings:
    level: str = "mid"  # an API level of schema.LEVEL_APIS: high, mid (the fluent mlflow.* API) or low

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ConfigError("logging.level", self.level, f"one of {', '.join(LEVELS)}")


@dataclass(frozen=True)
class Settings:
    """Everything a run reads from its config besides the constructor nodes (dataset, model, saliency's arguments),
    checked. Built by :func:`xaitk_exp.settings.validate.validate`; stages read it as ``ctx.settings``. The run ids
    are the ones configured: the runs a job finds or makes are handed on in the context (``ctx.train_run_id``)."""

    stage: str = "all"  # all | train | evaluation | saliency | reproduce
    task: str = TASK_AUTO  # what the model answers: auto | classification | detection (xaitk_exp/tasks/)
    seed: int = 0  # seeds the data split and every saliency algorithm (>= 0)
    force: bool = False  # rerun a stage even when a FINISHED run with the same config exists
    n_jobs: int = 1  # processes per stage (-1: every core, -2: all but one; never 0)
    chunk_size: int = 256  # images per predict_proba call in the black box (>= 1)
    progress: bool = True  # progress bars on stderr
    allow_targets: tuple[str, ...] = ()  # extra _target_ module prefixes to trust
    train_run_id: str | None = None  # evaluate this train run instead of the latest matching one
    evaluation_run_id: str | None = None  # explain images of this evaluation instead of the latest matching one
    update_run_id: str | None = None  # rewrite this saliency run for the newly selected image
    run_id: str | None = None  # stage=reproduce: the run to reproduce
    sweep_run_id: str | None = None  # set by the sweep callback: the sweep's parent run
    reproduced_from: str | None = None  # set by stage=reproduce on the config it replays: the run reproduced
    shard: int = 0  # this job's share of a stage's images (0 <= shard < shards), e.g. -m 'shard=range(0,4)' shards=4
    shards: int = 1  # shares a stage's images are split into (>= 1; 1: one process does them all)
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    query: QuerySettings = field(default_factory=QuerySettings)
    metrics: MetricSettings = field(default_factory=MetricSettings)
    maps: MapSettings = field(default_factory=MapSettings)
    sweep: SweepSettings = field(default_factory=SweepSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    saliency: SaliencySettings | None = None  # the algorithm node, checked without the data (None: no node)
    register: tuple[str, str | None] | None = None  # model.register as (name, alias), None when unset

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ConfigError("stage", self.stage, f"one of {', '.join(STAGES)}")
        if self.task not in (TASK_AUTO, *TASKS):
            raise ConfigError("task", self.task, f"one of {', '.join((TASK_AUTO, *TASKS))}")
        check_int("seed", self.seed, 0)
        check_int("n_jobs", self.n_jobs)
        if self.n_jobs == 0:
            raise ConfigError("n_jobs", 0, "a positive integer, or -1 for every core")
        check_int("chunk_size", self.chunk_size, 1)
        check_int("shards", self.shards, 1)
        if not (is_int(self.shard) and 0 <= self.shard < self.shards):
            raise ConfigError("shard", self.shard, f"an integer k with 0 <= k < shards ({self.shards})")
        for key in ("force", "progress"):
            check_flag(key, getattr(self, key))
        targets = self.allow_targets
        if not isinstance(targets, (list, tuple)) or not all(isinstance(t, str) for t in targets):
            raise ConfigError("allow_targets", targets, "a list of module prefixes, e.g. [my_package.models]")
        for prefix in targets:  # a blank prefix ('' or '  ') would trust every module: one line naming the key
            prefix_parts(prefix)
        object.__setattr__(self, "allow_targets", tuple(targets))
        for key in ("train_run_id", "evaluation_run_id", "update_run_id", "run_id", "sweep_run_id", REPRODUCED_FROM):
            value = getattr(self, key)  # a run id Hydra read as a number stays the id it is
            object.__setattr__(self, key, None if value is None or value == "" else str(value))

    @property
    def processes(self) -> int:
        """``n_jobs`` as a number of processes (joblib's convention: -1 every core, -2 all but one)."""
        if self.n_jobs > 0:
            return self.n_jobs
        from joblib import cpu_count

        return max(1, int(cpu_count()) + 1 + self.n_jobs)


def tracking_settings(cfg: Any) -> TrackingSettings:
    """The checked ``tracking`` block of a config, for code that runs before (or beside) a job: the sweep's launcher."""
    return from_node(TrackingSettings, cfg.get("tracking"), "tracking")


def prefix_parts(prefix: object) -> tuple[str, ...]:
    """An ``allow_targets`` prefix as dotted components (``"mylab."`` -> ``("mylab",)``). A blank prefix, or one with
    an empty component (``"a..b"``, ``".x"``), would trust everything or nothing predictable: one line naming
    ``allow_targets``."""
    text = str(prefix).strip()
    parts = tuple(text[:-1].split(".") if text.endswith(".") else text.split("."))
    if not text or any(not p.isidentifier() for p in parts):
        raise ConfigError(
            "allow_targets", prefix,
            "module prefixes made of dotted Python names, such as mylab.models. (a blank prefix would trust "
            "every module)",
        )
    return parts

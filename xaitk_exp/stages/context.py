"""What the stages share within one job: the config, the tracker, the loaded data and the upstream results."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from xaitk_exp import schema
from xaitk_exp.data import ImageSplit
from xaitk_exp.errors import ConfigError, DataError, TrackingError
from xaitk_exp.models.registry import source_for
from xaitk_exp.models.sources import display_name, is_image_model
from xaitk_exp.security.targets import instantiate
from xaitk_exp.settings.config import TASK_AUTO, Settings, trained_here
from xaitk_exp.settings.hashes import stage_hash
from xaitk_exp.settings.nodes import to_dict
from xaitk_exp.settings.validate import validate
from xaitk_exp.stages.provenance import config_texts, git_commit
from xaitk_exp.tracking.model_io import load_model
from xaitk_exp.tracking.tracker import Tracker

if TYPE_CHECKING:
    from xaitk_exp.tasks import Task

LOGGED_MODEL_ID = "logged_model_id"  #: ctx.results key: the logged model the job trained or loaded
MODEL_REF = "model_ref"  #: ctx.results key: the registered version it was registered as or loaded from


@dataclass
class Context:
    """State handed from stage to stage. ``model`` and the run ids are filled in as stages finish."""

    cfg: DictConfig
    tracker: Tracker
    output_dir: Path
    overrides: list[str] = field(default_factory=list)
    model: Any = None
    train_run_id: str | None = None
    train_exp_id: str | None = None
    evaluation_run_id: str | None = None
    results: dict[str, Any] = field(default_factory=dict)
    pinned: dict[str, str] = field(default_factory=dict)  # run ids a stage fixed after the check (pin_train_run)

    @cached_property
    def settings(self) -> Settings:
        """``cfg`` checked into typed settings, on first use (``app.run`` asks first, before anything opens)."""
        return validate(self.cfg)

    def pin_train_run(self, run_id: str) -> None:
        """Fix ``train_run_id`` after the check, as if it had been configured: stages read it from ``settings`` and
        the run's recorded config carries it. The config itself stays as composed (read-only from here on)."""
        self.settings = replace(self.settings, train_run_id=run_id)
        self.pinned["train_run_id"] = run_id

    @property
    def extra_allowed(self) -> list[str]:
        return list(self.settings.allow_targets)

    @property
    def processes(self) -> int:
        """``n_jobs`` as a number of processes (-1: every core)."""
        return self.settings.processes

    @cached_property
    def task(self) -> Task:
        """The task ``task`` selects (``auto``: inferred from a MAITE model): what the stages record and which
        algorithms apply."""
        from xaitk_exp.tasks import task_named

        name = self.settings.task
        if name == TASK_AUTO:  # a MAITE model that answers with detections is a detector (models/detector.py)
            name = "classification"
            if is_image_model(self.cfg.model) and self.cfg.model.get("source") == "maite":
                if not is_image_model(self.model):
                    self.model = self.build_model()
                name = str(getattr(self.model, "task", name))
        return task_named(name)

    def check_saliency_fits(self) -> None:
        """Refuse a saliency generator or quality metric the task has none of, and a saliency window or grid larger
        than the images, once per job (before the first run opens)."""
        if not self.__dict__.get("_saliency_fits") and self.settings.saliency is not None:
            self.task.check_saliency(to_dict(self.cfg.saliency), tuple(self.extra_allowed))
            self.task.check_metrics(self.settings.metrics)
            self.settings.saliency.check_fits(tuple(self.split.image_shape[:2]))
            self.__dict__["_saliency_fits"] = True

    # ----- data ----------------------------------------------------------------------------------------------
    @property
    def fits_model(self) -> bool:
        """True when the train stage fits the model here (scikit-learn); False for a model made elsewhere (ONNX,
        PyTorch, MAITE, a pretrained MLflow model), which is evaluated on every image of the dataset."""
        return trained_here(self.cfg.model)

    @cached_property
    def split(self) -> ImageSplit:
        from xaitk_exp.data.base import check_test_size

        node: Any = self.cfg.dataset
        if not self.fits_model and "test_size" in node:  # nothing to train: every image is a test image
            node = to_dict(node)
            check_test_size(node["test_size"])
            if self.settings.evaluation.split == "train":
                raise ConfigError("evaluation.split", "train", "test: a model not trained here has no train split "
                                  "(every image of the dataset is a test image)")
            node["test_size"] = None
        loader = instantiate(node, "dataset", self.extra_allowed)
        split: ImageSplit = loader.load()
        return split

    @property
    def dataset_name(self) -> str:
        """``dataset.name``, else the name of the dataset's folder (``dataset.path``), else the loaded split's name
        (a MAITE dataset's metadata id)."""
        name = self.cfg.dataset.get("name")
        if name:
            return str(name)
        path = self.cfg.dataset.get("path")
        if path:
            return Path(str(path)).name or str(path)
        return self.split.name

    # ----- model ---------------------------------------------------------------------------------------------
    @property
    def pretrained_uri(self) -> str | None:
        uri: str | None = self.cfg.model.get("uri")
        return uri

    def build_model(self) -> Any:
        if is_image_model(self.cfg.model):  # model=onnx|torch|maite: loaded from its file or factory
            from xaitk_exp.models.pipeline import build

            return build(self)
        source = source_for(to_dict(self.cfg.model))  # a scikit-learn estimator, unfitted and checked
        if source.load is None:
            return self.load_pretrained()
        return source.load(to_dict(self.cfg.model), self.extra_allowed)

    @property
    def model_class(self) -> str:
        if is_image_model(self.cfg.model):  # model.name, else the file's stem (e.g. 'resnet18 - Train')
            return display_name(self.cfg.model)
        if self.model is not None:
            return type(self.model).__name__
        if self.pretrained_uri:
            return type(self.load_pretrained()).__name__
        target = str(self.cfg.model.get("_target_", ""))
        return target.rsplit(".", 1)[-1]

    def load_pretrained(self) -> Any:
        if self.model is None:
            # a models:/ URI is checked against the registry first (one line listing what exists); an alias is
            # loaded as the version it names now, and that version is what the runs record (evaluation's tags)
            uri = str(self.pretrained_uri)
            ref = self.tracker.model_ref(uri)
            if ref is not None:
                self.results[MODEL_REF] = ref
                self.results[LOGGED_MODEL_ID] = ref.model_id
                uri = f"models:/{ref.name}/{ref.version}" if ref.version else uri
            self.model = load_model(uri, self.tracker.uri, bool(self.cfg.model.get("allow_pickle")))
            self.train_run_id, self.train_exp_id = self._pretrained_source(ref.run_id if ref else None)
        return self.model

    def _pretrained_source(self, run_id: str | None = None) -> tuple[str | None, str | None]:
        uri = str(self.pretrained_uri)
        if uri.startswith("runs:/"):
            run_id = uri[len("runs:/") :].split("/")[0]
        if run_id is None:
            return None, None
        run = self.tracker.get_run(run_id)
        return run_id, run.info.experiment_id

    @property
    def framework(self) -> tuple[str, str]:
        """The model's library and its version, for the experiments' ``framework`` and ``version`` tags."""
        return source_for(to_dict(self.cfg.model)).framework_version()

    def experiment_name(self, suffix: str) -> str:
        """``<Model class> - <suffix>``, e.g. ``MLPClassifier - Train``."""
        return schema.experiment_name(self.model_class, suffix)

    # ----- hashes: the config that matters to each stage ---------------------------------------------------------
    def hash_for(self, stage: str) -> str:
        """This config's hash for ``stage`` (:func:`xaitk_exp.settings.hashes.stage_hash`)."""
        return stage_hash(self.cfg, stage, lambda: tuple(self.split.image_shape))

    def find_latest(self, stage_experiment: str, stage: str, extra_filter: str = "") -> Any:
        """The latest FINISHED run of ``stage`` whose recorded config hash equals this config's."""
        exp_id = self.tracker.experiment(self.experiment_name(stage_experiment), create=False)
        if exp_id is None:
            return None
        flt = f"tags.{schema.CONFIG_HASH} = '{self.hash_for(stage)}' and attributes.status = 'FINISHED'"
        if extra_filter:
            flt += f" and {extra_filter}"
        runs = self.tracker.search([exp_id], flt, ["attributes.start_time DESC"], 1)
        return runs[0] if runs else None

    # ----- provenance --------------------------------------------------------------------------------------------
    def provenance_tags(self, stage: str) -> dict[str, str]:
        """Tags that say what produced a run (config hash, data fingerprint, code); computed once per stage."""
        cache = self.__dict__.setdefault("_provenance", {})
        if stage not in cache:
            cache[stage] = self._provenance_tags(stage)
        return dict(cache[stage])

    def _provenance_tags(self, stage: str) -> dict[str, str]:
        tags = {
            schema.CONFIG_HASH: self.hash_for(stage),
            schema.STAGE_TAG: stage,
            schema.MODEL: self.model_class,
            schema.DATA_FINGERPRINT: self.split.fingerprint(),
        }
        if git_commit():
            tags[schema.GIT_COMMIT] = str(git_commit())
        settings = self.settings
        if settings.sweep_run_id:
            tags[schema.SWEEP_RUN_ID] = settings.sweep_run_id
        if settings.sweep.trial is not None:  # an optuna trial's number
            tags[schema.TRIAL_NUMBER] = str(settings.sweep.trial)
        if settings.reproduced_from:  # set by stage=reproduce on the replayed config
            tags[schema.REPRODUCED_FROM] = settings.reproduced_from
        return tags

    def record_config(self, run_id: str) -> None:
        """The resolved config, the overrides and the package versions, as artifacts of ``run_id`` (one upload)."""
        with tempfile.TemporaryDirectory() as tmp:
            self.write_config(Path(tmp))
            self.tracker.log_artifacts(run_id, tmp)

    def write_config(self, folder: Path) -> None:
        """Write ``config/config.yaml``, ``config/overrides.yaml`` and ``config/environment.json`` under ``folder``."""
        target = folder / "config"
        target.mkdir(parents=True, exist_ok=True)
        for name, text in self._config_texts.items():
            (target / name).write_text(text)

    def config_texts(self) -> dict[str, str]:
        """The files :meth:`write_config` writes: name -> text."""
        return dict(self._config_texts)

    @cached_property
    def _config_texts(self) -> dict[str, str]:
        """The three config files' contents, rendered once per job."""
        return config_texts(self.cfg, self.overrides, self.pinned)

    def check_image_shape(self, model: Any) -> None:
        if is_image_model(model):  # one black image through the model; class names against the dataset's
            from xaitk_exp.models.pipeline import check

            return check(self, model)
        expected = getattr(model, "n_features_in_", None)
        shape = self.split.image_shape
        size = 1
        for d in shape:
            size *= d
        if expected is not None and expected != size:
            raise DataError(
                f"dataset={self.dataset_name!r}: images of shape {list(shape)} ({size} values) do not fit the model, "
                f"which expects {expected} values per image; set dataset.shape to match the model"
            )

    def get_run_in(self, run_id: str, key: str, experiment_name: str, finished: bool = True) -> Any:
        try:
            run = self.tracker.get_run(run_id)
        except TrackingError as exc:
            raise ConfigError(key, run_id, f"the id of a run in experiment {experiment_name!r}") from exc
        exp_id = self.tracker.experiment(experiment_name, create=False)
        if run.info.experiment_id != exp_id:
            raise ConfigError(key, run_id, f"the id of a run in experiment {experiment_name!r}")
        if finished and run.info.status != "FINISHED":
            raise ConfigError(key, run_id, f"a FINISHED run (this one is {run.info.status})")
        return run



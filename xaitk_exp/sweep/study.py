"""Where an optuna study lives and how it is opened: SQLite beside a local tracking store, a schema of the tracking
database on PostgreSQL, or memory; continued by name, with a sampler re-seeded past the trials it already has."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import re
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from xaitk_exp.errors import ConfigError
from xaitk_exp.security.redact import redact_uri
from xaitk_exp.tracking.stores import resolve_tracking

OPTUNA_DB = "optuna.db"


OPTUNA_SCHEMA = "optuna"


def resolve_storage(config: DictConfig, given: Any) -> str:
    """``hydra.sweeper.storage`` if given, else beside the tracking store: ``optuna.db`` next to a SQLite store,
    the same database server for a database URI, ``outputs/optuna.db`` for a tracking server."""
    if given:
        return str(given)
    uri, _ = resolve_tracking(config)
    if uri.startswith("sqlite:"):
        path = Path(uri.split("sqlite:///", 1)[-1].split("?", 1)[0])
        return f"sqlite:///{path.resolve().parent / OPTUNA_DB}"
    if uri.startswith("postgresql"):  # same database, own schema: Optuna and MLflow both keep an alembic_version
        return _postgres_schema(uri, OPTUNA_SCHEMA)
    return f"sqlite:///{(Path('outputs') / OPTUNA_DB).resolve()}"


def _postgres_schema(uri: str, schema: str) -> str:
    """``uri`` with psycopg 3 as the driver (the one installed) and ``schema`` first on the search path."""
    scheme, rest = uri.split("://", 1)
    if scheme == "postgresql" and importlib.util.find_spec("psycopg2") is None:
        scheme = "postgresql+psycopg"
    sep = "&" if "?" in rest else "?"
    return f"{scheme}://{rest}{sep}options=-csearch_path%3D{schema}"


def _ensure_schema(storage: str) -> None:
    """Create the schema a PostgreSQL storage URL puts first on its search path, if it is not there yet."""
    found = re.search(r"options=-csearch_path%3D(\w+)", storage)
    if not storage.startswith("postgresql") or not found:
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(storage)
    try:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f'CREATE SCHEMA IF NOT EXISTS "{found.group(1)}"'))
    finally:
        engine.dispose()


def open_study(config: DictConfig, storage: str, sweeper: Any, names: list[str], dirs: list[str]) -> Any:
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)  # our own one line per trial instead
    if storage.startswith("sqlite:///"):
        Path(storage[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    name = sweeper.get("study_name") or f"xaitk-exp {Path(sweep_dir_of(config)).name}"
    try:
        if storage == "memory":  # not kept: the study ends with this launch
            rdb = None
        else:
            _ensure_schema(storage)
            rdb = optuna.storages.RDBStorage(storage)
    except Exception as exc:
        raise ConfigError("hydra.sweeper.storage", redact_uri(storage),
                          f"a database URL Optuna can open ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    existing = None
    try:
        existing = optuna.load_study(study_name=name, storage=rdb) if rdb is not None else None
    except KeyError:
        pass
    if existing is not None:
        old_names = existing.user_attrs.get("objectives")
        old_dirs = [d.name.lower() for d in existing.directions]
        if old_names and old_names != names or old_dirs != dirs:
            raise ConfigError("hydra.sweeper.study_name", name,
                              f"a new name, or the same objective as the stored study ({','.join(old_names or [])} "
                              f"{','.join(old_dirs)}; this launch: {','.join(names)} {','.join(dirs)})")
    sampler = _sampler(sweeper.get("sampler"), 0 if existing is None else len(existing.trials))
    study = optuna.create_study(study_name=name, storage=rdb, sampler=sampler, directions=dirs, load_if_exists=True)
    study.set_user_attr("objectives", names)
    where = redact_uri(storage) if "://" in storage else "memory (not kept)"
    verb = f"continuing ({len(study.trials)} trials so far)" if existing is not None else "new"
    print(f"[search] study '{name}' {verb} in {where}; objective {', '.join(f'{n} ({d})' for n, d in zip(names, dirs, strict=True))}")
    return study


def _sampler(cfg: Any, offset: int) -> Any:
    """``hydra.sweeper.sampler`` (an ``optuna.samplers`` class); a seeded sampler continuing a study is seeded
    ``seed + trials so far``, so that it proposes new points instead of replaying the first launch's."""
    if not cfg:
        return None
    node: Any = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    target = str(node.pop("_target_", ""))
    module, _, cls = target.rpartition(".")
    if not module.startswith("optuna.samplers"):
        raise ConfigError("hydra.sweeper.sampler._target_", target, "a class of optuna.samplers, e.g. "
                          "optuna.samplers.TPESampler")
    try:
        klass = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError):
        raise ConfigError("hydra.sweeper.sampler._target_", target, "a class of optuna.samplers") from None
    if node.get("seed") is not None:
        node["seed"] = int(node["seed"]) + offset
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # some samplers' options are marked experimental
            return klass(**node)
    except TypeError as exc:
        raise ConfigError("hydra.sweeper.sampler", node, f"arguments {cls} accepts ({exc})") from None


def sweep_dir_of(config: DictConfig) -> str:
    return str(Path(str(config.hydra.sweep.dir)).resolve())

"""Checks of the command line's overrides before Hydra composes them: a key Hydra cannot apply, a key added with ``+``
that nothing reads, a sweep whose jobs could not compose. Each gives one line naming the key, the value and what is
allowed, where Hydra would print several lines or accept the override silently."""

from __future__ import annotations

import difflib
import re

from omegaconf import DictConfig

from xaitk_exp.app import compose_config

GROUPS = ("dataset", "model", "saliency", "logging")

_NO_COMPOSE_FLAGS = (
    "-m", "--multirun", "-h", "--help", "--hydra-help", "--version", "-i", "--info", "-sc", "--shell-completion",
    "-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir",
)


def precheck_keys(argv: list[str]) -> str | None:
    """A one-line error for an override Hydra cannot apply (unknown key, bad syntax), or for a key added with ``+``
    (or ``++``) that nothing would read, else None. Hydra reports the first kind in several lines (exit 1) and
    accepts the second silently; composing once here names the closest valid key. A key may be added only under a
    node with a ``_target_`` (its constructor receives it). Single runs of the shipped config only."""
    if any(a.split("=", 1)[0] in _NO_COMPOSE_FLAGS for a in argv):
        return None
    overrides = [a for a in argv if "=" in a and not a.startswith("-") and not a.lstrip("+~").startswith("hydra")]
    if not overrides:
        return None
    from hydra.errors import HydraException

    try:
        compose_config(overrides)
    except HydraException as exc:
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        cause = exc.__cause__
        reason = f" ({str(cause).splitlines()[0]})" if cause is not None and str(cause).strip() else ""
        hints = [*_key_hints(overrides, first), "'xaitk-exp --cfg job' lists every key"]
        return f"{first}{reason}; {'; '.join(hints)}"
    return _unread_added_key(overrides)


_ABSENT = object()  # OmegaConf.select's default for a key that is not there (a null value is there)


def _override_key(token: str) -> tuple[str, str, str]:
    """``(prefix, key, value)`` of ``[+|++|~]key=value``."""
    key, _, value = token.partition("=")
    stripped = key.lstrip("+~")
    return key[: len(key) - len(stripped)], stripped, value


def _base_config(overrides: list[str], skip: str) -> DictConfig | None:
    """The shipped config composed with ``overrides`` minus those on key ``skip`` (None if that fails too)."""
    from hydra.errors import HydraException

    try:
        return compose_config([o for o in overrides if _override_key(o)[1] != skip])
    except HydraException:
        return None


def _config_keys(node: object, prefix: str = "") -> list[str]:
    """Every dotted key path of a composed config (sections and values)."""
    from omegaconf import DictConfig as _DictConfig

    out: list[str] = []
    if isinstance(node, _DictConfig):
        for k in node.keys():
            name = str(k)
            path = f"{prefix}.{name}" if prefix else name
            out.append(path)
            out += _config_keys(node._get_node(k), path)
    return out


def _closest_key(cfg: DictConfig, key: str) -> str | None:
    """The valid key nearest to ``key`` (difflib), preferring the same section."""
    keys = _config_keys(cfg)
    section = key.rpartition(".")[0]
    same = [k for k in keys if k.rpartition(".")[0] == section]
    for pool in (same, keys):
        found = difflib.get_close_matches(key, pool, n=1, cutoff=0.6)
        if found:
            return found[0]
    return None


def _constructor_node(cfg: DictConfig, key: str) -> str | None:
    """The nearest existing section above ``key`` if it has a ``_target_`` (its constructor receives free keys)."""
    from omegaconf import DictConfig as _DictConfig
    from omegaconf import OmegaConf

    parts = key.split(".")
    for n in range(len(parts) - 1, 0, -1):
        section = ".".join(parts[:n])
        node = OmegaConf.select(cfg, section, default=_ABSENT, throw_on_missing=False)
        if node is _ABSENT:
            continue
        return section if isinstance(node, _DictConfig) and "_target_" in node else None
    return None


def _key_hints(overrides: list[str], first_line: str) -> list[str]:
    """The closest valid key (and how to pass a constructor argument) for Hydra's "Could not override 'key'"."""
    match = re.match(r"Could not override '([^']+)'", first_line)
    cfg = _base_config(overrides, match.group(1)) if match else None
    if cfg is None or match is None:
        return []
    key = match.group(1)
    value = next((_override_key(o)[2] for o in overrides if _override_key(o)[1] == key), "")
    hints = []
    closest = _closest_key(cfg, key)
    if closest:
        hints.append(f"closest valid key: {closest}")
    section = _constructor_node(cfg, key)
    if section:
        hints.append(f"'+{key}={value}' passes a new argument to the {section} constructor")
    return hints


def _unread_added_key(overrides: list[str]) -> str | None:
    """A one-line error for a ``+key``/``++key`` that is not in the config and not under a constructor's node."""
    added = [(p, k, v) for p, k, v in map(_override_key, overrides) if p in ("+", "++")]
    added = [(p, k, v) for p, k, v in added if "/" not in k and k not in GROUPS and "@" not in k]
    if not added:
        return None
    from omegaconf import OmegaConf

    keys = {k for _, k, _ in added}
    cfg = _base_config([o for o in overrides if _override_key(o)[1] not in keys], "")
    if cfg is None:
        return None
    for prefix, key, value in added:
        if OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False) is not _ABSENT:
            continue  # '++' on an existing key overrides it
        if _constructor_node(cfg, key):
            continue
        closest = _closest_key(cfg, key)
        sections = [k for k in ("dataset", "model", "saliency") if _constructor_node(cfg, f"{k}.x")]
        return (
            f"{prefix}{key}={value}: no stage reads '{key}'"
            + (f"; closest valid key: {closest}" if closest else "")
            + f" ('+' adds constructor arguments only, under {', '.join(sections)}; "
            "'xaitk-exp --cfg job' lists every key)"
        )
    return None


_MAX_SWEEP_CHECKS = 64  # job configs composed per sweep (about 0.1 s each); a larger grid checks its first ones


def precheck_sweep(argv: list[str]) -> tuple[str | None, list[str]]:
    """``(error, argv)`` for a ``-m`` sweep: each job's config is composed here (its options of the swept config
    groups, each other swept key at its first value) and the first that fails is one line naming the job, the key
    and the closest valid one (Hydra would stop in several lines, or fail every job).

    Hydra composes a sweep's first config from each group's *default*, before any job: ``-m saliency=rise,mc_rise
    saliency.n=100`` stops there (the default ``sliding_window`` has no ``n``) although every job has it. When every
    job composes, such a key is passed as ``++key=value``: the jobs get it as typed, and the first config, which runs
    nothing, gets it added."""
    if not any(a in ("-m", "--multirun") for a in argv) or any(
        a.split("=", 1)[0] in _NO_COMPOSE_FLAGS and a not in ("-m", "--multirun") for a in argv
    ):
        return None, argv
    from itertools import product

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType
    from hydra.errors import HydraException

    tokens = [a for a in argv if "=" in a and not a.startswith("-") and not a.lstrip("+~").startswith("hydra")]
    try:
        parsed = OverridesParser.create().parse_overrides(tokens)
        swept = {o.key_or_group: [str(v) for v in o.sweep_string_iterator()]
                 for o in parsed if o.is_sweep_override() and o.key_or_group in GROUPS}
        firsts = [(o.get_key_element(), str(next(iter(o.sweep_string_iterator()))))
                  for o in parsed if o.is_sweep_override() and o.key_or_group not in GROUPS]
    except Exception:  # a syntax error, a glob over a group: Hydra's own to report
        return None, argv
    fixed = [str(o.input_line) for o in parsed if not o.is_sweep_override()]
    fixed += [f"{key}={value}" for key, value in firsts if not any(ch in value for ch in " ,'\"")]
    for choices in list(product(*([f"{g}={c}" for c in cs] for g, cs in swept.items())))[:_MAX_SWEEP_CHECKS]:
        message = precheck_keys([*fixed, *choices])
        if not message:
            continue
        job = " ".join(choices)
        match = re.match(r"Could not override '([^']+)'", message)
        key = match.group(1) if match else ""
        group = key.split(".")[0]
        others = [c for c in choices if not c.startswith(f"{group}=")]
        if group in swept and any(precheck_keys([*fixed, *others, f"{group}={c}"]) is None for c in swept[group]):
            # a key some options of a swept group have and this one lacks
            given = next((a for a in fixed if _override_key(a)[1] == key), key)
            return (f"{given}: the sweep's job '{job}' has no key '{key}'; sweep only options that have it "
                    f"('xaitk-exp {job} --cfg job' lists that job's keys)"), argv
        return (f"the sweep's job '{job}': {message}" if choices else message), argv
    inside = {str(o.input_line) for o in parsed if not o.is_sweep_override() and o.type == OverrideType.CHANGE
              and "." in o.key_or_group and o.key_or_group.split(".")[0] in swept}
    if not inside:
        return None, argv
    try:
        compose_config([str(o.input_line) for o in parsed if not o.is_sweep_override()])
        return None, argv  # the groups' defaults have these keys too: Hydra's first config composes as typed
    except HydraException:
        return None, [f"++{a}" if a in inside else a for a in argv]

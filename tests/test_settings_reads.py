"""Typed settings are the only way in: outside ``settings/`` (which builds them), ``cli.py`` (which must speak about a
config that failed its check) and ``stages/reproduce.py`` (which replays a saved config), the package reads from a
composed config only the constructor nodes (``dataset``, ``model``, ``saliency``) and never writes to it.

The scan is of the source's syntax tree: a config expression is a name ``cfg`` / ``*_cfg``, an attribute ``.cfg``
(``ctx.cfg``, ``self.cfg``) or a local name assigned from one (``c = self.cfg``); a read of a run setting is
``<config>.<key>``, ``<config>.get("<key>")``, ``<config>["<key>"]`` or ``OmegaConf.select(<config>, "<key>...")``.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from dataclasses import fields
from pathlib import Path

from xaitk_exp import schema
from xaitk_exp.settings.config import Settings

ROOT = Path(__file__).resolve().parents[1]
CONSTRUCTORS = {"dataset", "model", "saliency"}
EXEMPT = ("settings/", "cli.py", "stages/reproduce.py")


def setting_keys() -> set[str]:
    """The run settings: every ``Settings`` field and every top-level key of ``conf/config.yaml`` besides the
    constructor nodes, the defaults list and Hydra's node (plus the key stage=reproduce adds to a replayed config)."""
    text = (ROOT / "xaitk_exp" / "conf" / "config.yaml")
    text = text if text.exists() else ROOT / "conf" / "config.yaml"
    top = set(re.findall(r"^([A-Za-z_]\w*):", text.read_text(), re.M))
    keys = (top | {f.name for f in fields(Settings)} | {schema.REPRODUCED_FROM}) - CONSTRUCTORS
    return keys - {"defaults", "hydra"}


def _is_config(node: ast.AST, aliases: set[str]) -> bool:
    if isinstance(node, ast.Name):
        return node.id == "cfg" or node.id.endswith("_cfg") or node.id in aliases
    return isinstance(node, ast.Attribute) and node.attr == "cfg"


def _key(node: ast.AST | None) -> str | None:
    return node.value.split(".")[0] if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _aliases(scope: ast.AST) -> set[str]:
    """Local names a scope binds to a config expression (``c = ctx.cfg``; ``cfg, tracker = ctx.cfg, ctx.tracker``)."""
    names: set[str] = set()
    for node in ast.walk(scope):
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            pairs = [(target, node.value)]
            if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                pairs = list(zip(target.elts, node.value.elts, strict=False))
            names |= {t.id for t, v in pairs if isinstance(t, ast.Name) and _is_config(v, names)}
    return names


def raw_reads(source: str, keys: set[str]) -> list[tuple[int, str]]:
    """``(line, what)`` for each read of a run setting from a config, and each write to a config, in ``source``."""
    tree = ast.parse(source)
    found: list[tuple[int, str]] = []
    scopes = [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))]
    for scope in scopes:  # a nested node is seen once per enclosing scope: the set keeps one finding
        aliases = _aliases(scope)
        for node in ast.walk(scope):
            what = None
            if isinstance(node, ast.Attribute) and _is_config(node.value, aliases):
                if isinstance(node.ctx, (ast.Store, ast.Del)):
                    what = f"writes cfg.{node.attr}"
                elif node.attr in keys:
                    what = f"reads cfg.{node.attr}"
            elif isinstance(node, ast.Subscript) and _is_config(node.value, aliases):
                key = _key(node.slice)
                if isinstance(node.ctx, (ast.Store, ast.Del)):
                    what = f"writes cfg[{key!r}]"
                elif key in keys:
                    what = f"reads cfg[{key!r}]"
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                func, args = node.func, node.args
                if _is_config(func.value, aliases) and func.attr in ("get", "pop", "setdefault") and args:
                    key = _key(args[0])
                    what = f"reads cfg.{func.attr}({key!r})" if key in keys else None
                elif func.attr in ("select", "update") and isinstance(func.value, ast.Name) \
                        and func.value.id == "OmegaConf" and len(args) >= 2 and _is_config(args[0], aliases):
                    key = _key(args[1])
                    what = f"OmegaConf.{func.attr}(cfg, {key!r})" if func.attr == "update" or key in keys else None
            if what:
                found.append((node.lineno, what))
    return sorted(set(found))


def test_scanner_finds_each_kind_of_raw_read():
    keys = {"chunk_size", "query", "train_run_id", "sweep"}
    source = '''
def stage(ctx, job_cfg):
    a = ctx.cfg.chunk_size
    b = job_cfg.get("query")
    c = ctx.cfg["train_run_id"]
    d = OmegaConf.select(ctx.cfg, "sweep.trial")
    ctx.cfg.train_run_id = "x"

def aliased(self):
    c = self.cfg
    return c.query

def unpacked(ctx):
    cfg, tracker = ctx.cfg, ctx.tracker
    return tracker, cfg.get("sweep")

def fine(ctx, node):
    uri = OmegaConf.select(ctx.cfg, "model.uri")
    return ctx.cfg.dataset, ctx.cfg.get("model"), ctx.settings.chunk_size, node.query, uri
'''
    found = raw_reads(source, keys)
    assert found == [
        (3, "reads cfg.chunk_size"),
        (4, "reads cfg.get('query')"),
        (5, "reads cfg['train_run_id']"),
        (6, "OmegaConf.select(cfg, 'sweep')"),
        (7, "writes cfg.train_run_id"),
        (11, "reads cfg.query"),
        (15, "reads cfg.get('sweep')"),
    ]


def test_setting_keys_cover_the_settings_and_not_the_constructor_nodes():
    keys = setting_keys()
    assert {"chunk_size", "query", "force", "train_run_id", "sweep", "tracking", "evaluation", "maps"} <= keys
    assert not keys & CONSTRUCTORS


def test_package_reads_run_settings_only_through_typed_settings():
    keys = setting_keys()
    offenders = []
    for path in sorted((ROOT / "xaitk_exp").rglob("*.py")):
        rel = path.relative_to(ROOT / "xaitk_exp").as_posix()
        if rel.startswith(EXEMPT):
            continue
        offenders += [f"{rel}:{line}: {what}" for line, what in raw_reads(path.read_text(), keys)]
    assert not offenders, "read ctx.settings instead of the config:\n" + "\n".join(offenders)


def test_every_settings_field_is_read_outside_settings():
    # a field checked and never read is a promise the code does not keep: read it (``settings.<field>``) or drop it
    read: set[str] = set()
    for path in (ROOT / "xaitk_exp").rglob("*.py"):
        if path.relative_to(ROOT / "xaitk_exp").as_posix().startswith("settings/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                owner = node.value
                if (isinstance(owner, ast.Name) and owner.id == "settings") or (
                        isinstance(owner, ast.Attribute) and owner.attr == "settings"):
                    read.add(node.attr)
    for name in list(read):  # a property of Settings (``processes``) reads the fields it is made of (``n_jobs``)
        prop = getattr(Settings, name, None)
        if isinstance(prop, property) and prop.fget is not None:
            source = ast.parse(textwrap.dedent(inspect.getsource(prop.fget)))
            read |= {n.attr for n in ast.walk(source) if isinstance(n, ast.Attribute)
                     and isinstance(n.value, ast.Name) and n.value.id == "self"}
    unread = {f.name for f in fields(Settings)} - read
    assert not unread, f"Settings fields never read outside settings/: {sorted(unread)}"

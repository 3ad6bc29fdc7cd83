"""The README's Layout section gives the rooms and docs/layout.md every module, so a reader finds each room; the
package's imports run down the layers it names, with no cycle between modules or rooms."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _layout() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Layout")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def test_layout_names_every_module_in_its_folder():
    # the README's Layout gives the rooms and links the module list, docs/layout.md
    assert "[docs/layout.md](docs/layout.md)" in _layout()
    layout = (ROOT / "docs" / "layout.md").read_text()
    rows: dict[str, str] = {}
    folder = None
    for line in layout.splitlines():
        head = line.split(" ", 1)[0]
        if head.endswith("/"):
            folder = head
        if folder:
            rows[folder] = rows.get(folder, "") + " " + line
    missing = []
    for path in sorted((ROOT / "xaitk_exp").rglob("*.py")):
        rel = path.relative_to(ROOT)
        folder_key = f"{rel.parent.as_posix()}/"
        if path.name == "__init__.py" and len(path.read_text().splitlines()) < 20:
            continue  # a package's __init__ only where it holds code of its own (a docstring and re-exports are not)
        if path.stem not in rows.get(folder_key, ""):
            missing.append(rel.as_posix())
    assert not missing, f"docs/layout.md does not name: {missing}"
    for group in sorted(p.name for p in (ROOT / "conf").iterdir() if p.is_dir() and p.name != "__pycache__"):
        assert f"{group}/" in rows.get("conf/", ""), f"docs/layout.md does not name conf/{group}/"


# ----- imports run down the layers, never in a circle ------------------------------------------------------------------
#: the package's rooms (a folder, or a module at the top), highest first. A room imports only rooms of its own tier or
#: below; within a tier the import graph must still be acyclic (viz reads metrics' names, never the reverse).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("cli", "overrides", "__main__", "teamserver"),  # entry points: argv, exit codes, the team server command
    ("sweep",),  # Hydra's callback and jobs: one app.run per job
    ("app",),  # run(cfg): what the CLI, the sweep and the tests call
    ("stages",),
    ("tasks",),  # what a model answers and what the stages record about it: classification (detection next)
    ("models", "metrics", "viz", "data", "detection"),
    ("tracking",),  # the tracker and its writers: the only room that talks to MLflow
    ("security", "parallel"),
    ("settings", "schema", "errors", "failures", "lazy"),  # the bottom: import nothing of the package above them
)


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def import_graph(package: Path) -> dict[str, set[str]]:
    """module -> the package's modules it imports, read from the source: top-level, function-level and
    ``TYPE_CHECKING`` imports alike. ``from p import name`` counts as importing ``p.name`` when that is a module."""
    root = package.parent
    files = {_module_name(f, root): f for f in package.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    parts = parts[: len(parts) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for name in names:
                while name and name not in files:  # `import a.b.c` where c is a function: the module a.b
                    name = name.rpartition(".")[0]
                if name and name != mod:
                    graph[mod].add(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``graph``: each strongly connected set of two or more nodes, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm (the graphs here are a few hundred nodes deep at most)
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def room(module: str) -> str:
    """``xaitk_exp.stages.saliency.image`` -> ``stages``; ``xaitk_exp.schema`` -> ``schema``; the package itself -> ''."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def rooms_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for mod, targets in graph.items():
        for t in targets:
            a, b = room(mod), room(t)
            if a and b and a != b:
                out.setdefault(a, set()).add(b)
    return out


def layer_violations(graph: dict[str, set[str]], layers: tuple[tuple[str, ...], ...] = LAYERS) -> list[str]:
    """``module -> module`` imports that go up the layers, and modules in no layer."""
    tier = {name: i for i, names in enumerate(layers) for name in names}
    bad = [f"{m}: its room is in no layer" for m in sorted(graph) if room(m) and room(m) not in tier]
    for mod in sorted(graph):
        for t in sorted(graph[mod]):
            a, b = room(mod), room(t)
            if a in tier and b in tier and tier[b] < tier[a]:
                bad.append(f"{mod} -> {t} ({a} is below {b})")
    return bad


def test_package_root_imports_nothing():
    # every `from xaitk_exp import schema` runs the package's __init__: it must not pull a room in
    assert not import_graph(ROOT / "xaitk_exp")["xaitk_exp"]


def test_no_import_cycles_between_modules_or_rooms():
    graph = import_graph(ROOT / "xaitk_exp")
    assert not cycles(graph), f"module import cycles: {cycles(graph)}"
    assert not cycles(rooms_graph(graph)), f"room import cycles: {cycles(rooms_graph(graph))}"


def test_imports_run_down_the_layers():
    bad = layer_violations(import_graph(ROOT / "xaitk_exp"))
    assert not bad, "imports that run up the layers:\n" + "\n".join(bad)


def test_layer_order_is_the_readme_one():
    # the README's Layout says the same tiers as LAYERS, from the top
    layout = _layout()
    start = layout.index("Imports run down:") + len("Imports run down:")
    tiers = layout[start : layout.index(";", start)].split("->")
    assert tuple(tuple(w.strip() for w in tier.split(",")) for tier in tiers) == LAYERS


def _plant(tmp_path: Path, files: dict[str, str]) -> Path:
    pkg = tmp_path / "xaitk_exp"
    for rel, text in {"__init__.py": "", **files}.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    return pkg


def test_the_checks_find_a_planted_cycle_and_an_upward_import(tmp_path):
    pkg = _plant(tmp_path, {
        "settings/__init__.py": "",
        "settings/validate.py": "from xaitk_exp.tracking.lineage import parse_register\n",
        "tracking/__init__.py": "",
        "tracking/lineage.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                               "    from xaitk_exp.settings import validate\n",
        "stages/__init__.py": "",
        "stages/a.py": "def f():\n    from . import b\n",
        "stages/b.py": "from .a import f\n",
    })
    graph = import_graph(pkg)
    assert graph["xaitk_exp.stages.b"] == {"xaitk_exp.stages.a"}  # relative imports resolve
    assert cycles(graph) == [
        ["xaitk_exp.settings.validate", "xaitk_exp.tracking.lineage"],  # through TYPE_CHECKING too
        ["xaitk_exp.stages.a", "xaitk_exp.stages.b"],  # through a function-level import
    ]
    assert cycles(rooms_graph(graph)) == [["settings", "tracking"]]
    assert layer_violations(graph) == [
        "xaitk_exp.settings.validate -> xaitk_exp.tracking.lineage (settings is below tracking)"
    ]
    assert layer_violations(import_graph(_plant(tmp_path / "new", {"plugins.py": ""}))) == [
        "xaitk_exp.plugins: its room is in no layer"
    ]


def test_ci_type_checks_with_the_readme_test_command():
    # .ci/run calls the README's test command, and that command runs mypy (configured in pyproject.toml) before pytest
    readme = (ROOT / "README.md").read_text()
    command = next(ln for ln in readme.splitlines() if "pip install '.[test]'" in ln and not ln.startswith("#"))
    assert ".venv/bin/mypy && .venv/bin/pytest" in command
    assert command in (ROOT / ".ci" / "run").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'files = ["xaitk_exp"]' in pyproject
    strict = 'module = ["xaitk_exp.tracking.*", "xaitk_exp.settings.*", "xaitk_exp.stages.*"]\ndisallow_untyped_defs'
    assert strict in pyproject
    assert "ignore_errors" not in pyproject, "no module is left out of the type check"


def test_every_package_folder_is_installed():
    # pyproject.toml lists the packages a non-editable install (CI's, a user's) copies: a folder left out works in
    # a checkout and fails with ModuleNotFoundError once installed
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "xaitk_exp").rglob("__init__.py")}
    assert folders - listed == set(), f"pyproject.toml [tool.setuptools] packages misses {sorted(folders - listed)}"

"""The record schema is one module, and the README's "What a run records" table names what it defines."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from xaitk_exp import schema

README = Path(__file__).resolve().parents[1] / "README.md"


def _records_table() -> str:
    text = README.read_text()
    start = text.index("## What a run records")
    return text[start : text.index("\n## ", start + 1)]


def test_readme_table_names_every_seed_name_the_schema_defines():
    table = _records_table()
    names = [
        schema.experiment_name("<Model>", schema.TRAIN),
        schema.experiment_name("<Model>", schema.EVALUATION),
        schema.experiment_name("<Model>", schema.SALIENCY),
        schema.TRAIN_RUN,
        schema.evaluation_image_run("<k>"),
        schema.evaluation_summary_run("<split>"),
        schema.saliency_run("<k>"),
        schema.DATASET, schema.DATASPLIT, schema.IMAGE_ID, schema.GT_CLASS, schema.PREDICTED_CLASS,
        schema.TRAIN_EXP_ID, schema.TRAIN_RUN_ID, schema.EVALUATION_EXP_ID, schema.EVALUATION_RUN_ID,
        schema.SALIENCY_ALGORITHM, schema.MODIFIED_RUN, schema.CONFIG_HASH, schema.DATA_FINGERPRINT,
        schema.TRAIN_LOSS, schema.TRAIN_ACCURACY, schema.PREDICTED_CLASS_CONF, schema.class_conf("<c>"),
        schema.ACCURACY, schema.MODEL_DIR, schema.NPY_DIR, schema.MAPS_NPY, schema.SALIENCY_FIGURE,
        schema.CONFUSION_FIGURE,
    ]
    missing = [n for n in names if n not in table]
    assert not missing, f"README 'What a run records' does not name: {missing}"


def test_stage_code_spells_no_experiment_suffix_or_run_name_itself():
    """Experiment suffixes and run names live in schema.py only (stages import them)."""
    package = README.parent / "xaitk_exp"
    literals = re.compile(r"\"(Saliency Map Generation|train_info)\"|ImageID-\{|Evaluation_\{")
    offenders = [
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        if p.name != "schema.py" and literals.search(p.read_text())
    ]
    assert not offenders, f"record names spelled outside schema.py: {offenders}"


# ----- no record name spelled outside schema.py -----------------------------------------------------------------------
#: schema names that are also plain words of the code (a config key, a sweep-summary column, a folder): a literal equal
#: to one of them is not taken for the record name (the record uses are schema.CONFIG_DIR, schema.ERROR, ...)
COMMON_WORDS = {"config", "error", "model"}
FILTER_NAME = re.compile(r"\b(?:tags|metrics|params)\.`?(\w+)")


def record_names(schema_file: Path) -> tuple[dict[str, str], list[tuple[str, ...]]]:
    """The names schema.py defines: its module-level string constants (value -> constant name), and the constant
    parts of its f-string templates (``("ImageID-", "_conf")``)."""
    tree = ast.parse(schema_file.read_text())
    names = {
        node.value.value: node.targets[0].id
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        and isinstance(node.targets[0], ast.Name)
    }
    templates = [
        tuple(v.value for v in node.values if isinstance(v, ast.Constant))
        for node in ast.walk(tree)
        if isinstance(node, ast.JoinedStr)
    ]
    return names, [t for t in templates if t]


def _docstrings(tree: ast.AST) -> set[int]:
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, kinds) and node.body and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }


def record_name_literals(package: Path) -> list[str]:
    """``file:line: literal`` for every record name spelled in code outside schema.py: a string constant equal to a
    schema name, a ``tags.<name>`` / ``metrics.<name>`` in a filter string, an f-string shaped like a schema template.
    Docstrings and comments may name records."""
    names, templates = record_names(package / "schema.py")
    found = []
    for path in sorted(package.rglob("*.py")):
        if path == package / "schema.py":
            continue
        tree = ast.parse(path.read_text())
        docs = _docstrings(tree)
        where = f"{path.relative_to(package.parent).as_posix()}"
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr):
                parts = tuple(v.value for v in node.values if isinstance(v, ast.Constant))
                if parts in templates:
                    found.append(f"{where}:{node.lineno}: f-string {parts} (a schema function)")
            if not isinstance(node, ast.Constant) or not isinstance(node.value, str) or id(node) in docs:
                continue
            if node.value in names and node.value not in COMMON_WORDS:
                found.append(f"{where}:{node.lineno}: {node.value!r} (schema.{names[node.value]})")
            for name in FILTER_NAME.findall(node.value):
                if name in names:
                    found.append(f"{where}:{node.lineno}: {node.value!r} (schema.{names[name]} in a filter)")
    return sorted(found, key=lambda f: (f.split(":")[0], int(f.split(":")[1])))


def test_no_record_name_is_spelled_outside_schema():
    found = record_name_literals(README.parent / "xaitk_exp")
    assert not found, "record names spelled outside schema.py:\n" + "\n".join(found)


def test_the_scan_finds_planted_record_names(tmp_path):
    pkg = tmp_path / "xaitk_exp"
    pkg.mkdir()
    (pkg / "schema.py").write_text(
        'TRAIN_LOSS = "Train loss"\nERROR = "error"\nSUMMARY = "Evaluation_summary_run_id"\n'
        'def class_conf(label):\n    return f"Class_{label}_conf"\n'
    )
    (pkg / "stage.py").write_text(
        '"""Logs ``Train loss``."""\n'  # a docstring may name it
        'a = {"Train loss": 1.0, "error": 2}\n'  # a common word is not flagged
        'b = f"tags.Evaluation_summary_run_id = \'{a}\'"\n'
        'c = f"Class_{a}_conf"\n'
    )
    assert record_name_literals(pkg) == [
        "xaitk_exp/stage.py:2: 'Train loss' (schema.TRAIN_LOSS)",
        "xaitk_exp/stage.py:3: \"tags.Evaluation_summary_run_id = '\" (schema.SUMMARY in a filter)",
        "xaitk_exp/stage.py:4: f-string ('Class_', '_conf') (a schema function)",
    ]


# ----- one description of the logging levels -------------------------------------------------------------------------
def test_every_place_describes_the_logging_levels_as_schema_does():
    root = README.parent  # the checkout, not an installed copy (CI installs without -e)

    def flat(text: str) -> str:
        return " ".join(text.split()).lower()

    readme = flat(README.read_text())
    settings = next(ln for ln in (root / "xaitk_exp/settings/config.py").read_text().splitlines()
                    if ln.strip().startswith("level: str"))
    assert "schema.LEVEL_APIS" in settings and schema.LEVEL_APIS["mid"] in settings
    assert set(schema.LEVEL_APIS) == set(schema.LEVELS)
    for level, api in schema.LEVEL_APIS.items():
        module = ast.get_docstring(ast.parse((root / f"xaitk_exp/tracking/{level}.py").read_text())) or ""
        conf = (root / f"conf/logging/{level}.yaml").read_text().splitlines()[0]
        assert flat(module).startswith(f"{level} level: {flat(api)}"), f"tracking/{level}.py"
        assert flat(conf) == f"# {flat(api)}.", f"conf/logging/{level}.yaml"
        assert f"`{level}`, {flat(api)}" in readme, f"README on logging={level}"

"""The record schema is one module, and the README's "What a run records" table names what it defines."""

from __future__ import annotations

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
    package = Path(schema.__file__).parent
    literals = re.compile(r"\"(Saliency Map Generation|train_info)\"|ImageID-\{|Evaluation_\{")
    offenders = [
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        if p.name != "schema.py" and literals.search(p.read_text())
    ]
    assert not offenders, f"record names spelled outside schema.py: {offenders}"

"""The README's Layout section names every module of the package, so a reader finds each room from it."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _layout() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Layout")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def test_layout_names_every_module_in_its_folder():
    layout = _layout()
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
    assert not missing, f"README Layout does not name: {missing}"
    for group in sorted(p.name for p in (ROOT / "conf").iterdir() if p.is_dir()):
        assert f"{group}/" in rows.get("conf/", ""), f"README Layout does not name conf/{group}/"

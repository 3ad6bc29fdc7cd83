"""Keep heavy optional libraries out of processes that do not use them.

skops (which stores scikit-learn models) lists scikit-learn's estimators when it is imported; scikit-learn walks
every one of its sub-packages for that, including ``sklearn.externals.array_api_compat.torch``, which imports
PyTorch whenever it is installed (about 1-2 s and a few hundred MB for a digits MLP that never touches it).
:func:`import_skops` imports skops once with ``torch`` hidden unless this process already uses it; the walk
skips the package it cannot import, and nothing of skops depends on it.

Importing skops also looks up every numpy and scipy ufunc in each loaded module (about 600 names times every entry of
``sys.modules``): 1-3 s after mlflow has loaded its few thousand modules, 0.4 s before. ``app.run`` therefore imports
it first for a scikit-learn model; the trusted-type names it computes are the same in either order.

:func:`registered_in` finds the modules of a package that register something (a model source, a dataset, a task)
and imports only those, on first use.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HIDDEN = ("torch",)


class _Hide:
    """A meta-path finder that refuses the hidden top-level packages (an ImportError, as if not installed)."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.split(".", 1)[0] in self.names:
            raise ImportError(f"{name} is not imported by xaitk-exp while it loads skops", name=name)
        return None


@contextmanager
def hidden(names: tuple[str, ...] = HIDDEN) -> Iterator[None]:
    """Within the block, importing ``names`` fails unless they are imported already."""
    todo = tuple(n for n in names if n not in sys.modules)
    if not todo:
        yield
        return
    finder = _Hide(todo)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def import_skops() -> Any:
    """``skops.io``, imported without pulling PyTorch in (see the module's docstring)."""
    if "skops.io" in sys.modules:
        return sys.modules["skops.io"]
    with hidden():
        return importlib.import_module("skops.io")


def registered_in(package: str, attr: str) -> list[tuple[str, object]]:
    """``(module, value)`` for every module of ``package`` (one folder, not its sub-packages) that assigns ``attr`` at
    its top level (``SOURCE = ModelSource(...)``), imported in name order. The files are read first, so modules
    that register nothing are not imported."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return []
    assigns = re.compile(rf"^{re.escape(attr)}\s*(:[^=\n]+)?=", re.MULTILINE)
    found = []
    for folder in spec.submodule_search_locations:
        for path in sorted(Path(folder).glob("*.py")):
            if path.stem != "__init__" and assigns.search(path.read_text(encoding="utf-8")):
                module = importlib.import_module(f"{package}.{path.stem}")
                if hasattr(module, attr):
                    found.append((module.__name__, getattr(module, attr)))
    return found

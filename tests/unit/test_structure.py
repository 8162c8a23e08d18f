"""The shape of the source: modules small enough to read whole, and packages whose ``__init__.py`` only
hands names on, with the base classes and shared logic in modules of their own (``base.py`` by
convention). That no two modules of a package import each other around a loop is checked with the
other import rules in ``test_import_layers.py``.

Read from the source (``ast``), without importing assay.
"""

from __future__ import annotations

import ast
from pathlib import Path

import assay

ROOT = Path(assay.__file__).resolve().parent
SOURCES = sorted([*ROOT.rglob("*.py"), *(ROOT.parent / "hydra_plugins").rglob("*.py")])
INITS = sorted(ROOT.rglob("__init__.py"))
"""The packages of assay. ``hydra_plugins/assay_slurm_launcher/__init__.py`` is not one of them: Hydra's
plugin convention puts the plugin class there, where ``conf/hydra/launcher/slurm.yaml`` names it."""

MAX_LINES = 400
"""A module longer than this is split by concern."""


def _name(file: Path) -> str:
    return str(file.relative_to(ROOT.parent))


def test_no_module_is_over_400_lines():
    long = {_name(f): n for f in SOURCES if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"split these by concern (at most {MAX_LINES} lines a module)"


def _logic_in(source: str) -> list[tuple[int, str]]:
    """(line, what) of everything an ``__init__.py`` holds besides its docstring, imports, ``__all__``
    and ``__version__``."""
    found = []
    for i, node in enumerate(ast.parse(source).body):
        if i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue  # the docstring
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) and t.id in ("__all__", "__version__") for t in node.targets):
            continue
        if isinstance(node, ast.ClassDef):
            what = f"class {node.name}"
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            what = f"def {node.name}"
        else:
            what = type(node).__name__
        found.append((node.lineno, what))
    return found


def test_init_modules_only_hand_names_on():
    """No class (a base class or a registered option), function or other statement in an ``__init__.py``:
    they belong in ``base.py`` or a module named for them, which the ``__init__`` re-exports."""
    found = [f"{_name(f)}:{line}: {what}" for f in INITS for line, what in _logic_in(f.read_text())]
    assert found == []


def test_the_init_reader_sees_a_class_a_function_and_a_registry():
    source = '"""Doc."""\n\nfrom x import Y\n\n__all__ = ["Y"]\n\n\nclass Base:\n    pass\n\n\ndef f():\n    pass\n\n\nTABLE = {}\n'
    assert _logic_in(source) == [(8, "class Base"), (12, "def f"), (16, "Assign")]


def test_init_modules_export_what_they_import():
    """An ``__init__.py`` that re-exports names lists exactly those names in ``__all__``."""
    wrong = []
    for file in INITS:
        tree = ast.parse(file.read_text(), str(file))
        imported = {(a.asname or a.name) for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
        listed = next((n.value for n in tree.body if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets)), None)
        if listed is None:
            if imported:
                wrong.append(f"{_name(file)}: imports {sorted(imported)} without __all__")
            continue
        names = {e.value for e in listed.elts} if isinstance(listed, (ast.List, ast.Tuple)) else set()
        if names != imported:
            wrong.append(f"{_name(file)}: __all__ {sorted(names ^ imported)} differ from the imports")
    assert wrong == []

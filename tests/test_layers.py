"""The package's layering: every import runs down the layers, never up, and no module (or
function) grows past what a reader can hold.

    core  <  data  <  models  <  training  <  evaluate  <  report  <  study  <  api, cli

``core`` is the ground: it imports nothing of cxrlab outside itself. Imports inside functions
count too: a lazy import that runs up the layers is still a dependency up the layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "cxrlab"
LAYERS = ["core", "data", "models", "training", "evaluate", "report", "study", "api", "cli"]
# Modules at the top of the package that belong to a layer.
TOP_LEVEL = {"api": "api", "cli": "cli", "__main__": "cli", "__init__": "api", "testing": "core"}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def layer_of(module: str) -> str | None:
    """``cxrlab.training.loop`` -> ``training``; None for modules outside cxrlab."""
    parts = module.split(".")
    if parts[0] != "cxrlab":
        return None
    if len(parts) == 1:
        return "api"
    return parts[1] if parts[1] in LAYERS else TOP_LEVEL.get(parts[1])


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every ``cxrlab`` module ``path`` imports, at any depth of the file, with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # "from cxrlab import api" names a module by its attribute
            if node.module == "cxrlab":
                found += [(node.lineno, f"cxrlab.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] == "cxrlab"]


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def own_layer(path: Path) -> str:
    relative = path.relative_to(PACKAGE).with_suffix("")
    first = relative.parts[0]
    return first if first in LAYERS else TOP_LEVEL[first]


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_down_the_layers(path):
    mine = LAYERS.index(own_layer(path))
    upward = []
    for line, name in imports_of(path):
        theirs = layer_of(name)
        if theirs is None:
            continue
        if LAYERS.index(theirs) > mine:
            upward.append(f"line {line}: {name} ({theirs} is above {own_layer(path)})")
    assert not upward, "\n".join(upward)


def test_core_imports_nothing_else_of_cxrlab():
    for path in (PACKAGE / "core").glob("*.py"):
        outside = [name for _, name in imports_of(path) if layer_of(name) != "core"]
        assert not outside, f"{path.name} imports {outside}"


def test_the_layer_test_sees_an_upward_import(tmp_path):
    # The check itself must be able to fail: a data module importing the report is caught.
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from cxrlab.report.render import write_report\n")
    assert [layer_of(name) for _, name in imports_of(probe)] == ["report"]


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_fit_in_a_reading(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.name} has {lines} lines: split it by what its parts do"


def long_functions(path: Path) -> list[str]:
    """Every function or method of ``path``, nested ones included, longer than a screen: its
    name, line and length, from ``def`` to its last line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                found.append(f"{node.name} (line {node.lineno}) has {lines} lines")
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_functions_fit_on_a_screen(path):
    too_long = long_functions(path)
    assert not too_long, f"{path.name}: " + "; ".join(too_long) + ": split them by what their parts do"


def test_the_function_test_sees_a_long_nested_function(tmp_path):
    # The check itself must be able to fail, nested functions included.
    probe = tmp_path / "probe.py"
    inner = "\n".join(f"        x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    probe.write_text(f"def outer():\n    def inner():\n{inner}\n")
    assert [line.split()[0] for line in long_functions(probe)] == ["outer", "inner"]

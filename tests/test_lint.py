"""The linter, the formatter and the type checker pass on the code, as configured in
pyproject.toml: each runs as CI runs it, from the project's root, and a failure shows its
findings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECKED = ["src", "tests", "bench"]


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"{' '.join(map(str, result.args[2:]))} failed:\n{result.stdout}{result.stderr}"


def test_ruff_finds_nothing() -> None:
    assert_clean(run_tool("ruff", "check", *CHECKED))


def test_code_is_formatted() -> None:
    assert_clean(run_tool("ruff", "format", "--check", *CHECKED))


@pytest.mark.slow
def test_mypy_finds_nothing() -> None:
    # No arguments: the files and settings are pyproject.toml's [tool.mypy].
    result = run_tool("mypy")
    assert_clean(result)
    assert "Success" in result.stdout, result.stdout

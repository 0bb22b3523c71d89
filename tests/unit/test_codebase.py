"""The house rules, checked: layers (import-linter), format and lint (ruff), types (mypy), module
and function sizes, and a fast start (no model library behind ``--help`` or a usage error)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "circuits"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_layers_hold():
    result = _run(_tool("lint-imports"))
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


def test_format_and_lint():
    fmt = _run(_tool("ruff"), "format", "--check", "circuits", "tests", "benchmarks")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr
    lint = _run(_tool("ruff"), "check", "circuits", "tests", "benchmarks")
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_types():
    result = _run(_tool("mypy"))
    assert result.returncode == 0, result.stdout[-3000:]


def test_modules_and_functions_stay_small():
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        rel = path.relative_to(ROOT)
        if text.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{rel}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{rel}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, "move code instead of growing it:\n" + "\n".join(too_long)


def _modules_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


HEAVY = {"torch", "transformer_lens", "transformers", "matplotlib"}


def test_import_circuits_and_the_cli_parser_load_no_model_library():
    assert not HEAVY & _modules_after("import circuits")
    assert not HEAVY & _modules_after("import circuits.cli as c; c.build_parser()")


def test_usage_errors_answer_before_any_model_library_is_imported(tmp_path):
    code = f"""
import circuits.cli as c
for argv in (["measure", "--model", "no-such-model", "--out", {str(tmp_path / "a")!r}],
             ["discover", "--model", "tiny", "--threshold", "2", "--out", {str(tmp_path / "b")!r}],
             ["measure", "--text", {str(tmp_path / "missing.txt")!r}, "--out", {str(tmp_path / "c")!r}],
             ["render", {str(tmp_path / "nothing")!r}],
             ["trace", {str(tmp_path)!r}]):
    assert c.main(argv) == 2, argv
"""
    assert not HEAVY & _modules_after(code)
    assert not any(tmp_path.glob("[abc]"))

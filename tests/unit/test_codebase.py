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


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def private_reaches(package: Path) -> list[str]:
    """Every ``x._name`` where ``x`` is not ``self`` / ``cls`` and ``_name`` is not defined in
    the same module, and every ``from m import _name``: one module using another's insides."""
    found = []
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text())
        own = set()  # names this module defines: functions, classes, assigned names/attributes
        for n in ast.walk(tree):
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                own.add(n.name)
            elif isinstance(n, ast.Assign | ast.AnnAssign):
                for target in n.targets if isinstance(n, ast.Assign) else [n.target]:
                    if isinstance(target, ast.Attribute):
                        own.add(target.attr)
                    elif isinstance(target, ast.Name):
                        own.add(target.id)
        rel = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                name = node.attr
                private = name.startswith("_") and not name.startswith("__")
                on_self = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
                if private and not on_self and name not in own:
                    found.append(f"{rel}:{node.lineno} .{name}")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("circuits"):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(f"{rel}:{node.lineno} import {alias.name}")
    return found


def import_knots(package: Path) -> list[str]:
    """Pairs of modules that import each other (anywhere in the module, TYPE_CHECKING and
    function-level imports included)."""
    modules = {_module_name(p): p for p in package.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                if t in modules and t != mod and not modules[t].name == "__init__.py":
                    edges[mod].add(t)
                    break
    return sorted(f"{a} <-> {b}" for a in edges for b in edges[a] if a < b and a in edges[b])


def test_no_module_reaches_into_another_modules_private_members():
    found = private_reaches(PACKAGE)
    assert not found, "use (or add) a public interface instead:\n" + "\n".join(found)


def test_no_two_modules_import_each_other():
    knots = import_knots(PACKAGE)
    assert not knots, "split the shared part into a module both import:\n" + "\n".join(knots)


def test_the_patchers_public_surface_is_what_users_call():
    """The engine's inside (stacked runs, hooks, checks) is not on ``Patcher``: a new public
    member is a decision, taken here."""
    from circuits.patching import Patcher

    public = {m for m in dir(Patcher) if not m.startswith("_")}
    experiments = {"patch", "path_patch", "clean_value", "clean_sink_per_layer"}
    data = {"model", "tokens", "counterfactual", "conditions", "clean", "cf", "batch", "n_pos"}
    assert public == experiments | data


def test_every_test_module_name_is_unique():
    """pytest's default import mode puts each test folder on sys.path: two files of one name (two
    ``conftest.py``, say) shadow each other, and ``from conftest import ...`` breaks collection of
    the whole suite though each folder passes alone."""
    names: dict[str, list[str]] = {}
    for path in sorted((ROOT / "tests").rglob("*.py")):
        names.setdefault(path.name, []).append(str(path.relative_to(ROOT)))
    assert {n: p for n, p in names.items() if len(p) > 1} == {}

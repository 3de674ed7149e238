"""The house rules a reviewer would otherwise check by hand: every public function of the
library carries type hints (parameters and return) and every public module-level function a
docstring; no library module is over 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "factorflow"
MODULES = sorted(PACKAGE.rglob("*.py"))


def _public_functions(tree: ast.Module):
    """(name, node, module_level) for public functions and public classes' public methods."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if not node.name.startswith("_"):
                yield node.name, node, True
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for m in node.body:
                if isinstance(m, ast.FunctionDef | ast.AsyncFunctionDef):
                    if not m.name.startswith("_"):
                        yield f"{node.name}.{m.name}", m, False


def test_public_functions_are_typed_and_documented():
    untyped, undocumented = [], []
    for path in MODULES:
        where = path.relative_to(PACKAGE)
        for name, fn, module_level in _public_functions(ast.parse(path.read_text("utf-8"))):
            args = [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]
            args = [a for a in args if a.arg not in ("self", "cls")]
            if any(a.annotation is None for a in args) or fn.returns is None:
                untyped.append(f"{where}:{fn.lineno} {name}")
            if module_level and not ast.get_docstring(fn):
                undocumented.append(f"{where}:{fn.lineno} {name}")
    assert not untyped, f"public functions without full type hints: {untyped}"
    assert not undocumented, f"public functions without a docstring: {undocumented}"


def test_library_modules_are_at_most_400_lines():
    long = {}
    for path in MODULES:
        n = len(path.read_text("utf-8").splitlines())
        if n > 400:
            long[str(path.relative_to(PACKAGE))] = n
    assert not long, f"modules over 400 lines (split them): {long}"

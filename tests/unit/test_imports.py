"""The package's import graph: every module imports on its own in a fresh interpreter, and
no module-level import cycle exists (imports under TYPE_CHECKING are for type hints only)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "dmuc"


def _modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = _modules()


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_alone_in_a_fresh_interpreter(module: str) -> None:
    result = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                            text=True, timeout=60, cwd=PACKAGE.parent, check=False)
    assert result.returncode == 0, result.stderr


def _runtime_imports(module: str) -> set[str]:
    """dmuc modules imported at run time (module level or inside functions), not under
    `if TYPE_CHECKING:`."""
    path = PACKAGE.parent / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = PACKAGE.parent / module.replace(".", "/") / "__init__.py"
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for n in ast.walk(node))
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("dmuc"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            if not base.startswith("dmuc"):
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in MODULES else base)
    return {m for m in found if m in MODULES and m != module}


def test_no_import_cycle() -> None:
    graph = {m: _runtime_imports(m) for m in MODULES}
    # The package __init__ imports its compat shim first; edges into a package are edges
    # to its __init__, which imports nothing of its own package but the shim.
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in MODULES:
        if module not in state:
            visit(module)
    assert cycles == []


def test_no_function_level_imports_in_the_package() -> None:
    """Imports at the top (the DEVELOPERS rule): a function-level import hides a cycle."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)):
                        offenders.append(f"{path.relative_to(PACKAGE.parent)}:{inner.lineno}")
    assert offenders == []


# What the sans-I/O core must not load: the reactor (importing it installs one) and the
# database drivers; only the shell, config and dmuc-admin import the storage adapters.
IO_MODULES = ("twisted.internet.reactor", "psycopg", "sqlite3", "twisted.enterprise.adbapi",
              "dmuc.storage")


def test_the_cores_import_no_reactor_and_no_database_driver() -> None:
    probe = ("import sys, dmuc.master.service, dmuc.slave.service\n"
             f"print(sorted(m for m in {IO_MODULES!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=60, cwd=PACKAGE.parent, check=True)
    assert result.stdout.strip() == "[]", result.stdout


def test_the_probe_sees_the_adapters_when_they_are_imported() -> None:
    """The probe above can fail: importing the adapters does load what it looks for."""
    probe = ("import sys, dmuc.storage\n"
             f"print(sorted(m for m in {IO_MODULES!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=60, cwd=PACKAGE.parent, check=True)
    assert result.stdout.strip() == repr(sorted(IO_MODULES))

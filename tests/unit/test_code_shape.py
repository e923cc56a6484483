"""The shape DEVELOPERS.md asks of the code, checked: no function in dmuc/ over 70 lines,
and the master's room core speaking XEP-0045 only (XEP-0282 hooks its events from
dmuc/master/distribution.py)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "dmuc"
MAX_FUNCTION_LINES = 70
# what the room core must not name: the slaves and their §4.11.2 state
NOT_IN_ROOM_CORE = re.compile(r"slave|\bheld\b|resubmit|distribution|xep0282|via_", re.I)


def _long_functions(tree: ast.AST, path: Path) -> list[str]:
    return [f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} "
            f"({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno is not None
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]


def test_no_function_is_over_70_lines() -> None:
    found = [entry for path in sorted(PACKAGE.rglob("*.py"))
             for entry in _long_functions(ast.parse(path.read_text()), path)]
    assert found == []


def test_the_long_function_check_sees_a_long_function() -> None:
    body = "\n".join(f"    x{n} = {n}" for n in range(MAX_FUNCTION_LINES))
    tree = ast.parse(f"def long():\n{body}\n")
    assert len(_long_functions(tree, PACKAGE / "example.py")) == 1


def test_the_room_core_names_no_slave() -> None:
    lines = (PACKAGE / "master" / "room.py").read_text().splitlines()
    named = [f"room.py:{number}: {line.strip()}" for number, line in enumerate(lines, 1)
             if NOT_IN_ROOM_CORE.search(line)]
    assert named == []

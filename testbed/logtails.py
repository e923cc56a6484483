"""What the processes a test started logged while it ran, for the report of a test that
failed: CI keeps only what pytest prints, so without this a failure under load (a client
that received nothing for 20 s) leaves no trace of why.

Each Prosody and twistd daemon registers its log file when it starts; the integration
conftest marks where each file ends when a test's call begins, and on failure adds the
warnings and errors written since then (at most a few dozen lines per file) to the
test's report.
"""

from __future__ import annotations

import re
from pathlib import Path

# Prosody writes "<date> <source>\twarn\t...", twistd "[dmuc#warn] ..."
NOTEWORTHY = re.compile(r"\twarn\t|\terror\t|#warn\]|#error\]|#critical\]|Traceback|netsplit",
                        re.IGNORECASE)
LINES_PER_FILE = 30
MAX_LINES = 300

_watched: dict[Path, str] = {}  # log file -> the process's label


def watch(label: str, path: Path) -> None:
    """A process started that logs to `path`."""
    _watched[Path(path)] = label


def marks() -> dict[Path, int]:
    """Where each watched log ends now (files gone meanwhile are forgotten)."""
    ends: dict[Path, int] = {}
    for path in list(_watched):
        try:
            ends[path] = path.stat().st_size
        except OSError:
            if not path.parent.exists():
                del _watched[path]
    return ends


def since(ends: dict[Path, int]) -> str:
    """The noteworthy lines each watched log got after `ends` (a file started since, from
    its beginning), newest last; '' if none."""
    parts: list[str] = []
    total = 0
    for path, label in list(_watched.items()):
        try:
            with path.open("rb") as file:
                mark = ends.get(path, 0)
                # a file started again since (a restart's fresh log) is read whole
                file.seek(mark if path.stat().st_size >= mark else 0)
                text = file.read().decode(errors="replace")
        except OSError:
            continue
        lines = [line for line in text.splitlines() if NOTEWORTHY.search(line)]
        if not lines:
            continue
        shown = lines[-LINES_PER_FILE:]
        skipped = f" ({len(lines) - len(shown)} earlier not shown)" if len(shown) < len(lines) \
            else ""
        parts.append(f"--- {label}: {path}{skipped}\n" + "\n".join(shown))
        total += len(shown)
        if total >= MAX_LINES:
            parts.append("--- (more logs not shown)")
            break
    return "\n".join(parts)

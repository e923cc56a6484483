"""The man pages: built from their sources by docs/man/build_man.py, up to date in the
tree (pip installs them), valid roff that man renders without a warning, and the
dmuc-admin page names every subcommand and option of its parser."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dmuc.admin.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
MAN = ROOT / "docs" / "man"
PAGES = ["dmuc-master.8", "dmuc-slave.8", "dmuc-admin.8"]


def test_built_pages_are_up_to_date() -> None:
    result = subprocess.run([sys.executable, str(MAN / "build_man.py"), "--check"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr + " (run make man)"


@pytest.mark.parametrize("page", PAGES)
def test_man_renders_the_page_without_warnings(page: str) -> None:
    man = shutil.which("man")
    assert man is not None, "man-db is needed (make deps installs it)"
    env = {**os.environ, "MANWIDTH": "80", "LC_ALL": "C.UTF-8"}
    result = subprocess.run([man, "--warnings", "-l", str(MAN / page)], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    name = page.split(".")[0]
    assert result.stdout.startswith(name.upper() + "(8)"), result.stdout[:200]
    assert "SYNOPSIS" in result.stdout and "SEE ALSO" in result.stdout


def test_admin_page_names_every_subcommand_and_option() -> None:
    text = (MAN / "dmuc-admin.8").read_text().replace("\\-", "-")
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in [("", parser), *commands.choices.items()]:
        assert name in text
        for action in sub._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert option in text, f"{name} {option}"

"""The development install (make venv) behaves like an operator's install."""

import os
import subprocess
import sys
from pathlib import Path


def test_installed_twistd_finds_plugins_from_any_directory(tmp_path: Path) -> None:
    """`.venv/bin/twistd --help` run from outside the checkout (as an operator would, from
    /etc or a unit's WorkingDirectory) lists both daemons: the plugins come from the
    install, not from the current directory."""
    twistd = Path(sys.executable).with_name("twistd")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    result = subprocess.run([str(twistd), "--help"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "dmuc-master" in result.stdout and "dmuc-slave" in result.stdout, result.stdout


def test_installed_dmuc_admin_runs_from_any_directory(tmp_path: Path) -> None:
    """The dmuc-admin console script of the install (pip install .) answers --help with
    every subcommand, from outside the checkout."""
    script = Path(sys.executable).with_name("dmuc-admin")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    result = subprocess.run([str(script), "--help"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    for command in ("import-prosody", "list-rooms", "show-room", "list-slaves"):
        assert command in result.stdout, result.stdout

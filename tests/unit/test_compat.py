"""The wokkel/Twisted shim (dmuc.compat, ralphm/wokkel#31): every wokkel module imports."""

import importlib

import pytest

from dmuc import compat  # noqa: F401

# The ones dmuc uses, and the ones the shim exists for (they fail without it).
WOKKEL_MODULES = ["component", "subprotocols", "generic", "disco", "data_form", "ping", "muc",
                  "xmppim", "delay"]


@pytest.mark.parametrize("name", WOKKEL_MODULES)
def test_wokkel_module_imports(name: str) -> None:
    module = importlib.import_module(f"wokkel.{name}")
    assert module.__name__ == f"wokkel.{name}"


def test_twistd_lists_both_daemons() -> None:
    """`twistd --help` lists dmuc-master and dmuc-slave (run as the daemons are run)."""
    import subprocess
    import sys

    from testbed.daemon import TWISTD, TwistdDaemon

    env = TwistdDaemon("dmuc-master").environment()
    result = subprocess.run([sys.executable, "-c", TWISTD, "--help"], env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "dmuc-master" in result.stdout and "dmuc-slave" in result.stdout, result.stdout

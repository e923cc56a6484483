"""The man pages: built from their sources by docs/man/build_man.py, up to date in the
tree (pip installs them), valid roff that man renders without a warning, and the
dmuc-admin page names every subcommand and option of its parser."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from dmuc import config, config_reference
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


# --- the daemons' pages and the configuration reference ------------------------------------

FULL_MASTER = """
[component]
jid = "channel.avalon.irc"
host = "127.0.0.1"
port = 5347
secret = "s"
[storage]
url = "sqlite:///{db}"
[log]
level = "info"
[metrics]
listen = "127.0.0.1:9250"
[muc]
admins = []
create_rooms = "anyone"
room_locking = true
max_history_length = 50
archive_window = 10
enforce_reserved_nicks = false
affiliation_notify = false
allow_unaffiliated_register = false
plugins = []
plugin_config = {{}}
archive_expires_after = "1w"
archive_cleanup_interval = 3600
archive_max_results = 50
[muc.limits]
rate = 1
[muc.room_defaults]
persistent = true
[[slaves]]
jid = "dmuc.vesa.yeggmaex.irc"
domains = ["vesa.yeggmaex.irc"]
"""
FULL_SLAVE = """
[component]
jid = "dmuc.vesa.yeggmaex.irc"
secret = "s"
[storage]
url = "sqlite:///{db}"
[slave]
domains = ["vesa.yeggmaex.irc"]
masters = ["channel.avalon.irc"]
rooms = []
keepalive = 60
history = 20
"""


def keys_read(load: Callable[[str], object], path: Path) -> set[str]:
    """Every TABLE.KEY the loader asks for while reading a file."""
    read: set[str] = set()
    original = config._Reader.get

    def get(self, table, key, *args, **kwargs):  # type: ignore[no-untyped-def]
        read.add(f"{table}.{key}")
        return original(self, table, key, *args, **kwargs)

    config._Reader.get = get  # type: ignore[method-assign]
    try:
        load(str(path))
    finally:
        config._Reader.get = original  # type: ignore[method-assign]
    return read


@pytest.mark.parametrize(("daemon", "text", "reference"), [
    ("master", FULL_MASTER, config_reference.MASTER),
    ("slave", FULL_SLAVE, config_reference.SLAVE),
])
def test_every_key_the_loader_reads_is_documented(tmp_path: Path, daemon: str, text: str,
                                                  reference: tuple) -> None:
    """A key added to the loader without a line in dmuc/config_reference.py fails here
    (and is refused as unknown by the loader, which takes its known keys from there)."""
    path = tmp_path / f"{daemon}.toml"
    path.write_text(text.format(db=tmp_path / "x.db"))
    load = config.load_master_config if daemon == "master" else config.load_slave_config
    read = keys_read(load, path)
    # the tables the loader walks itself: [muc.limits] and [[slaves]]
    if daemon == "master":
        read |= {f"muc.limits.{key}" for key in config._LIMIT_KEYS}
        read |= {"slaves[].jid", "slaves[].domains"}
        read -= {"muc.limits"}  # read as a table, documented key by key
    documented = {key.name for key in reference}
    assert read - documented == set(), "not in dmuc/config_reference.py"
    assert documented - read == set(), "documented but never read"


@pytest.mark.parametrize("daemon", ["master", "slave"])
def test_daemon_page_is_complete(daemon: str) -> None:
    text = (MAN / f"dmuc-{daemon}.8").read_text().replace("\\-", "-")
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "CONFIGURATION", "SIGNALS",
                    "EXIT STATUS", "ENVIRONMENT", "FILES", "LOGGING", "SEE ALSO"):
        assert f".SH {section}\n" in text, section
    reference = config_reference.MASTER if daemon == "master" else config_reference.SLAVE
    for key in reference:
        assert f"\\fB{key.key}\\fR (\\fI{key.kind}\\fR; default" in text, key.name
    for name in ("SIGHUP", "SIGTERM", "NOTIFY_SOCKET", "WATCHDOG_USEC", "not-authorized",
                 "host-unknown", "conflict"):
        assert name in text, name

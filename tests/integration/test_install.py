"""The operator's install (README "Running it for real", docs/operations.md#install):
`make install DESTDIR=ROOT` into a temporary root, as on a fresh Debian 12. The installed
units pass `systemd-analyze verify` (their ExecStart is what the install created, their
Documentation= is installed) and rate at most 3.0 in `systemd-analyze security`; the dmuc
user exists (sysusers.d); the example configurations are 0640, group dmuc; and the daemon
starts from the installed path, with the unit's own command line, against a throwaway
Prosody, under what the unit's hardening can be reproduced without systemd as PID 1
(no new privileges, an empty capability bounding set, memory never writable and
executable (PR_SET_MDWE, as MemoryDenyWriteExecute=), UMask=0027): it reports READY=1,
creates its store 0600, reloads on SIGHUP and stops cleanly on SIGTERM."""

from __future__ import annotations

import configparser
import os
import re
import secrets
import shlex
import shutil
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import ComponentSpec, ProsodyInstance
from testbed.prosody import stop_process
from tests.integration.conftest import (
    MUC_DOMAIN,
    TEST_DOMAINS,
    keep_testbed,
    make_tempdir,
    write_master_config,
)
from tests.integration.ops_helpers import NotifySocket

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "/opt/dmuc"
UNITS = ["dmuc-master", "dmuc-slave"]
MAX_EXPOSURE = 3.0

# Run a command with PR_SET_MDWE (Linux >= 6.3): no memory both writable and executable,
# inherited across exec; what MemoryDenyWriteExecute= asks of systemd.
MDWE = ("import ctypes, os, sys\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "if libc.prctl(65, 1, 0, 0, 0) != 0:\n"
        "    sys.exit('PR_SET_MDWE: ' + os.strerror(ctypes.get_errno()))\n"
        "os.execv(sys.argv[1], sys.argv[1:])\n")


@pytest.fixture(scope="module")
def installed() -> Iterator[Path]:
    root = make_tempdir("dmuc-install-")
    result = subprocess.run(["make", "install", f"DESTDIR={root}", "PYTHON=/usr/bin/python3"],
                            cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    yield root
    if not keep_testbed():
        shutil.rmtree(root, ignore_errors=True)


def unit_of(root: Path, name: str) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((root / f"etc/systemd/system/{name}.service").read_text())
    return unit


def test_install_lays_out_the_venv_user_configs_and_docs(installed: Path) -> None:
    root = installed
    for program in ("twistd", "dmuc-admin", "python3"):
        assert os.access(root / PREFIX.lstrip("/") / "bin" / program, os.X_OK), program
    group = next(line for line in (root / "etc/group").read_text().splitlines()
                 if line.startswith("dmuc:"))
    gid = int(group.split(":")[2])
    passwd = (root / "etc/passwd").read_text()
    assert re.search(r"^dmuc:x:\d+:\d+:.*:/var/lib/dmuc:", passwd, re.M), passwd
    for name in UNITS:
        config = root / f"etc/dmuc/{name}.toml"
        assert stat.S_IMODE(config.stat().st_mode) == 0o640 and config.stat().st_gid == gid
        assert (root / f"usr/local/share/man/man8/{name}.8").is_file()
    # the example plugins are installed with the package
    for plugin in ("slowmode", "blocklist"):
        assert list((root / PREFIX.lstrip("/")).glob(
            f"lib/python3*/site-packages/dmuc/plugins/{plugin}.py")), plugin
    for doc in ("README.md", "operations.md", "protocol.md", "examples/dmuc-master.toml",
                "examples/mod_dmuc_slave.lua", "examples/mod_dmuc_hold.lua",
                "examples/dmuc_hold.lib.lua"):
        assert (root / "usr/share/doc/dmuc" / doc).is_file(), doc
    # a second install keeps the operator's configuration
    (root / "etc/dmuc/dmuc-master.toml").write_text("# mine\n")
    result = subprocess.run(["make", "install", f"DESTDIR={root}", "PYTHON=/usr/bin/python3"],
                            cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (root / "etc/dmuc/dmuc-master.toml").read_text() == "# mine\n"


@pytest.mark.parametrize("name", UNITS)
def test_installed_units_verify_and_are_hardened(installed: Path, name: str,
                                                 tmp_path: Path) -> None:
    root = installed
    unit = unit_of(root, name)
    service = unit["Service"]
    command = shlex.split(service["ExecStart"])
    assert command[0] == f"{PREFIX}/bin/twistd"
    assert command[command.index("--config") + 1] == f"/etc/dmuc/{name}.toml"
    for doc in unit["Unit"]["Documentation"].split():
        if doc.startswith("file://"):
            assert (root / doc[len("file:///"):]).is_file(), doc
    assert service["RestartPreventExitStatus"] == "2" and service["UMask"] == "0027"
    assert service["StateDirectory"] == "dmuc" and service["StateDirectoryMode"] == "0750"
    # systemd-analyze verify on the installed unit, seen from the install's root (the
    # only difference: where /opt/dmuc is); its man: documentation from the install too
    seen = tmp_path / f"{name}.service"
    seen.write_text((root / f"etc/systemd/system/{name}.service").read_text()
                    .replace(f"{PREFIX}/", f"{root}{PREFIX}/"))
    env = {**os.environ, "MANPATH": f"{root}/usr/local/share/man:"}
    verify = subprocess.run(["systemd-analyze", "verify", str(seen)], env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=true", str(seen)],
                              capture_output=True, text=True, timeout=120, check=False)
    score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", security.stdout)
    assert score is not None, security.stdout + security.stderr
    assert float(score.group(1)) <= MAX_EXPOSURE, security.stdout


def test_the_installed_master_runs_as_its_unit_says(installed: Path) -> None:
    root = installed
    work = make_tempdir("dmuc-install-run-")
    prosody = ProsodyInstance(make_tempdir("dmuc-install-prosody-"), virtualhosts=TEST_DOMAINS,
                              components=[ComponentSpec(MUC_DOMAIN, secrets.token_hex(16))])
    prosody.start()
    state = work / "var-lib-dmuc"
    state.mkdir(mode=0o750)
    config = write_master_config(work / "dmuc-master.toml", prosody, state / "master.db")
    command = shlex.split(unit_of(root, "dmuc-master")["Service"]["ExecStart"])
    command = [arg.replace(PREFIX, f"{root}{PREFIX}").replace("/etc/dmuc/dmuc-master.toml",
                                                              str(config)) for arg in command]
    notify = NotifySocket(work / "notify")
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **notify.env}
    out = open(work / "stdout", "wb")
    proc = subprocess.Popen(["setpriv", "--no-new-privs", "--bounding-set=-all",
                             "/usr/bin/python3", "-c", MDWE, *command],
                            cwd=state, env=env, umask=0o027, stdin=subprocess.DEVNULL,
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        notify.expect("READY", "1", timeout=60)
        log = (work / "stdout").read_text()
        assert f"component connected as {MUC_DOMAIN}" in log, log
        assert stat.S_IMODE((state / "master.db").stat().st_mode) == 0o600
        proc.send_signal(signal.SIGHUP)
        notify.expect("RELOADING", "1")
        notify.expect("READY", "1")
        # twistd stops cleanly, then ends by its own SIGTERM again (Twisted's way of
        # reporting the signal), which systemd counts as a clean exit
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == -signal.SIGTERM
        log = (work / "stdout").read_text()
        assert "configuration reloaded" in log and "Main loop terminated" in log, log
        assert "Traceback" not in log, log
    finally:
        if proc.poll() is None:
            stop_process(proc)
        out.close()
        notify.close()
        prosody.stop()
        if not keep_testbed():
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(prosody.workdir, ignore_errors=True)

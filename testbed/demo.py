"""``make run``: a local Prosody with dmuc-master on the SQLite default, ready to join.

Starts Prosody on 127.0.0.1 (the seed's domains as virtual hosts, any password accepted),
attaches ``twistd dmuc-master`` with its database in ./run/master.db (kept across runs),
prints how to log in and join wallops@channel.avalon.irc, and stops both on Ctrl-C.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from testbed.configs import daemon_toml
from testbed.daemon import TwistdDaemon
from testbed.network import MODULES_DIR
from testbed.prosody import ComponentSpec, ProsodyInstance, TestbedError, free_port

SERVICE = "channel.avalon.irc"
DOMAINS = ["avalon.irc", "killrc.oulubox.irc", "eris.dclxvii.irc", "vesa.yeggmaex.irc"]
ACCOUNTS = [
    ("Wumpus", "argl@killrc.oulubox.irc"),
    ("Valdis", "valdis@killrc.oulubox.irc"),
    ("WiZ", "squit@eris.dclxvii.irc"),
    ("BigCheese", "rubenro@vesa.yeggmaex.irc"),
    ("Efchen", "msa@vesa.yeggmaex.irc"),
]


def _port(preferred: int) -> int:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port("127.0.0.1")
    return preferred


def interruptible() -> threading.Event:
    """An event set by Ctrl-C or SIGTERM (the daemons run in sessions of their own, so only
    this launcher gets the signal and it stops them, once, by PID)."""
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return stop


def watch(stop: threading.Event, processes: Sequence[TwistdDaemon | ProsodyInstance]) -> int:
    """Wait for Ctrl-C; 0 then, or 1 as soon as one of `processes` has exited."""
    while not stop.wait(1.0):
        dead = [p for p in processes if not p.running()]
        if dead:
            print(f"exited: {dead}; stopping", file=sys.stderr)
            return 1
    return 0


def write_master_config(path: Path, component_port: int, secret: str, db: Path) -> None:
    path.write_text(daemon_toml(jid=SERVICE, host="127.0.0.1", port=component_port,
                                secret=secret, db_path=db, level="info"))


def main() -> int:
    state = Path("run").resolve()
    state.mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="dmuc-demo-"))
    workdir.chmod(0o755)
    secret = secrets.token_hex(16)
    prosody = ProsodyInstance(
        workdir / "prosody", c2s_port=_port(5222), virtualhosts=DOMAINS,
        components=[ComponentSpec(SERVICE, secret, modules=["dmuc_hold"])],
        plugin_paths=[MODULES_DIR], log_level="info",
    )
    config = state / "dmuc-master.toml"
    master = TwistdDaemon("dmuc-master", config, state)
    stop = interruptible()
    try:
        (workdir / "prosody").mkdir()
        prosody.start()
        write_master_config(config, prosody.component_port, secret, state / "master.db")
        master.start()
        port = prosody.c2s_port
        print(f"""
dmuc is running: Prosody on 127.0.0.1:{port} (plain TCP, any password), dmuc-master as {SERVICE}.
Log in with any XMPP client, setting the server to 127.0.0.1 and port {port}
(the domains below do not resolve; Gajim: Advanced > custom host/port; poezio: custom_host/port).
Accounts (any password works):""")
        for nick, jid in ACCOUNTS:
            print(f"  {jid:32}  then join wallops@{SERVICE} as {nick}")
        print(f"""
Room state is kept in {state / 'master.db'}; logs: {master.log_path} and {prosody.log_path}.
Press Ctrl-C to stop.""", flush=True)
        return watch(stop, [master, prosody])
    except TestbedError as exc:
        print(f"dmuc demo: {exc}", file=sys.stderr)
        return 1
    finally:
        master.stop()
        prosody.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        print("stopped.")


if __name__ == "__main__":
    sys.exit(main())

"""Integration fixtures: one throwaway Prosody per session, connected test clients, the master.

Prosody must be installed (Debian package): a missing Prosody is an error, never a skip.
Set DMUC_KEEP_TESTBED=1 to keep the temp dirs (configs, logs) after the session.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from testbed import ComponentSpec, ProsodyInstance, TwistdDaemon, logtails
from testbed.configs import daemon_toml
from testbed.faults import DmucDaemons, FaultInjector, LogWatcher
from testbed.network import DmucNetwork
from tests.integration.xmpp_client import Client, close_loop, run

LOG_MARKS = pytest.StashKey[dict[Path, int]]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Where each process's log ends when the test proper begins."""
    item.stash[LOG_MARKS] = logtails.marks()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test's report carries the warnings and errors its processes logged while
    it ran: CI keeps nothing else of a failure's cause."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call" and report.failed:
        logged = logtails.since(item.stash.get(LOG_MARKS, {}))
        if logged:
            report.sections.append(("testbed logs: warnings and errors during the test",
                                    logged))


TEST_DOMAINS = ["avalon.irc", "killrc.oulubox.irc", "eris.dclxvii.irc", "vesa.yeggmaex.irc"]
MUC_DOMAIN = "channel.avalon.irc"
# A second component on the single-server Prosody, for tests that handshake themselves
# while the session master holds MUC_DOMAIN.
SPARE_COMPONENT = "spare.avalon.irc"

MakeClient = Callable[..., Client]


def keep_testbed() -> bool:
    return bool(os.environ.get("DMUC_KEEP_TESTBED"))


@contextmanager
def master_on(prosody: ProsodyInstance, master: TwistdDaemon, *dirs: Path) -> Iterator[None]:
    """Start ``prosody``, then ``master`` (until its component connected); stop both by
    PID afterwards and remove ``dirs`` unless DMUC_KEEP_TESTBED keeps them."""
    prosody.start()
    try:
        master.start(wait_for="component connected")
        try:
            yield
        finally:
            master.stop()
    finally:
        prosody.stop()
        if not keep_testbed():
            for d in dirs:
                shutil.rmtree(d, ignore_errors=True)


def make_tempdir(prefix: str) -> Path:
    """A fresh dir under /tmp (mkdtemp: 0700, chowned to prosody by ProsodyInstance)."""
    return Path(tempfile.mkdtemp(prefix=prefix))


T = TypeVar("T", ProsodyInstance, DmucNetwork)


def running(testbed: T, workdir: Path) -> Iterator[T]:
    """Start a testbed, yield it, stop it by PID and remove its directory (unless
    DMUC_KEEP_TESTBED is set): the body of every testbed fixture."""
    testbed.start()
    try:
        yield testbed
    finally:
        testbed.stop()
        if not keep_testbed():
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _xmpp_loop() -> Iterator[None]:
    """Close the clients' shared asyncio loop at the end of the session."""
    yield
    close_loop()


@pytest.fixture(scope="session")
def prosody() -> Iterator[ProsodyInstance]:
    """One Prosody hosting the four test domains and the MUC component ``channel.avalon.irc``."""
    workdir = make_tempdir("dmuc-prosody-")
    yield from running(ProsodyInstance(
        workdir,
        virtualhosts=TEST_DOMAINS,
        components=[ComponentSpec(MUC_DOMAIN, secrets.token_hex(16)),
                    ComponentSpec(SPARE_COMPONENT, secrets.token_hex(16))],
    ), workdir)


@pytest.fixture
def client_factory(prosody: ProsodyInstance) -> Iterator[MakeClient]:
    """``make_client("argl@killrc.oulubox.irc/laptop")`` -> a connected Client; all are
    disconnected when the test ends."""
    clients: list[Client] = []

    def make_client(jid: str, *, password: str = "pw", connect: bool = True,
                    initial_presence: bool = True) -> Client:
        client = Client(jid, password, host=prosody.ip, port=prosody.c2s_port)
        clients.append(client)
        if connect:
            run(client.connect(initial_presence=initial_presence))
        return client

    yield make_client
    if clients:
        run(asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True))


# ----------------------------------------------------------------------------------------------
# the master (dmuc-master twistd plugin) -- fixtures for the master's integration tests


def write_master_config(path: Path, prosody: ProsodyInstance, db_path: Path,
                        extra_toml: str = "", component: str = MUC_DOMAIN,
                        storage_url: str | None = None) -> Path:
    """Write the master's TOML config for ``component`` of ``prosody`` (storage: the SQLite
    file ``db_path``, or ``storage_url``)."""
    spec = prosody.component(component)
    path.write_text(daemon_toml(jid=spec.domain, host=prosody.ip, port=prosody.component_port,
                                secret=spec.secret, db_path=db_path, extra_toml=extra_toml,
                                storage_url=storage_url))
    return path


@pytest.fixture(scope="session")
def master_workdir() -> Iterator[Path]:
    workdir = make_tempdir("dmuc-master-")
    yield workdir
    if not keep_testbed():
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def master_config(prosody: ProsodyInstance, master_workdir: Path) -> Path:
    return write_master_config(master_workdir / "master.toml", prosody,
                               master_workdir / "master.db")


@pytest.fixture(scope="session")
def master(master_config: Path, master_workdir: Path) -> Iterator[TwistdDaemon]:
    """The master daemon, connected to the session Prosody as ``channel.avalon.irc``."""
    daemon = TwistdDaemon("dmuc-master", master_config, master_workdir)
    daemon.start(wait_for="component connected")
    try:
        yield daemon
    finally:
        daemon.stop()


# ----------------------------------------------------------------------------------------------
# the multi-server network (testbed.network): avalon.irc (master's server), three slave
# servers, efnet.irc (no slave), linked by real s2s through the counting proxy

# a spare component on a slave server, e.g. to show that only the slave component may set
# mod_dmuc_slave's mirror list
PROBE_COMPONENT = "probe.vesa.yeggmaex.irc"


@pytest.fixture(scope="session")
def network() -> Iterator[DmucNetwork]:
    """The five-server network, started once per session (no dmuc daemon runs in it).

    Tests that set mod_dmuc_slave's mirror list (a raw component) must clear it again."""
    workdir = make_tempdir("dmuc-network-")
    yield from running(DmucNetwork(workdir, extra_components={
        "vesa.yeggmaex.irc": [ComponentSpec(PROBE_COMPONENT, secrets.token_hex(16))]}), workdir)


@pytest.fixture
def net_client_factory(network: DmucNetwork) -> Iterator[MakeClient]:
    """``make_client("rubenro@vesa.yeggmaex.irc/shaver")`` -> a Client connected to the
    network server of the JID's domain; all are disconnected when the test ends."""
    clients: list[Client] = []

    def make_client(jid: str, *, password: str = "pw", connect: bool = True,
                    initial_presence: bool = True) -> Client:
        server = network.server(jid)
        client = Client(jid, password, host=server.ip, port=server.c2s_port)
        clients.append(client)
        if connect:
            run(client.connect(initial_presence=initial_presence))
        return client

    yield make_client
    if clients:
        run(asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True))
        # slixmpp only cancels its send-queue task when the client is garbage collected,
        # which then logs "Task was destroyed but it is pending": end those tasks here
        senders = [t for c in clients
                   if (t := getattr(c.xmpp, "_run_out_filters", None)) is not None]
        for task in senders:
            task.cancel()
        run(asyncio.gather(*senders, return_exceptions=True))


# --- a network of its own per test, with every fault at hand (test_faults, test_soak) -----------

# Its own addresses, so that it never meets the session's network.
FAULT_IPS = ("127.0.2.2", "127.0.2.3", "127.0.2.4", "127.0.2.5", "127.0.2.6")
FAULT_KEEPALIVE = 5  # seconds: faults are noticed quickly
# The strict fault tests and the soak (test_faults, test_soak: RIG_KEEPALIVE in the module)
# use the least keepalive the daemons accept, so that a split is found within 4 s and a
# fault that lasts 3 x that bound stays short.
STRICT_KEEPALIVE = 2


@dataclass
class Rig:
    network: DmucNetwork
    daemons: DmucDaemons
    faults: FaultInjector
    logs: LogWatcher


# Every server as Debian's default configuration has it (mod_smacks, XEP-0198, also on
# s2s) with mod_smacks' resend on, as docs/operations.md recommends for users' servers
# (what an s2s session closed unacknowledged is routed again, not bounced). Without stream
# management, what a users' server wrote into the s2s connection the master's Prosody
# closed when it stopped is lost without an error (measured: 6 of efnet's messages in one
# short run of three); with it, acknowledged, sent again, or bounced to its sender.
SMACKS_RESEND = pytest.mark.prosody(modules=["smacks"], config="smacks_s2s_resend = true")


@pytest.fixture
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    """A fresh network and daemons per test: a fault must not leave anything behind for
    the next one. Every process is stopped by PID. The daemons' keepalive is the test
    module's RIG_KEEPALIVE, or FAULT_KEEPALIVE. A test marked
    ``@pytest.mark.prosody(modules=[...], config="...")`` gets every Prosody with those
    extra modules and that Lua in the global section (e.g. mod_smacks, as Debian's
    default configuration loads it)."""
    marker = request.node.get_closest_marker("prosody")
    extra = marker.kwargs if marker is not None else {}
    net_dir, daemons_dir = make_tempdir("dmuc-faults-net-"), make_tempdir("dmuc-faults-")
    network = DmucNetwork(net_dir, ips=FAULT_IPS, log_level="info",
                          extra_modules=extra.get("modules", ()),
                          extra_config=extra.get("config", ""))
    network.start()
    keepalive = getattr(request.module, "RIG_KEEPALIVE", FAULT_KEEPALIVE)
    daemons = DmucDaemons(network, daemons_dir, keepalive=keepalive)
    try:
        daemons.start()
        faults = FaultInjector(network, daemons)
        with LogWatcher.for_network(network, daemons) as logs:
            try:
                yield Rig(network, daemons, faults, logs)
            finally:
                faults.cleanup()
    finally:
        daemons.stop()
        network.stop()
        if not keep_testbed():
            for d in (net_dir, daemons_dir):
                shutil.rmtree(d, ignore_errors=True)

"""Admin commands over XMPP (XEP-0050) on the real network: a real ``dmuc-master`` with
``[muc] admins``, one real ``dmuc-slave`` (vesa.yeggmaex.irc; the other two slaves are
allowed but not running), and slixmpp clients driving the commands with slixmpp's own
xep_0050 plugin: an admin of avalon.irc, and users who are not admins (forbidden).

The module starts a network of its own (on 127.0.14.x).
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from slixmpp.exceptions import IqError

from testbed import TwistdDaemon
from testbed.faults import mirror_line, wait_for_text
from testbed.network import MUC_SERVICE, SLAVE_DOMAINS, DmucNetwork, slave_jid
from tests.integration.cast import CAST, DIRECT_USER
from tests.integration.conftest import MakeClient, keep_testbed, make_tempdir, running
from tests.integration.xmpp_client import (
    NS_MUC,
    NS_MUC_USER,
    Client,
    body,
    is_message,
    is_presence,
    run,
)

pytestmark = pytest.mark.integration

IPS = ("127.0.14.2", "127.0.14.3", "127.0.14.4", "127.0.14.5", "127.0.14.6")
VESA = "vesa.yeggmaex.irc"
ADMIN = "oper@avalon.irc/console"
NS_COMMANDS = "http://jabber.org/protocol/commands"
LIST_ROOMS = "urn:xmpp:tmp:dmuc:0#list-rooms"
DESTROY = "http://prosody.im/protocol/muc#destroy"
SLAVES = "urn:xmpp:tmp:dmuc:0#slaves"
RESYNC = "urn:xmpp:tmp:dmuc:0#resync"


@pytest.fixture(scope="module")
def network() -> Iterator[DmucNetwork]:
    """This module's own five-server network (``net_client_factory`` connects to it)."""
    workdir = make_tempdir("dmuc-adhoc-net-")
    yield from running(DmucNetwork(workdir, ips=IPS, log_level="info"), workdir)


@dataclass
class Daemons:
    master: TwistdDaemon
    slave: TwistdDaemon


@pytest.fixture(scope="module")
def dmuc(network: DmucNetwork) -> Iterator[Daemons]:
    """The master (its admin: oper@avalon.irc) and vesa's slave; stopped by PID."""
    workdir = make_tempdir("dmuc-adhoc-")
    (workdir / "master").mkdir()
    (workdir / "slave").mkdir()
    config = workdir / "master" / "master.toml"
    config.write_text(network.master_config(workdir / "master" / "master.db", level="info",
                                            admins=[ADMIN.split("/")[0]]))
    master = TwistdDaemon("dmuc-master", config, workdir / "master")
    slave_config = workdir / "slave" / "slave.toml"
    slave_config.write_text(network.slave_config(VESA, workdir / "slave" / "slave.db",
                                                 level="info"))
    slave = TwistdDaemon("dmuc-slave", slave_config, workdir / "slave")
    try:
        master.start("component connected")
        slave.start("component connected")
        wait_for_text(network.server(VESA).prosody.log_text, mirror_line(VESA))
        yield Daemons(master, slave)
    finally:
        slave.stop()
        master.stop()
        for daemon in (master, slave):
            assert "Traceback" not in daemon.log_text(), daemon.log_text()[-3000:]
        if not keep_testbed():
            shutil.rmtree(workdir, ignore_errors=True)


def commands_client(make_client: MakeClient, jid: str) -> Client:
    client = make_client(jid)
    client.xmpp.register_plugin("xep_0050")
    return client


def adhoc(client: Client) -> Any:
    return client.xmpp.plugin["xep_0050"]


def execute(client: Client, node: str, *, action: str = "execute", sid: str | None = None,
            **fields: str | list[str]) -> Any:
    """One request of a command (with a submitted form if `fields`); the iq answer."""
    payload = None
    if fields:
        payload = client.xmpp.plugin["xep_0004"].make_form(ftype="submit")
        for var, value in fields.items():
            payload.add_field(var=var, ftype="list-multi" if isinstance(value, list) else None,
                              value=value)
    return run(adhoc(client).send_command(MUC_SERVICE, node, action=action, sessionid=sid,
                                          payload=payload))


def refused(client: Client, node: str, **kw: Any) -> ET.Element:
    with pytest.raises(IqError) as caught:
        execute(client, node, **kw)
    error = caught.value.iq.xml.find("{jabber:client}error")
    assert error is not None
    return error


def condition(error: ET.Element) -> list[str]:
    """The defined condition, then any application-specific one."""
    return [child.tag.rsplit("}", 1)[-1] for child in error
            if not child.tag.endswith("}text")]


def enter(client: Client, room: str, nick: str) -> None:
    """Join and wait for the room's subject, the end of the join sequence."""
    client.send_raw(f"<presence to='{room}/{nick}'><x xmlns='{NS_MUC}'/></presence>")
    run(client.expect(lambda e: is_message(type_="groupchat")(e)
                      and (e.get("from") or "").split("/")[0] == room
                      and e.find("{jabber:client}subject") is not None))
    client.drain()


def test_anyone_but_an_admin_is_forbidden(dmuc: Daemons, net_client_factory: MakeClient) -> None:
    # a user of a slave's server (its iq to the service crosses s2s) and a direct one
    for jid in (CAST["Efchen"], DIRECT_USER[1]):
        client = commands_client(net_client_factory, jid)
        info = run(client.xmpp.plugin["xep_0030"].get_info(jid=MUC_SERVICE))
        assert NS_COMMANDS in info["disco_info"]["features"]
        items = run(adhoc(client).get_commands(MUC_SERVICE))
        assert not items["disco_items"]["items"]
        for node in (LIST_ROOMS, DESTROY, SLAVES, RESYNC):
            error = refused(client, node)
            assert condition(error) == ["forbidden"]
            assert (error.get("type"), error.get("by")) == ("auth", MUC_SERVICE)
        dmuc.master.wait_for_log(f"refused ad-hoc command '{RESYNC}' from {client.jid}: "
                                 "forbidden")
        with pytest.raises(IqError) as caught:
            run(client.xmpp.plugin["xep_0030"].get_info(jid=MUC_SERVICE, node=DESTROY))
        assert caught.value.iq["error"]["condition"] == "forbidden"


def test_an_admin_lists_resyncs_and_destroys(dmuc: Daemons,
                                             net_client_factory: MakeClient) -> None:
    room = f"adhoc-one@{MUC_SERVICE}"
    admin = commands_client(net_client_factory, ADMIN)
    behind_slave = net_client_factory(CAST["BigCheese"])
    direct = net_client_factory(DIRECT_USER[1])
    enter(direct, room, DIRECT_USER[0])
    enter(behind_slave, room, "BigCheese")
    direct.drain()

    items = run(adhoc(admin).get_commands(MUC_SERVICE))["disco_items"]["items"]
    assert sorted(node for _, node, _ in items) == sorted([LIST_ROOMS, DESTROY, SLAVES, RESYNC])

    # list rooms: direct and through the slave
    answer = execute(admin, LIST_ROOMS)
    assert answer["command"]["status"] == "completed"
    [row] = [r for r in answer["command"]["form"].get_items() if r["jid"] == room]
    assert (row["occupants"], row["direct"], row["via_slaves"], row["slaves"]) == \
        ("2", "1", "1", f"{slave_jid(VESA)} (1)")

    # show slaves: vesa's link is live; the two slaves that do not run never registered
    answer = execute(admin, SLAVES)
    rows = answer["command"]["form"].get_items()
    [vesa] = [r for r in rows if r["slave"] == slave_jid(VESA) and r["room"] == room]
    assert (vesa["state"], vesa["sessions"]) == ("LIVE", "1") and int(vesa["seq"]) > 0
    others = {r["slave"]: r["state"] for r in rows if r["slave"] != slave_jid(VESA)}
    assert others == {slave_jid(d): "unregistered" for d in SLAVE_DOMAINS if d != VESA}

    # force a resync, in two stages: the slave registers again, its users notice nothing
    registered = f"slave {slave_jid(VESA)} registered for {room}"
    before = dmuc.master.log_text().count(registered)
    answer = execute(admin, RESYNC)
    sid = answer["command"]["sessionid"]
    assert answer["command"]["status"] == "executing"
    assert answer["command"]["actions"] == {"next", "complete"}
    answer = execute(admin, RESYNC, action="next", sid=sid, slave=slave_jid(VESA))
    room_field = answer["command"]["form"].get_fields()["room"]
    assert room in [option["value"] for option in room_field.get_options()]
    answer = execute(admin, RESYNC, action="complete", sid=sid, room=room)
    assert answer["command"]["status"] == "completed"
    assert answer["command"]["notes"] == [
        ("info", f"Asked {slave_jid(VESA)} to register again for {room}")]
    dmuc.master.wait_for_log(registered, count=before + 1)
    dmuc.slave.wait_for_log(f"netjoin with {room}: resyncing")
    # all its rooms, in one request
    answer = execute(admin, RESYNC, slave=slave_jid(VESA), room="*")
    assert answer["command"]["status"] == "completed"
    dmuc.slave.wait_for_log("an admin forced a resync; registering")
    dmuc.master.wait_for_log(registered, count=before + 2)
    direct.send_raw(f"<message to='{room}' type='groupchat'><body>still here</body></message>")
    run(behind_slave.expect(lambda e: body(e) == "still here"))

    # destroy, with a reason and an alternate venue: both occupants are told
    answer = execute(admin, DESTROY)
    sid = answer["command"]["sessionid"]
    assert "rooms" in answer["command"]["form"].get_fields()
    answer = execute(admin, DESTROY, action="complete", sid=sid, rooms=[room],
                     reason="Moving on", alternate=f"adhoc-new@{MUC_SERVICE}")
    assert answer["command"]["notes"] == [
        ("info", f"The following rooms were destroyed:\n{room}")]
    for client, nick in ((direct, DIRECT_USER[0]), (behind_slave, "BigCheese")):
        gone = run(client.expect(is_presence(from_=f"{room}/{nick}", type_="unavailable")))
        destroy = gone.find(f"{{{NS_MUC_USER}}}x/{{{NS_MUC_USER}}}destroy")
        assert destroy is not None and destroy.get("jid") == f"adhoc-new@{MUC_SERVICE}"
        assert destroy.findtext(f"{{{NS_MUC_USER}}}reason") == "Moving on"
    rows = execute(admin, LIST_ROOMS)["command"]["form"].get_items()
    assert room not in [r["jid"] for r in rows]


def test_sessions_cancel_and_expire(dmuc: Daemons, net_client_factory: MakeClient) -> None:
    admin = commands_client(net_client_factory, ADMIN)
    answer = execute(admin, DESTROY)
    sid = answer["command"]["sessionid"]
    answer = execute(admin, DESTROY, action="cancel", sid=sid)
    assert (answer["command"]["status"], answer["command"]["sessionid"]) == ("canceled", sid)
    error = refused(admin, DESTROY, action="complete", sid=sid, rooms=["x@" + MUC_SERVICE])
    assert condition(error) == ["not-allowed", "session-expired"]
    error = refused(admin, DESTROY, action="complete", sid="made-up", rooms=["x@y"])
    assert condition(error) == ["bad-request", "bad-sessionid"]
    error = refused(admin, DESTROY, action="dance")
    assert condition(error) == ["bad-request", "malformed-action"]
    error = refused(admin, "urn:example:no-such-command")
    assert condition(error) == ["item-not-found"]
    # the same admin on another resource cannot continue the first one's session
    sid = execute(admin, RESYNC)["command"]["sessionid"]
    other = commands_client(net_client_factory, "oper@avalon.irc/phone")
    error = refused(other, RESYNC, action="next", sid=sid, slave=slave_jid(VESA))
    assert condition(error) == ["bad-request", "bad-sessionid"]


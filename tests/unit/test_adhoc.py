"""Admin commands over XMPP (dmuc.master.features.adhoc): XEP-0050 on the service JID for
the configured admins, through the core alone and through a network of master and slave
cores (dmuc_net)."""

from __future__ import annotations

import pytest

from dmuc import xmlns
from dmuc.master.distribution import RegistrationState
from dmuc.master.features import adhoc
from dmuc.outbox import DeleteRoom, Outbox
from dmuc.protocol import stanzas
from tests.unit.dmuc_net import Net, slave_jid
from tests.unit.muc_helpers import BIGCHEESE, ROOM, SERVICE, WUMPUS, Harness, error_condition
from tests.unit.muc_steps import iq

ADMIN = "oper@avalon.irc/console"
OTHER_ADMIN = "root@avalon.irc/tty"
LUSER = "luser@efnet.irc/pc"  # anyone else
DIRECT = "wumpus@efnet.irc/pc"  # a user of a server without a slave
VESA = "vesa.yeggmaex.irc"
ADMINS = frozenset({"oper@avalon.irc", "root@avalon.irc"})
CMD = xmlns.COMMANDS
ALL_NODES = [adhoc.NODE_DESTROY, adhoc.NODE_LIST_ROOMS, adhoc.NODE_RESYNC, adhoc.NODE_SLAVES]


def command_xml(who: str, node: str, *, action: str | None = None, sid: str | None = None,
                fields: dict[str, str | list[str]] | None = None, iq_id: str = "c1") -> str:
    attrs = f" node='{node}'" + (f" action='{action}'" if action else "") \
        + (f" sessionid='{sid}'" if sid else "")
    form = ""
    if fields is not None:
        parts = []
        for var, value in fields.items():
            values = value if isinstance(value, list) else [value]
            parts.append(f"<field var='{var}'>"
                         + "".join(f"<value>{v}</value>" for v in values) + "</field>")
        form = f"<x xmlns='jabber:x:data' type='submit'>{''.join(parts)}</x>"
    return (f"<iq type='set' id='{iq_id}' from='{who}' to='{SERVICE}'>"
            f"<command xmlns='{CMD}'{attrs}>{form}</command></iq>")


def reply_to(out: Outbox, who: str) -> stanzas.Element:
    [reply] = [s for s in out.stanzas_for(who) if s.name == "iq"]
    return reply


def command_of(reply: stanzas.Element) -> stanzas.Element:
    assert reply["type"] == "result", reply.toXml()
    cmd = stanzas.child(reply, "command", CMD)
    assert cmd is not None, reply.toXml()
    return cmd


def notes(cmd: stanzas.Element) -> list[tuple[str, str]]:
    return [(n["type"], str(n)) for n in stanzas.children(cmd, "note")]


def app_condition(reply: stanzas.Element) -> str | None:
    err = stanzas.child(reply, "error")
    found = [e.name for e in err.elements() if e.uri == CMD] if err is not None else []
    return found[0] if found else None


def table(cmd: stanzas.Element) -> list[dict[str, str]]:
    x = stanzas.child(cmd, "x", xmlns.DATA_FORMS)
    assert x is not None and x["type"] == "result"
    columns = [f["var"] for f in stanzas.children(stanzas.child(x, "reported"), "field")]
    rows = []
    for item in stanzas.children(x, "item"):
        row = {f["var"]: stanzas.text_of(stanzas.child(f, "value")) or ""
               for f in stanzas.children(item, "field")}
        assert list(row) == columns
        rows.append(row)
    return rows


def form_fields(cmd: stanzas.Element) -> dict[str, stanzas.Element]:
    x = stanzas.child(cmd, "x", xmlns.DATA_FORMS)
    assert x is not None and x["type"] == "form"
    return {f["var"]: f for f in stanzas.children(x, "field")}


def options(field: stanzas.Element) -> list[str]:
    return [stanzas.text_of(stanzas.child(o, "value")) or "" for o in
            stanzas.children(field, "option")]


class Service(Harness):
    def __init__(self, **settings: object) -> None:
        super().__init__(admins=ADMINS, **settings)

    def run(self, who: str, node: str, **kw: object) -> tuple[stanzas.Element, Outbox]:
        out = self.send(command_xml(who, node, **kw))  # type: ignore[arg-type]
        return reply_to(out, who), out


# --- discovery -------------------------------------------------------------------------------

def test_the_service_advertises_commands() -> None:
    h = Service()
    reply = reply_to(iq(h, LUSER, SERVICE, "get", f"<query xmlns='{xmlns.DISCO_INFO}'/>"), LUSER)
    query = stanzas.child(reply, "query", xmlns.DISCO_INFO)
    assert CMD in [f["var"] for f in stanzas.children(query, "feature")]


def test_the_commands_list_holds_only_what_the_requester_may_run() -> None:
    h = Service()
    ask = f"<query xmlns='{xmlns.DISCO_ITEMS}' node='{CMD}'/>"
    reply = reply_to(iq(h, ADMIN, SERVICE, "get", ask), ADMIN)
    items = stanzas.children(stanzas.child(reply, "query", xmlns.DISCO_ITEMS), "item")
    assert [i["node"] for i in items] == ALL_NODES
    assert {i["jid"] for i in items} == {SERVICE} and all(i.getAttribute("name") for i in items)
    reply = reply_to(iq(h, LUSER, SERVICE, "get", ask), LUSER)
    query = stanzas.child(reply, "query", xmlns.DISCO_ITEMS)
    assert reply["type"] == "result" and query["node"] == CMD
    assert stanzas.children(query, "item") == []


def test_disco_info_of_the_command_nodes() -> None:
    h = Service()
    reply = reply_to(iq(h, LUSER, SERVICE, "get",
                        f"<query xmlns='{xmlns.DISCO_INFO}' node='{CMD}'/>"), LUSER)
    identity = stanzas.child(stanzas.child(reply, "query", xmlns.DISCO_INFO), "identity")
    assert (identity["category"], identity["type"]) == ("automation", "command-list")
    ask = f"<query xmlns='{xmlns.DISCO_INFO}' node='{adhoc.NODE_DESTROY}'/>"
    reply = reply_to(iq(h, ADMIN, SERVICE, "get", ask), ADMIN)
    query = stanzas.child(reply, "query", xmlns.DISCO_INFO)
    assert query["node"] == adhoc.NODE_DESTROY
    identity = stanzas.child(query, "identity")
    assert (identity["category"], identity["type"], identity["name"]) == \
        ("automation", "command-node", "Destroy Rooms")
    assert {f["var"] for f in stanzas.children(query, "feature")} == {CMD, xmlns.DATA_FORMS}
    out = iq(h, LUSER, SERVICE, "get", ask)
    reply = reply_to(out, LUSER)
    assert error_condition(reply) == "forbidden"
    assert stanzas.child(reply, "error")["by"] == SERVICE
    assert len(out.log) == 1 and "forbidden" in out.log[0][1]


# --- refusals -------------------------------------------------------------------------------

@pytest.mark.parametrize("node", ALL_NODES)
def test_anyone_but_an_admin_is_forbidden(node: str) -> None:
    h = Service()
    h.create_instant(WUMPUS, "Wumpus")
    reply, out = h.run(LUSER, node, fields={"rooms": ROOM})
    assert reply["type"] == "error" and error_condition(reply) == "forbidden"
    error = stanzas.child(reply, "error")
    assert (error["type"], error["by"]) == ("auth", SERVICE)
    assert [level for level, _ in out.log] == ["info"] and LUSER in out.log[0][1]
    assert ROOM in h.service.rooms and h.service.admin_commands.sessions == {}
    # An admin's bare JID with a resource is an admin; the same user at another domain not.
    reply, _ = h.run("oper@efnet.irc/console", node)
    assert error_condition(reply) == "forbidden"


def test_an_unknown_node_is_item_not_found() -> None:
    reply, out = Service().run(ADMIN, "urn:example:nope")
    assert error_condition(reply) == "item-not-found" and len(out.log) == 1


@pytest.mark.parametrize(("action", "sid", "condition", "specific"), [
    ("dance", None, "bad-request", "malformed-action"),
    ("next", None, "bad-action", None),  # a session starts with execute
    ("execute", "no-such-session", "bad-request", "bad-sessionid"),
])
def test_protocol_errors(action: str, sid: str | None, condition: str,
                         specific: str | None) -> None:
    reply, out = Service().run(ADMIN, adhoc.NODE_DESTROY, action=action, sid=sid)
    assert reply["type"] == "error"
    if specific is None:
        assert app_condition(reply) == condition
        assert error_condition(reply) == "bad-request"
    else:
        assert error_condition(reply) == condition and app_condition(reply) == specific
    assert len(out.log) == 1


def start(h: Service, who: str = ADMIN, node: str = adhoc.NODE_DESTROY) -> str:
    reply, _ = h.run(who, node)
    cmd = command_of(reply)
    assert cmd["status"] == "executing"
    return cmd["sessionid"]


def test_a_session_belongs_to_the_full_jid_that_started_it() -> None:
    h = Service()
    sid = start(h)
    for other in (OTHER_ADMIN, "oper@avalon.irc/phone"):
        reply, _ = h.run(other, adhoc.NODE_DESTROY, sid=sid, action="cancel")
        assert app_condition(reply) == "bad-sessionid"
    # ... and to its node
    reply, _ = h.run(ADMIN, adhoc.NODE_RESYNC, sid=sid, action="cancel")
    assert app_condition(reply) == "bad-sessionid"
    reply, _ = h.run(ADMIN, adhoc.NODE_DESTROY, sid=sid, action="cancel")
    assert command_of(reply)["status"] == "canceled"


def test_cancel_then_the_session_is_expired() -> None:
    h = Service()
    sid = start(h)
    reply, _ = h.run(ADMIN, adhoc.NODE_DESTROY, sid=sid, action="cancel")
    cmd = command_of(reply)
    assert (cmd["status"], cmd["sessionid"], cmd["node"]) == ("canceled", sid,
                                                             adhoc.NODE_DESTROY)
    reply, out = h.run(ADMIN, adhoc.NODE_DESTROY, sid=sid, fields={"rooms": ROOM})
    assert error_condition(reply) == "not-allowed" and app_condition(reply) == "session-expired"
    assert len(out.log) == 1
    assert h.service.admin_commands.sessions == {}


def test_actions_a_stage_does_not_offer() -> None:
    h = Service()
    sid = start(h)
    for action, specific in (("prev", "bad-action"), ("next", "bad-action")):
        reply, _ = h.run(ADMIN, adhoc.NODE_DESTROY, sid=sid, action=action)
        assert app_condition(reply) == specific
    # complete without the form
    reply, _ = h.run(ADMIN, adhoc.NODE_DESTROY, sid=sid, action="complete")
    assert app_condition(reply) == "bad-payload"
    # the session is still there
    reply, _ = h.run(ADMIN, adhoc.NODE_DESTROY, sid=sid, action="cancel")
    assert command_of(reply)["status"] == "canceled"


def test_sessions_are_bounded_per_admin() -> None:
    h = Service()
    sids = [start(h) for _ in range(adhoc.MAX_SESSIONS_PER_ADMIN + 3)]
    other = start(h, OTHER_ADMIN)
    sessions = h.service.admin_commands.sessions
    assert list(sessions["oper@avalon.irc"]) == sids[3:]
    assert list(sessions["root@avalon.irc"]) == [other]
    reply, _ = h.run(ADMIN, adhoc.NODE_DESTROY, sid=sids[0], action="cancel")
    assert app_condition(reply) == "session-expired"
    reply, _ = h.run(ADMIN, adhoc.NODE_DESTROY, sid=sids[-1], action="cancel")
    assert command_of(reply)["status"] == "canceled"
    # what is remembered of ended sessions is bounded too
    for _ in range(3 * adhoc.ENDED_REMEMBERED):
        h.run(ADMIN, adhoc.NODE_LIST_ROOMS)
    assert len(h.service.admin_commands.ended["oper@avalon.irc"]) == adhoc.ENDED_REMEMBERED


def test_an_idle_session_expires() -> None:
    h = Service()
    kept, idle = start(h), start(h)
    h.now += adhoc.SESSION_LIFETIME / 2
    reply, _ = h.run(ADMIN, adhoc.NODE_DESTROY, sid=kept, action="prev")  # touched
    assert app_condition(reply) == "bad-action"
    h.now += adhoc.SESSION_LIFETIME / 2 + 1
    reply, _ = h.run(ADMIN, adhoc.NODE_DESTROY, sid=idle, action="cancel")
    assert app_condition(reply) == "session-expired"
    reply, _ = h.run(ADMIN, adhoc.NODE_DESTROY, sid=kept, action="cancel")
    assert command_of(reply)["status"] == "canceled"
    h.now += adhoc.SESSION_LIFETIME + 1
    h.run(ADMIN, adhoc.NODE_LIST_ROOMS)
    assert h.service.admin_commands.sessions == {}


# --- destroy ----------------------------------------------------------------------------------

def test_destroy_form_is_mod_mucs() -> None:
    h = Service()
    h.create_instant(WUMPUS, "Wumpus")
    h.create_instant(WUMPUS, "Wumpus", room="zzz@" + SERVICE)
    reply, _ = h.run(ADMIN, adhoc.NODE_DESTROY)
    cmd = command_of(reply)
    actions = stanzas.child(cmd, "actions")
    assert actions["execute"] == "complete" and [a.name for a in actions.elements()] == \
        ["complete"]
    fields = form_fields(cmd)
    assert stanzas.text_of(stanzas.child(fields["FORM_TYPE"], "value")) == adhoc.NODE_DESTROY
    assert fields["rooms"]["type"] == "list-multi"
    assert stanzas.child(fields["rooms"], "required") is not None
    assert options(fields["rooms"]) == [ROOM, "zzz@" + SERVICE]
    assert {"reason", "alternate", "password"} <= set(fields)


def test_destroy_reuses_the_rooms_destroy() -> None:
    h = Service()
    h.create_instant(WUMPUS, "Wumpus", persistentroom="1")
    sid = start(h)
    reply, out = h.run(ADMIN, adhoc.NODE_DESTROY, sid=sid, fields={
        "rooms": [ROOM, "nope@" + SERVICE], "reason": "Spam", "alternate": "new@" + SERVICE,
        "password": "secret"})
    cmd = command_of(reply)
    assert cmd["status"] == "completed" and cmd["sessionid"] == sid
    assert notes(cmd) == [("info", f"The following rooms were destroyed:\n{ROOM}"),
                          ("warn", f"No such rooms:\nnope@{SERVICE}")]
    [gone] = out.stanzas_for(WUMPUS)
    destroy = stanzas.child(stanzas.child(gone, "x", xmlns.MUC_USER), "destroy")
    assert gone["type"] == "unavailable" and destroy["jid"] == "new@" + SERVICE
    assert stanzas.text_of(stanzas.child(destroy, "reason")) == "Spam"
    assert stanzas.text_of(stanzas.child(destroy, "password")) == "secret"
    assert ROOM not in h.service.rooms
    assert DeleteRoom(ROOM) in out.storage
    assert any(f"{ADMIN} destroyed {ROOM}" in line for _, line in out.log)


def test_destroy_in_one_request_and_its_bad_submissions() -> None:
    h = Service()
    h.create_instant(WUMPUS, "Wumpus")
    for fields, note in (
        ({"reason": "x"}, "rooms: Required value missing"),
        ({"rooms": ROOM, "alternate": "not a jid@"}, "alternate: not a room JID"),
        ({"rooms": ROOM, "alternate": SERVICE}, "alternate: not a room JID"),
        ({"rooms": [f"r{i}@{SERVICE}" for i in range(adhoc.MAX_DESTROY + 1)]},
         f"rooms: at most {adhoc.MAX_DESTROY} at once"),
        ({"rooms": ["nope@" + SERVICE, ROOM + "/nick"]},
         f"No such rooms:\nnope@{SERVICE}\n{ROOM}/nick"),
    ):
        reply, _ = h.run(ADMIN, adhoc.NODE_DESTROY, fields=fields)
        cmd = command_of(reply)
        assert cmd["status"] == "completed" and notes(cmd) == [("error", note)]
        assert ROOM in h.service.rooms
    reply, out = h.run(ADMIN, adhoc.NODE_DESTROY, fields={"rooms": ROOM})  # one shot
    assert command_of(reply)["status"] == "completed" and ROOM not in h.service.rooms
    assert h.service.admin_commands.sessions == {}


def test_list_rooms_in_the_core() -> None:
    h = Service()
    h.create_instant(WUMPUS, "Wumpus", roomname="The Wallops")
    h.join(DIRECT, "Efchen")
    reply, _ = h.run(ADMIN, adhoc.NODE_LIST_ROOMS)
    cmd = command_of(reply)
    assert cmd["status"] == "completed" and notes(cmd) == [("info", "1 room")]
    assert table(cmd) == [{"jid": ROOM, "name": "The Wallops", "occupants": "2",
                           "direct": "2", "via_slaves": "0", "slaves": "",
                           "persistent": "0"}]


def test_long_lists_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adhoc, "MAX_ROWS", 3)
    monkeypatch.setattr(adhoc, "MAX_OPTIONS", 3)
    h = Service()
    for i in range(5):
        h.create_instant(WUMPUS, "Wumpus", room=f"r{i}@{SERVICE}", persistentroom="1")
        h.send(f"<presence from='{WUMPUS}' to='r{i}@{SERVICE}/Wumpus' type='unavailable'/>")
    h.join(DIRECT, "Efchen", room=f"r4@{SERVICE}")
    cmd = command_of(h.run(ADMIN, adhoc.NODE_LIST_ROOMS)[0])
    # the busiest first, then by name
    assert [r["jid"] for r in table(cmd)] == [f"r{i}@{SERVICE}" for i in (4, 0, 1)]
    assert ("warn", "Showing the first 3 of 5 rooms") in notes(cmd)
    cmd = command_of(h.run(ADMIN, adhoc.NODE_DESTROY)[0])
    assert len(options(form_fields(cmd)["rooms"])) == 3


# --- with slaves ------------------------------------------------------------------------------

class AdminNet(Net):
    def __init__(self) -> None:
        super().__init__(admins=ADMINS)
        self.master_log: list[str] = []
        receive = self.master.receive

        def logged(stanza: stanzas.Element, now: float) -> Outbox:
            out = receive(stanza, now)
            self.master_log += [line for _, line in out.log]
            return out

        self.master.receive = logged  # type: ignore[method-assign]

    def run(self, node: str, **kw: object) -> stanzas.Element:
        self.user_sends(command_xml(ADMIN, node, **kw))  # type: ignore[arg-type]
        [reply] = [s for s in self.take(ADMIN) if s.name == "iq"]
        return reply


def room_with_slave_occupant(net: AdminNet) -> None:
    net.join(DIRECT, "Wumpus", ROOM)
    net.join(BIGCHEESE, "BigCheese", ROOM)
    net.join("msa@vesa.yeggmaex.irc/bicycle", "Efchen", ROOM)
    assert net.master.distribution.slave_of(net.master.rooms[ROOM], BIGCHEESE) == slave_jid(VESA)
    for who in (DIRECT, BIGCHEESE, "msa@vesa.yeggmaex.irc/bicycle"):
        net.take(who)


def test_list_rooms_counts_sessions_direct_and_through_slaves() -> None:
    net = AdminNet()
    room_with_slave_occupant(net)
    [row] = table(command_of(net.run(adhoc.NODE_LIST_ROOMS)))
    assert (row["occupants"], row["direct"], row["via_slaves"], row["slaves"]) == \
        ("3", "1", "2", f"{slave_jid(VESA)} (2)")


def test_destroy_reaches_occupants_behind_a_slave() -> None:
    net = AdminNet()
    room_with_slave_occupant(net)
    net.s2s.clear()
    cmd = command_of(net.run(adhoc.NODE_DESTROY, fields={
        "rooms": ROOM, "reason": "Moving", "alternate": "new@" + SERVICE}))
    assert cmd["status"] == "completed"
    for who in (DIRECT, BIGCHEESE, "msa@vesa.yeggmaex.irc/bicycle"):
        [gone] = [s for s in net.take(who) if s.name == "presence"]
        destroy = stanzas.child(stanzas.child(gone, "x", xmlns.MUC_USER), "destroy")
        assert gone["type"] == "unavailable" and destroy["jid"] == "new@" + SERVICE
        assert stanzas.text_of(stanzas.child(destroy, "reason")) == "Moving"
    # one copy to vesa's slave for its two occupants (§4.6), as for an owner's destroy
    assert net.s2s[(VESA, "presence")] == 1
    assert ROOM not in net.master.rooms and ROOM not in net.master.distribution.links


def test_show_slaves_and_their_link_states() -> None:
    net = AdminNet()
    room_with_slave_occupant(net)
    registered = net.master.distribution.link(ROOM, slave_jid(VESA))
    assert registered is not None
    cmd = command_of(net.run(adhoc.NODE_SLAVES))
    rows = table(cmd)
    assert [(r["slave"], r["room"], r["state"]) for r in rows] == [
        (slave_jid("eris.dclxvii.irc"), "", "unregistered"),
        (slave_jid("killrc.oulubox.irc"), "", "unregistered"),
        (slave_jid(VESA), ROOM, "LIVE"),
    ]
    vesa = rows[-1]
    assert vesa["domains"] == VESA and vesa["sessions"] == "2"
    assert vesa["seq"] == str(registered.seq) and int(vesa["seq"]) > 0
    assert vesa["since"] == stanzas.format_stamp(registered.since)
    assert notes(cmd)[0] == ("info", "3 slaves allowed, 1 registered; links: 1 LIVE, "
                                     "0 STALE, 0 SPLIT")
    # The link splits: the table says so, and since when.
    net.down.add(VESA)
    net.user_sends(f"<message from='{DIRECT}' to='{ROOM}' type='groupchat'><body>x</body>"
                   "</message>")
    for _ in range(10):
        net.tick(registered.keepalive)
        if registered.split:
            break
    assert registered.split
    split_at = registered.since
    assert split_at > 0
    vesa = table(command_of(net.run(adhoc.NODE_SLAVES)))[-1]
    assert (vesa["state"], vesa["since"]) == ("SPLIT", stanzas.format_stamp(split_at))


def test_resync_in_two_stages() -> None:
    net = AdminNet()
    room_with_slave_occupant(net)
    net.join(BIGCHEESE, "BigCheese", "other@" + SERVICE)
    net.take(BIGCHEESE)
    cmd = command_of(net.run(adhoc.NODE_RESYNC))
    sid = cmd["sessionid"]
    actions = stanzas.child(cmd, "actions")
    assert actions["execute"] == "next"
    assert {a.name for a in actions.elements()} == {"next", "complete"}
    slave_field = form_fields(cmd)["slave"]
    assert slave_field["type"] == "list-single"
    assert options(slave_field) == sorted(slave_jid(d) for d in net.slaves)
    cmd = command_of(net.run(adhoc.NODE_RESYNC, sid=sid, fields={"slave": slave_jid(VESA)}))
    assert cmd["status"] == "executing"
    assert {a.name for a in stanzas.child(cmd, "actions").elements()} == {"prev", "complete"}
    assert options(form_fields(cmd)["room"]) == [adhoc.ALL_ROOMS, "other@" + SERVICE, ROOM]
    # back to the first stage, which shows the slave chosen
    cmd = command_of(net.run(adhoc.NODE_RESYNC, sid=sid, action="prev"))
    assert stanzas.text_of(stanzas.child(form_fields(cmd)["slave"], "value")) == slave_jid(VESA)
    net.run(adhoc.NODE_RESYNC, sid=sid, action="next", fields={"slave": slave_jid(VESA)})
    net.master_log.clear()
    cmd = command_of(net.run(adhoc.NODE_RESYNC, sid=sid, fields={"room": ROOM}))
    assert cmd["status"] == "completed"
    assert notes(cmd) == [("info", f"Asked {slave_jid(VESA)} to register again for {ROOM}")]
    # the slave got the <rejoin/> and registered again: its snapshot followed
    assert any(f"{ADMIN} forced a resync of slave {slave_jid(VESA)} for {ROOM}" in line
               for line in net.master_log)
    assert sum(f"slave {slave_jid(VESA)} registered for {ROOM}" in line
               for line in net.master_log) == 1
    assert not any("other@" in line for line in net.master_log)
    # occupants behind the slave saw nothing of it: nothing was missing
    assert net.take(BIGCHEESE) == []


def test_resync_all_rooms_of_a_slave_in_one_request() -> None:
    net = AdminNet()
    room_with_slave_occupant(net)
    net.join(BIGCHEESE, "BigCheese", "other@" + SERVICE)
    net.master_log.clear()
    cmd = command_of(net.run(adhoc.NODE_RESYNC, fields={"slave": slave_jid(VESA),
                                                        "room": adhoc.ALL_ROOMS}))
    assert cmd["status"] == "completed"
    assert notes(cmd) == [("info", f"Asked {slave_jid(VESA)} to register again for all its "
                                   "rooms (2 rooms registered here)")]
    assert any(f"{ADMIN} forced a resync of slave {slave_jid(VESA)} for all its rooms" in line
               for line in net.master_log)
    for room in (ROOM, "other@" + SERVICE):
        assert sum(f"slave {slave_jid(VESA)} registered for {room}" in line
                   for line in net.master_log) == 1
    # 'complete' at the first stage: all its rooms too
    net.master_log.clear()
    sid = command_of(net.run(adhoc.NODE_RESYNC))["sessionid"]
    cmd = command_of(net.run(adhoc.NODE_RESYNC, sid=sid, action="complete",
                             fields={"slave": slave_jid(VESA)}))
    assert cmd["status"] == "completed"
    assert sum("registered for" in line for line in net.master_log) == 2


def test_resync_all_rooms_brings_back_a_registration_the_master_lost() -> None:
    net = AdminNet()
    room_with_slave_occupant(net)
    lost = net.master.distribution.links[ROOM].pop(slave_jid(VESA))
    net.master_log.clear()
    cmd = command_of(net.run(adhoc.NODE_RESYNC, fields={"slave": slave_jid(VESA), "room": ""}))
    assert notes(cmd) == [("info", f"Asked {slave_jid(VESA)} to register again for all its "
                                   "rooms (0 rooms registered here)")]
    link = net.master.distribution.link(ROOM, slave_jid(VESA))
    assert link is not None and link is not lost and link.state is RegistrationState.LIVE
    assert sum(f"slave {slave_jid(VESA)} registered for {ROOM}" in line
               for line in net.master_log) == 1


@pytest.mark.parametrize(("fields", "note"), [
    ({"slave": "dmuc.nowhere.irc"}, "slave: not a slave of this service"),
    ({"slave": slave_jid(VESA), "room": "other@" + SERVICE},
     f"room: {slave_jid(VESA)} is not registered for other@{SERVICE}"),
])
def test_resync_bad_submissions(fields: dict[str, str], note: str) -> None:
    net = AdminNet()
    room_with_slave_occupant(net)
    net.master_log.clear()
    cmd = command_of(net.run(adhoc.NODE_RESYNC, fields=fields))
    assert (cmd["status"], notes(cmd)) == ("completed", [("error", note)])
    assert not any("register" in line for line in net.master_log)


def test_rejoin_reuses_the_netjoin_path() -> None:
    """A forced resync of a live link sends exactly what a netjoin sends."""
    net = AdminNet()
    room_with_slave_occupant(net)
    link = net.master.distribution.link(ROOM, slave_jid(VESA))
    assert link is not None and link.state is RegistrationState.LIVE
    out = Outbox(net.now)
    net.master.distribution.ask_rejoin(link, out, "test")
    [rejoin] = out.stanzas_for(slave_jid(VESA))
    x = stanzas.child(rejoin, "x", xmlns.DMUC)
    assert (rejoin.name, rejoin["from"]) == ("message", ROOM)
    assert x is not None and [c.name for c in x.elements()] == ["rejoin"]
    assert out.log == [("info", "test; asking it to register again")]

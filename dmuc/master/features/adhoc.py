"""Admin commands over XMPP: XEP-0050 ad-hoc commands on the service JID, in the manner of
XEP-0133 and of Prosody 0.12's mod_adhoc and mod_muc ("Destroy Rooms"), for the service's
admins (`[muc] admins`) and nobody else.

The commands (their nodes):

- ``urn:xmpp:tmp:dmuc:0#list-rooms``: every room with its occupants, and how many of their
  sessions are reached directly and through each slave; a result table at once.
- ``http://prosody.im/protocol/muc#destroy`` (mod_muc's node and form): the rooms to destroy,
  a reason and an alternate venue; each room goes through the room's own destroy (its
  occupants and its slaves are told as for an owner's destroy).
- ``urn:xmpp:tmp:dmuc:0#slaves``: each allowed slave, the rooms it is registered for and
  the state of each link (LIVE / STALE / SPLIT, since when, the stanza count, when it was
  last heard); a result table at once.
- ``urn:xmpp:tmp:dmuc:0#resync``: choose a slave, then one of its rooms or all of them;
  the slave is asked to register again, for one room with the `<rejoin/>` the master sends
  at a netjoin, for all with the `<restarted/>` it sends when it reconnects, and each
  snapshot replays what it is missing. A first form that already names the room
  completes at once.

As mod_adhoc: the commands list (disco#items on the commands node) holds only what the
requester may run (nothing for a non-admin); disco#info on a command node, or running
one, is refused to anyone else with `forbidden`. Each refusal is one log line.

Sessions (XEP-0050 §3.4): each belongs to the full JID that started it; a few a time per
admin (a new one ends the oldest), ended after SESSION_LIFETIME seconds idle. An admin's
recently ended session ids are remembered, so that using one again gets `session-expired`
rather than `bad-sessionid`. Admins are a configured few, so all this stays small.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from twisted.words.xish.domish import Element

from dmuc import jids, xmlns
from dmuc.hooks import Hooks
from dmuc.master.distribution import RegistrationState, SlaveRegistration
from dmuc.master.features.roomconfig import Field, Values, text
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas, xep0282

if TYPE_CHECKING:
    from dmuc.master.service import MUCService

NODE_LIST_ROOMS = f"{xmlns.DMUC}#list-rooms"
NODE_DESTROY = "http://prosody.im/protocol/muc#destroy"  # mod_muc's node and FORM_TYPE
NODE_SLAVES = f"{xmlns.DMUC}#slaves"
NODE_RESYNC = f"{xmlns.DMUC}#resync"

ACTIONS = ("execute", "cancel", "prev", "next", "complete")
MAX_SESSIONS_PER_ADMIN = 8  # open at once; a new one ends the oldest
SESSION_LIFETIME = 600.0  # seconds a session may stay idle
ENDED_REMEMBERED = 16  # ended session ids remembered per admin (for session-expired)
# Rows of a result table (250 rows of list-rooms: about 15 ms of CPU to build and serialise,
# 85 kB) and options of a form's list (1,000 rooms: about 7 ms, 100 kB): each answer stays one
# short burst of work, and well under Prosody's stanza size limits.
MAX_ROWS = 250
MAX_OPTIONS = 1000
MAX_DESTROY = 100  # rooms destroyed by one submission: it stays one short burst of work
MAX_NAMED = 20  # rooms named in a note
ALL_ROOMS = "*"  # the resync's "all its rooms" option (a room JID always has an '@')

NO_PERMISSION = "You don't have permission to execute this command"  # mod_adhoc's texts
NOT_AVAILABLE = "This item is not available to you"


@dataclass
class Session:
    sid: str
    node: str
    requester: str  # the full JID that started it: nobody else may continue it
    touched: float
    stage: int = 0
    values: Values = field(default_factory=dict)  # what its earlier stages were given
    actions: tuple[str, ...] = ()  # what the stage shown last allows
    default: str = "complete"  # what 'execute' means there


@dataclass
class Step:
    """The session goes on: the form of its current stage."""

    form: Element
    actions: tuple[str, ...]  # of "prev", "next", "complete"
    default: str


@dataclass
class Done:
    """The command completed: notes (type, text) and perhaps a result form."""

    notes: list[tuple[str, str]]
    result: Element | None = None


def failed(message: str) -> Done:
    """As Prosody's adhoc forms: a bad submission completes the command with an error note."""
    return Done([("error", message)])


@dataclass(frozen=True)
class Command:
    node: str
    name: str
    # what the session's current stage shows (a Done: the command needs no input)
    show: Callable[[AdminCommands, Session], Step | Done]
    # a submission of the current stage, with its action ("next" or "complete"); None
    # for a command that needs no input (its session ends with its first answer)
    submit: Callable[[AdminCommands, Session, Values, str, Outbox], Step | Done] | None = None


class AdminCommands:
    def __init__(self, service: MUCService) -> None:
        self.service = service
        self.commands: dict[str, Command] = {c.node: c for c in (
            Command(NODE_LIST_ROOMS, "List rooms", _list_rooms),
            Command(NODE_DESTROY, "Destroy Rooms", _destroy_form, _destroy),
            Command(NODE_SLAVES, "Show slaves and their links", _show_slaves),
            Command(NODE_RESYNC, "Resync a slave", _resync_form, _resync),
        )}
        self.sessions: dict[str, OrderedDict[str, Session]] = {}  # admin -> id -> session
        self.ended: dict[str, deque[str]] = {}  # admin -> recently ended session ids

    def is_admin(self, full_jid: str) -> bool:
        return jids.bare(full_jid) in self.service.admins

    # --- hooks ---------------------------------------------------------------------------

    def disco_features(self, features: list[str]) -> None:
        features.append(xmlns.COMMANDS)

    def service_iq(self, stanza: Element, payload: Element, out: Outbox) -> bool | None:
        itype, node = stanza.getAttribute("type"), payload.getAttribute("node")
        if itype == "get" and payload.uri == xmlns.DISCO_ITEMS and node == xmlns.COMMANDS:
            self._items(stanza, out)
        elif itype == "get" and payload.uri == xmlns.DISCO_INFO and node is not None \
                and (node == xmlns.COMMANDS or node in self.commands):
            self._info(stanza, node, out)
        elif itype == "set" and payload.uri == xmlns.COMMANDS and payload.name == "command":
            self._execute(stanza, payload, out)
        else:
            return None
        return True

    # --- discovery (XEP-0050 §2) ---------------------------------------------------------

    def _items(self, stanza: Element, out: Outbox) -> None:
        reply = stanzas.query(xmlns.DISCO_ITEMS, {"node": xmlns.COMMANDS})
        if self.is_admin(stanza["from"]):
            for node, command in sorted(self.commands.items()):
                item = reply.addElement("item")
                item.attributes.update({"jid": self.service.jid, "node": node,
                                        "name": command.name})
        out.send(stanzas.iq_result(stanza, reply))

    def _info(self, stanza: Element, node: str, out: Outbox) -> None:
        reply = stanzas.query(xmlns.DISCO_INFO, {"node": node})
        identity = reply.addElement("identity")
        if node == xmlns.COMMANDS:
            identity.attributes.update({"category": "automation", "type": "command-list",
                                        "name": "Ad-Hoc Commands"})
            out.send(stanzas.iq_result(stanza, reply))
            return
        if not self.is_admin(stanza["from"]):
            stanzas.refuse(out, stanza, "auth", "forbidden", NOT_AVAILABLE,
                           what=f"disco#info of ad-hoc command {node}")
            return
        identity.attributes.update({"category": "automation", "type": "command-node",
                                    "name": self.commands[node].name})
        for var in (xmlns.COMMANDS, xmlns.DATA_FORMS):
            reply.addElement("feature")["var"] = var
        out.send(stanzas.iq_result(stanza, reply))

    # --- execution (XEP-0050 §3, §4) -----------------------------------------------------

    def _execute(self, stanza: Element, request: Element, out: Outbox) -> None:
        sender = stanza["from"]
        node = request.getAttribute("node") or ""
        what = f"ad-hoc command {stanzas.one_line(node, 80)!r}"
        command = self.commands.get(node)
        if command is None:
            stanzas.refuse(out, stanza, "cancel", "item-not-found", "No such command",
                           what=what)
            return
        if not self.is_admin(sender):
            stanzas.refuse(out, stanza, "auth", "forbidden", NO_PERMISSION, what=what)
            return
        action = request.getAttribute("action") or "execute"
        if action not in ACTIONS:
            _refuse(out, stanza, "malformed-action",
                    f"Unknown action {stanzas.one_line(action, 40)!r}", what)
            return
        form = stanzas.child(request, "x", xmlns.DATA_FORMS)
        values = stanzas.parse_form(form) if form is not None \
            and form.getAttribute("type") == "submit" else None
        self._expire(out.now)
        sid = request.getAttribute("sessionid")
        if sid is None:
            if action != "execute":
                _refuse(out, stanza, "bad-action", "A command starts with 'execute'", what)
                return
            session = self._open(sender, node, out.now)
            shown = command.show(self, session)
            if isinstance(shown, Step) and values is not None and command.submit is not None:
                # As Prosody's adhoc forms: a first request with a filled form is its
                # submission (a script's one-shot call)
                self._remember(session, shown)
                self._answer(stanza, session, command.submit(self, session, values,
                                                             shown.default, out), out)
            else:
                self._answer(stanza, session, shown, out)
            return
        session = self._find(sender, sid)
        if session is None or session.node != node:
            if sid in self.ended.get(jids.bare(sender), ()):
                stanzas.refuse(out, stanza, "cancel", "not-allowed",
                               "The session has ended", what=what,
                               app_condition=(xmlns.COMMANDS, "session-expired"))
            else:
                _refuse(out, stanza, "bad-sessionid", "No such session", what)
            return
        session.touched = out.now
        if action == "cancel":
            self._end(session)
            out.send(stanzas.iq_result(stanza, _command_element(session, "canceled")))
            return
        if action == "prev":
            if "prev" not in session.actions:
                _refuse(out, stanza, "bad-action", "There is no previous stage", what)
                return
            session.stage -= 1
            self._answer(stanza, session, command.show(self, session), out)
            return
        if action == "execute":
            action = session.default
        if action not in session.actions:
            _refuse(out, stanza, "bad-action", f"'{action}' is not possible here", what)
            return
        if values is None or command.submit is None:
            _refuse(out, stanza, "bad-payload", "Expected the submitted form", what)
            return
        self._answer(stanza, session, command.submit(self, session, values, action, out),
                     out)

    def _answer(self, stanza: Element, session: Session, answer: Step | Done,
                out: Outbox) -> None:
        if isinstance(answer, Step):
            self._remember(session, answer)
            reply = _command_element(session, "executing")
            actions = reply.addElement("actions")
            actions["execute"] = answer.default
            for action in answer.actions:
                actions.addElement(action)
            reply.addChild(answer.form)
        else:
            self._end(session)
            reply = _command_element(session, "completed")
            for kind, note in answer.notes:
                reply.addElement("note", content=note)["type"] = kind
            if answer.result is not None:
                reply.addChild(answer.result)
        out.send(stanzas.iq_result(stanza, reply))

    @staticmethod
    def _remember(session: Session, step: Step) -> None:
        session.actions, session.default = step.actions, step.default

    # --- sessions ------------------------------------------------------------------------

    def _open(self, requester: str, node: str, now: float) -> Session:
        admin = jids.bare(requester)
        mine = self.sessions.setdefault(admin, OrderedDict())
        while len(mine) >= MAX_SESSIONS_PER_ADMIN:
            self._end(next(iter(mine.values())))
        session = Session(secrets.token_hex(8), node, requester, now)
        mine[session.sid] = session
        return session

    def _find(self, requester: str, sid: str) -> Session | None:
        mine = self.sessions.get(jids.bare(requester))
        if mine is None:
            return None
        session = mine.get(sid)
        if session is None or session.requester != requester:
            return None
        mine.move_to_end(sid)  # the least recently used first, for expiry
        return session

    def _end(self, session: Session) -> None:
        admin = jids.bare(session.requester)
        mine = self.sessions.get(admin)
        if mine is None or mine.pop(session.sid, None) is None:
            return
        if not mine:
            del self.sessions[admin]
        self.ended.setdefault(admin, deque(maxlen=ENDED_REMEMBERED)).append(session.sid)

    def _expire(self, now: float) -> None:
        for mine in list(self.sessions.values()):
            while mine:
                oldest = next(iter(mine.values()))
                if now - oldest.touched < SESSION_LIFETIME:
                    break
                self._end(oldest)


def _command_element(session: Session, status: str) -> Element:
    el = Element((xmlns.COMMANDS, "command"))
    el.attributes.update({"node": session.node, "sessionid": session.sid, "status": status})
    return el


def _refuse(out: Outbox, stanza: Element, condition: str, text_: str, what: str) -> None:
    """XEP-0050 §4.6: bad-request with the command's own condition."""
    stanzas.refuse(out, stanza, "modify", "bad-request", text_, what=what,
                   app_condition=(xmlns.COMMANDS, condition))


def _first(names: list[str]) -> str:
    shown = "\n".join(names[:MAX_NAMED])
    more = len(names) - MAX_NAMED
    return shown + (f"\n(and {more} more)" if more > 0 else "")


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _cap_note(shown: int, total: int, what: str) -> list[tuple[str, str]]:
    return [("warn", f"Showing the first {shown} of {total} {what}")] if total > shown else []


# --- list rooms ------------------------------------------------------------------------------

ROOM_COLUMNS = (("jid", "Room"), ("name", "Name"), ("occupants", "Occupants"),
                ("direct", "Sessions reached directly"),
                ("via_slaves", "Sessions through slaves"), ("slaves", "Slaves (sessions)"),
                ("persistent", "Persistent"))


def _list_rooms(cmds: AdminCommands, session: Session) -> Done:
    service = cmds.service
    # the busiest first: a long list is cut where it matters least
    names = sorted(service.rooms, key=lambda jid: (-len(service.rooms[jid].occupants), jid))
    rows = []
    for room_jid in names[:MAX_ROWS]:
        room = service.rooms[room_jid]
        routes = service.distribution.routes.get(room_jid)
        behind = sorted(routes.sessions.items()) if routes is not None else []
        rows.append({
            "jid": room_jid, "name": room.config.name or "",
            "occupants": str(len(room.occupants)),
            "direct": str(len(routes.direct) if routes is not None else 0),
            "via_slaves": str(len(routes.via) if routes is not None else 0),
            "slaves": ", ".join(f"{slave} ({len(s)})" for slave, s in behind),
            "persistent": "1" if room.config.persistent else "0",
        })
    table = stanzas.table_form(NODE_LIST_ROOMS, ROOM_COLUMNS, rows, title="Rooms")
    notes = [("info", _count(len(names), "room"))] + _cap_note(len(rows), len(names), "rooms")
    return Done(notes, table)


# --- destroy rooms (mod_muc's "Destroy Rooms", with a reason and an alternate venue) ---------

def _destroy_form(cmds: AdminCommands, session: Session) -> Step:
    rooms = sorted(cmds.service.rooms)[:MAX_OPTIONS]
    fields: list[Field] = [
        {"var": "rooms", "type": "list-multi", "label": "Rooms to destroy:",
         "required": True, "options": [(jid, jid) for jid in rooms]},
        {"var": "reason", "type": "text-single", "label": "Reason (shown to the occupants)"},
        {"var": "alternate", "type": "jid-single", "label": "Alternate venue (a room JID)"},
        {"var": "password", "type": "text-private",
         "label": "Password of the alternate venue"},
    ]
    form = stanzas.form(NODE_DESTROY, fields, title="Destroy rooms",
                        instructions="Select the rooms to destroy")
    return Step(form, ("complete",), "complete")


def _destroy(cmds: AdminCommands, session: Session, values: Values, action: str,
             out: Outbox) -> Done:
    service = cmds.service
    wanted = list(dict.fromkeys(v.strip() for v in values.get("rooms", []) if v.strip()))
    if not wanted:
        return failed("rooms: Required value missing")
    if len(wanted) > MAX_DESTROY:
        return failed(f"rooms: at most {MAX_DESTROY} at once")
    alternate = text(values, "alternate") or None
    if alternate is not None:
        venue = jids.parse(alternate.strip())
        if venue is None or venue.user is None or venue.resource is not None:
            return failed("alternate: not a room JID")
        alternate = venue.userhost()
    reason = text(values, "reason") or None
    password = text(values, "password") or None
    destroyed, missing = [], []
    for name in wanted:
        room_jid = jids.parse(name)
        room = service.rooms.get(room_jid.userhost()) \
            if room_jid is not None and room_jid.resource is None else None
        if room is None:
            missing.append(name)
            continue
        room.destroy(out, reason=reason, alternate=alternate, password=password)
        out.info(f"{session.requester} destroyed {room.jid} (ad-hoc command)")
        destroyed.append(room.jid)
    notes = []
    if destroyed:
        notes.append(("info", "The following rooms were destroyed:\n" + _first(destroyed)))
    if missing:
        notes.append(("warn" if destroyed else "error",
                      "No such rooms:\n" + _first([stanzas.one_line(m, 100) for m in missing])))
    return Done(notes)


# --- slaves and their links --------------------------------------------------------------

SLAVE_COLUMNS = (("slave", "Slave"), ("domains", "Domains"), ("room", "Room"),
                 ("state", "Link state"), ("since", "Since"), ("seq", "Stanzas sent"),
                 ("sessions", "Sessions through it"), ("last_heard", "Last heard"))


def _links_of(cmds: AdminCommands) -> dict[str, list[SlaveRegistration]]:
    """Each allowed slave -> its links, by room."""
    allowed = cmds.service.distribution.allowed
    found: dict[str, list[SlaveRegistration]] = {slave: [] for slave in allowed}
    for room_jid in sorted(cmds.service.distribution.links):
        for slave, link in cmds.service.distribution.links[room_jid].items():
            found.setdefault(slave, []).append(link)
    return found


def _show_slaves(cmds: AdminCommands, session: Session) -> Done:
    distribution = cmds.service.distribution
    rows: list[dict[str, str]] = []
    total = 0
    counts = {state: 0 for state in RegistrationState}
    by_slave = _links_of(cmds)
    for slave, links in sorted(by_slave.items()):
        domains = ", ".join(sorted(distribution.allowed.get(slave, ())))
        if not links:
            total += 1
            if len(rows) < MAX_ROWS:
                rows.append({"slave": slave, "domains": domains, "state": "unregistered"})
        for link in links:
            total += 1
            counts[link.state] += 1
            if len(rows) >= MAX_ROWS:
                continue
            routes = distribution.routes.get(link.room)
            behind = routes.sessions.get(slave, ()) if routes is not None else ()
            rows.append({
                "slave": slave, "domains": domains, "room": link.room,
                "state": link.state.name, "since": stanzas.format_stamp(link.since),
                "seq": str(link.seq), "sessions": str(len(behind)),
                "last_heard": stanzas.format_stamp(link.last_heard),
            })
    registered = sum(1 for links in by_slave.values() if links)
    summary = (f"{_count(len(distribution.allowed), 'slave')} allowed, {registered} "
               "registered; links: "
               + ", ".join(f"{counts[s]} {s.name}" for s in RegistrationState))
    table = stanzas.table_form(NODE_SLAVES, SLAVE_COLUMNS, rows, title="Slaves")
    return Done([("info", summary)] + _cap_note(len(rows), total, "rows"), table)


# --- force a resync of one slave ---------------------------------------------------------

def _resync_form(cmds: AdminCommands, session: Session) -> Step:
    by_slave = _links_of(cmds)
    chosen = text(session.values, "slave")
    if session.stage == 0:
        options = [(slave, f"{slave} ({len(links)} rooms)")
                   for slave, links in sorted(by_slave.items())][:MAX_OPTIONS]
        form = stanzas.form(NODE_RESYNC, [
            {"var": "slave", "type": "list-single", "label": "Slave", "required": True,
             "value": chosen, "options": options}],
            title="Resync a slave", instructions="Choose the slave to resync")
        return Step(form, ("next", "complete"), "next")
    links = by_slave.get(chosen or "", [])
    options = [(ALL_ROOMS, f"All its rooms ({len(links)})")]
    options += [(link.room, f"{link.room} ({link.state.name})")
                for link in links[:MAX_OPTIONS]]
    form = stanzas.form(NODE_RESYNC, [
        {"var": "slave", "type": "fixed", "value": chosen},
        {"var": "room", "type": "list-single", "label": "Room", "value": ALL_ROOMS,
         "options": options}],
        title=f"Resync {chosen}", instructions="Choose the room, or all of them")
    return Step(form, ("prev", "complete"), "complete")


def _resync(cmds: AdminCommands, session: Session, values: Values, action: str,
            out: Outbox) -> Step | Done:
    distribution = cmds.service.distribution
    if session.stage == 0:
        slave = (text(values, "slave") or "").strip()
        if slave not in distribution.allowed:
            return failed("slave: not a slave of this service")
        session.values["slave"] = [slave]
        if action == "next" and "room" not in values:
            session.stage = 1
            return _resync_form(cmds, session)
    slave = text(session.values, "slave") or ""
    room_name = (text(values, "room") or "").strip()
    if not room_name or room_name == ALL_ROOMS:
        return _resync_all(cmds, session, slave, out)
    room_jid = jids.parse(room_name)
    link = distribution.link(room_jid.userhost(), slave) if room_jid is not None else None
    if link is None:
        return failed(f"room: {slave} is not registered for "
                      f"{stanzas.one_line(room_name, 100)}")
    distribution.ask_rejoin(link, out, f"{session.requester} forced a resync of slave "
                                       f"{slave} for {link.room}")
    note = f"Asked {slave} to register again for {link.room}"
    if link.split:
        note += " (the link is split: the slave may not hear it)"
    return Done([("info", note)])


def _resync_all(cmds: AdminCommands, session: Session, slave: str, out: Outbox) -> Done:
    """Every room of the slave: the one <restarted/> the master sends each slave when it
    reconnects, rather than one <rejoin/> a room (a slave may mirror thousands). The slave
    registers again every room of the service it mirrors, even one the master has lost."""
    known = len(_links_of(cmds).get(slave, []))
    out.send(xep0282.master_restarted(cmds.service.jid, slave))
    out.info(f"{session.requester} forced a resync of slave {slave} for all its rooms "
             f"({known} registered here); asking it to register them again")
    return Done([("info", f"Asked {slave} to register again for all its rooms "
                          f"({_count(known, 'room')} registered here)")])


def setup(hooks: Hooks, service: MUCService) -> AdminCommands:
    """Hook the admin commands of `service`."""
    commands = AdminCommands(service)
    hooks.add("service-disco-features", commands.disco_features)
    hooks.add("service-iq", commands.service_iq)
    return commands

"""Small steps on top of muc_helpers.Harness shared by the XEP-0045 unit tests."""

from __future__ import annotations

from twisted.words.xish import domish

from dmuc import xmlns
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas
from tests.unit.muc_helpers import ROOM, Harness

MUC_USER = xmlns.MUC_USER


def occ(nick: str, room: str = ROOM) -> str:
    """The occupant JID of `nick`."""
    return f"{room}/{nick}"


def groupchat(h: Harness, who: str, body: str | None = "hello", *, room: str = ROOM,
              mid: str = "g1", extra: str = "") -> Outbox:
    inner = f"<body>{body}</body>" if body is not None else ""
    return h.send(f"<message from='{who}' to='{room}' type='groupchat' id='{mid}'>"
                  f"{inner}{extra}</message>")


def private(h: Harness, who: str, nick: str, body: str = "psst", *, mtype: str = "chat",
            mid: str = "p1", room: str = ROOM) -> Outbox:
    return h.send(f"<message from='{who}' to='{room}/{nick}' type='{mtype}' id='{mid}'>"
                  f"<body>{body}</body></message>")


def iq(h: Harness, who: str, to: str, itype: str, payload: str, iq_id: str = "q1") -> Outbox:
    return h.send(f"<iq type='{itype}' id='{iq_id}' from='{who}' to='{to}'>{payload}</iq>")


def admin_set(h: Harness, actor: str, items: str, room: str = ROOM, iq_id: str = "a1") -> Outbox:
    return iq(h, actor, room, "set",
              f"<query xmlns='http://jabber.org/protocol/muc#admin'>{items}</query>", iq_id)


def admin_get(h: Harness, actor: str, attrs: str, room: str = ROOM) -> Outbox:
    return iq(h, actor, room, "get",
              f"<query xmlns='http://jabber.org/protocol/muc#admin'><item {attrs}/></query>",
              "ag")


def owner_get(h: Harness, actor: str, room: str = ROOM) -> Outbox:
    return iq(h, actor, room, "get", "<query xmlns='http://jabber.org/protocol/muc#owner'/>",
              "og")


def owner_submit(h: Harness, actor: str, fields: dict[str, str | list[str]] | None = None,
                 room: str = ROOM, form_type: str = "submit", iq_id: str = "os") -> Outbox:
    parts = ["<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig"
             "</value></field>"] if fields else []
    for var, value in (fields or {}).items():
        values = value if isinstance(value, list) else [value]
        parts.append(f"<field var='{var}'>" + "".join(f"<value>{v}</value>" for v in values)
                     + "</field>")
    return iq(h, actor, room, "set",
              "<query xmlns='http://jabber.org/protocol/muc#owner'>"
              f"<x xmlns='jabber:x:data' type='{form_type}'>{''.join(parts)}</x></query>", iq_id)


def leave(h: Harness, who: str, nick: str, room: str = ROOM, status: str = "") -> Outbox:
    inner = f"<status>{status}</status>" if status else ""
    return h.send(f"<presence type='unavailable' from='{who}' to='{room}/{nick}'>{inner}"
                  "</presence>")


def presences(out: Outbox, jid: str) -> list[domish.Element]:
    return [s for s in out.stanzas_for(jid) if s.name == "presence"]


def messages(out: Outbox, jid: str) -> list[domish.Element]:
    return [s for s in out.stanzas_for(jid) if s.name == "message"]


def iqs(out: Outbox, jid: str) -> list[domish.Element]:
    return [s for s in out.stanzas_for(jid) if s.name == "iq"]


def presence_from(out: Outbox, jid: str, nick: str, room: str = ROOM) -> list[domish.Element]:
    """Presences delivered to `jid` about occupant `nick`."""
    return [s for s in presences(out, jid) if s.getAttribute("from") == occ(nick, room)]


def one(found: list[domish.Element]) -> domish.Element:
    assert len(found) == 1, [s.toXml() for s in found]
    return found[0]


def muc_x(stanza: domish.Element) -> domish.Element | None:
    return stanzas.child(stanza, "x", MUC_USER)


def items(stanza: domish.Element) -> list[dict[str, str]]:
    x = muc_x(stanza)
    return [dict(i.attributes) for i in stanzas.children(x, "item")] if x is not None else []


def form_field(form: domish.Element, var: str) -> domish.Element | None:
    for field in stanzas.children(form, "field"):
        if field.getAttribute("var") == var:
            return field
    return None


def field_values(form: domish.Element, var: str) -> list[str]:
    field = form_field(form, var)
    return [str(v) for v in stanzas.children(field, "value")] if field is not None else []


def payload(stanza: domish.Element) -> domish.Element:
    found = next(stanza.elements(), None)
    assert found is not None, stanza.toXml()
    return found


def all_to(out: Outbox) -> set[str]:
    """Every address something in the Outbox goes to."""
    found: set[str] = set()
    for d in out.deliveries:
        if d.recipients is None:
            found.add(d.stanza.getAttribute("to"))
        else:
            found.update(d.recipients)
    return found

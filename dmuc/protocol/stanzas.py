"""Every stanza the service builds is built here.

Stanzas are ``twisted.words.xish.domish.Element`` trees: pure data, no I/O.
"""

from __future__ import annotations

import calendar
import re
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from xml.sax.saxutils import quoteattr

from twisted.words.xish import domish

from dmuc import jids, xmlns

Element = domish.Element

# XEP-0045 error code numbers that clients still read (legacy 'code' attribute).
LEGACY_ERROR_CODES = {
    "bad-request": "400",
    "not-authorized": "401",
    "forbidden": "403",
    "item-not-found": "404",
    "not-allowed": "405",
    "not-acceptable": "406",
    "registration-required": "407",
    "conflict": "409",
    "service-unavailable": "503",
    "jid-malformed": "400",
    "feature-not-implemented": "501",
    "policy-violation": "403",
}


def new(name: str, attrs: dict[str, str] | None = None, ns: str | None = None) -> Element:
    """A stanza-level element (jabber:client is implied on the wire by the component)."""
    el = Element((ns, name))
    for key, value in (attrs or {}).items():
        if value is not None:
            el[key] = value
    return el


def child(parent: Element, name: str, ns: str | None = None) -> Element | None:
    """First direct child with this name (and namespace, when given)."""
    for el in parent.elements():
        if el.name == name and (ns is None or el.uri == ns):
            return el
    return None


def children(parent: Element, name: str, ns: str | None = None) -> list[Element]:
    return [
        el for el in parent.elements() if el.name == name and (ns is None or el.uri == ns)
    ]


def text_of(el: Element | None) -> str | None:
    return None if el is None else str(el)


def _interned(name: Any) -> Any:
    return sys.intern(name) if type(name) is str else name


def _shallow(el: Element) -> Element:
    # Names, namespaces and attribute keys come fresh from the parser with each stanza:
    # interned, the copies a room keeps (a presence per occupant) share one of each.
    dup = Element((_interned(el.uri), _interned(el.name)), _interned(el.defaultUri))
    dup.attributes = {_interned(k): v for k, v in el.attributes.items()}
    dup.localPrefixes = dict(el.localPrefixes)
    return dup


def copy(el: Element) -> Element:
    """A deep copy, detached from any parent. Iterative: no depth of nesting exhausts the
    Python stack (the shell refuses deep stanzas anyway, see `measure`)."""
    root = _shallow(el)
    pending = [(el, root)]
    while pending:
        source, dup = pending.pop()
        for node in source.children:
            if isinstance(node, Element):
                child_dup = _shallow(node)
                child_dup.parent = dup
                dup.children.append(child_dup)
                pending.append((node, child_dup))
            else:
                dup.children.append(node)
    return root


# --- limits on what the cores accept ---------------------------------------------------


@dataclass(frozen=True)
class StanzaSize:
    """How big a stanza is: nesting depth (the stanza itself is 1), number of elements,
    and characters (names, attribute names and values, text)."""

    depth: int
    elements: int
    chars: int


def measure(el: Element, *, max_depth: int | None = None, max_elements: int | None = None,
            max_chars: int | None = None) -> StanzaSize:
    """The size of `el`, walked iteratively. The walk stops as soon as one of the given
    limits is exceeded (the result then exceeds that limit), so a hostile stanza costs at
    most the limits' worth of work."""
    depth = chars = 0
    elements = 1
    pending: list[tuple[Element, int]] = [(el, 1)]

    def over() -> bool:
        return ((max_depth is not None and depth > max_depth)
                or (max_elements is not None and elements > max_elements)
                or (max_chars is not None and chars > max_chars))

    while pending and not over():
        node, level = pending.pop()
        depth = max(depth, level)
        chars += len(node.name or "")
        for key, value in node.attributes.items():
            chars += len(key if isinstance(key, str) else key[1]) + len(value)
        for child_node in node.children:
            if isinstance(child_node, Element):
                elements += 1
                pending.append((child_node, level + 1))
            else:
                chars += len(child_node)
            if over():
                break
    return StanzaSize(depth, elements, chars)


# At most this many digits in an integer read from a stanza: Python's int() is quadratic in
# the number of digits and refuses more than 4,300 (ValueError).
MAX_INT_DIGITS = 10
SELF_PRESENCE = "110"  # the status of an occupant's own presence: last in its <x/>
_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)


def parse_bounded_int(text: str | None, lo: int, hi: int, *,
                      max_digits: int = MAX_INT_DIGITS) -> int | None:
    """The integer `text` spells in ASCII digits (surrounding whitespace allowed), or None
    when it is missing, malformed, longer than `max_digits` digits or outside [lo, hi].
    The length is checked before int() sees the text."""
    if text is None:
        return None
    text = text.strip(" \t\r\n")
    if not text or len(text.lstrip("+-")) > max_digits or not _INT.fullmatch(text):
        return None
    value = int(text)
    return value if lo <= value <= hi else None


# --- errors -------------------------------------------------------------------------


def error_reply(
    stanza: Element,
    err_type: str,
    condition: str,
    text: str | None = None,
    *,
    from_: str | None = None,
    keep_payload: bool = False,
    by: str | None = None,
    app_condition: tuple[str, str] | None = None,
) -> Element:
    """The error answer to `stanza` (RFC 6120 §8.3), sent back to its sender. `by` names
    the entity that generated it (XEP-0045 / RFC 6120 §8.2): by default the bare JID it
    comes from (the room, or the service), as mod_muc does. `app_condition` (namespace,
    name): an application-specific condition after the text (RFC 6120 §8.4)."""
    reply = new(stanza.name, {"id": stanza.getAttribute("id")})
    reply["type"] = "error"
    reply["to"] = stanza.getAttribute("from")
    reply["from"] = from_ or stanza.getAttribute("to")
    if keep_payload:
        for el in stanza.elements():
            if el.name != "error":
                reply.addChild(copy(el))
    error = reply.addElement("error")
    error["type"] = err_type
    if condition in LEGACY_ERROR_CODES:
        error["code"] = LEGACY_ERROR_CODES[condition]
    by = by or (reply["from"] or "").partition("/")[0]
    if by:
        error["by"] = by
    error.addElement((xmlns.STANZAS, condition))
    if text:
        error.addElement((xmlns.STANZAS, "text"), content=text)
    if app_condition is not None:
        error.addElement(app_condition)
    return reply


class _Sink(Protocol):
    """What `refuse` writes to (an Outbox)."""

    def send(self, stanza: Element) -> None: ...

    def info(self, message: str) -> None: ...


_CONTROL = {c: " " for c in range(32)} | {0x7F: " "}


def one_line(text: str, limit: int = 200) -> str:
    """`text` made safe for a single log line: control characters become spaces, and it is
    cut at `limit` characters."""
    text = text.translate(_CONTROL)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def refuse(out: _Sink, stanza: Element, err_type: str, condition: str,
           text: str | None = None, *, what: str, **kwargs: object) -> None:
    """Answer `stanza` with an error and log the refusal once, at info: every refusal
    of the room features goes through here. `what` names the request (e.g.
    "muc#admin set to room@service"); `kwargs` go to error_reply."""
    out.send(error_reply(stanza, err_type, condition, text, **kwargs))  # type: ignore[arg-type]
    because = f": {text}" if text else ""
    out.info(one_line(f"refused {what} from {stanza.getAttribute('from')}: "
                      f"{condition}{because}"))


def refuse_malformed_address(out: _Sink, stanza: Element, services: Iterable[str],
                             answerer: str) -> None:
    """A stanza whose 'to' does not parse. Prosody preps addresses before routing, but
    its prep is not strict: a nickname with unassigned code points (e.g. U+1F916) gets
    through. As mod_muc: to an occupant JID of one of `services`, jid-malformed from that
    occupant JID, "Nickname must pass strict validation"; any other malformed address is
    answered by `answerer`. The master's rule, and the slave's for its users' stanzas."""
    if stanza.getAttribute("type") in ("error", "result"):
        return
    raw = stanza.getAttribute("to") or ""
    room, slash, _ = raw.partition("/")
    room_jid = jids.parse(room)
    if slash and room_jid is not None and room_jid.user and room_jid.host in services:
        refuse(out, stanza, "modify", "jid-malformed", "Nickname must pass strict validation",
               what=f"{stanza.name} to {room_jid.userhost()}", from_=raw,
               by=room_jid.userhost())
        return
    refuse(out, stanza, "modify", "jid-malformed", what=f"{stanza.name} to a malformed address",
           from_=answerer, by=answerer)


def join_error(stanza: Element, err_type: str, condition: str, text: str | None = None) -> Element:
    """A refused join: the error presence carries the <x xmlns=muc/> (XEP-0045 §7.2)."""
    reply = error_reply(stanza, err_type, condition, text)
    reply.children.insert(0, Element((xmlns.MUC, "x")))
    return reply


def iq_result(stanza: Element, payload: Element | None = None) -> Element:
    reply = new("iq", {"type": "result", "id": stanza.getAttribute("id")})
    reply["from"] = stanza.getAttribute("to")
    reply["to"] = stanza.getAttribute("from")
    if payload is not None:
        reply.addChild(payload)
    return reply


def iq(iq_type: str, from_: str, to: str, iq_id: str, payload: Element | None = None) -> Element:
    el = new("iq", {"type": iq_type, "from": from_, "to": to, "id": iq_id})
    if payload is not None:
        el.addChild(payload)
    return el


def query(ns: str, attrs: dict[str, str] | None = None) -> Element:
    el = Element((ns, "query"))
    for key, value in (attrs or {}).items():
        if value is not None:
            el[key] = value
    return el


# --- MUC presence and messages ---------------------------------------------------------


def muc_user_x(
    items: Sequence[dict[str, str | None]] = (),
    statuses: Iterable[str] = (),
    *,
    reason: str | None = None,
    actor_nick: str | None = None,
    actor_jid: str | None = None,
) -> Element:
    """<x xmlns='http://jabber.org/protocol/muc#user'> with items and status codes; an
    item's actor named by its nick and (to those who may see it) its real JID. In
    mod_muc's order: the codes of the change (in the order given), the items, then 110
    (the occupant's own copy)."""
    x = Element((xmlns.MUC_USER, "x"))
    codes = list(dict.fromkeys(statuses))
    for code in codes:
        if code != SELF_PRESENCE:
            x.addElement("status")["code"] = code
    for attrs in items:
        item = x.addElement("item")
        for key, value in attrs.items():
            if value is not None:
                item[key] = value
        if actor_nick or actor_jid:
            actor = item.addElement("actor")
            if actor_nick:
                actor["nick"] = actor_nick
            if actor_jid:
                actor["jid"] = actor_jid
        if reason:
            item.addElement("reason", content=reason)
    if SELF_PRESENCE in codes:
        x.addElement("status")["code"] = SELF_PRESENCE
    return x


def occupant_presence(
    base: Element | None,
    from_: str,
    x: Element,
    presence_type: str | None = None,
    *,
    owned: bool = False,
) -> Element:
    """An occupant's presence as the room sends it: the user's own payload (show, status,
    caps...) and id without any MUC elements, from the occupant JID, with the room's
    muc#user x. As mod_muc, an unavailable presence the user did not send (a kick, the
    old nick of a nick change) takes nothing from its last available one. `owned`: `base`
    is the caller's to give away (a tree just parsed): its children move, uncopied."""
    pres = new("presence", {"from": from_})
    if presence_type:
        pres["type"] = presence_type
    if base is not None and (base.getAttribute("type") == "unavailable") != \
            (presence_type == "unavailable"):
        base = None
    if base is not None and base.getAttribute("id"):
        pres["id"] = base["id"]
    if base is not None:
        for el in base.elements():
            if el.uri in (xmlns.MUC, xmlns.MUC_USER) or el.name == "error":
                continue
            if presence_type == "unavailable" and el.name not in ("status",):
                continue
            pres.addChild(el if owned else copy(el))
    pres.addChild(x)
    return pres


def delay(stamp: float, from_: str) -> Element:
    el = Element((xmlns.DELAY, "delay"))
    el["from"] = from_
    el["stamp"] = format_stamp(stamp)
    return el


def format_stamp(stamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def parse_stamp(text: str) -> float | None:
    """XEP-0082 DateTime to POSIX seconds; None if malformed."""
    m = re.fullmatch(
        r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", text.strip()
    )
    if not m:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    try:
        base = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    except (ValueError, OverflowError):
        return None
    frac = float(m.group(7)) if m.group(7) else 0.0
    tz = m.group(8)
    offset = 0
    if tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        offset = sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    return base + frac - offset


def subject_message(from_: str, subject: str | None) -> Element:
    msg = new("message", {"from": from_, "type": "groupchat"})
    msg.addElement("subject", content=subject or "")
    return msg


def affiliation_notice(room_jid: str, user: str, affiliation: str) -> Element:
    """To a user outside the room whose affiliation changed: status 101 (as mod_muc)."""
    msg = new("message", {"from": room_jid, "to": user, "type": "headline"})
    msg.addElement("body", content=f"Your affiliation in room {room_jid} is now {affiliation}.")
    msg.addChild(muc_user_x(statuses=["101"]))
    return msg


def status_message(room_jid: str, codes: Iterable[str]) -> Element:
    """A groupchat message from the room carrying only status codes (e.g. 104)."""
    msg = new("message", {"from": room_jid, "type": "groupchat"})
    msg.addChild(muc_user_x(statuses=codes))
    return msg


# --- reading MUC stanzas -----------------------------------------------------------------


def muc_item(presence: Element) -> Element | None:
    x = child(presence, "x", xmlns.MUC_USER)
    return child(x, "item") if x is not None else None


def item_role(presence: Element) -> str:
    item = muc_item(presence)
    return item.getAttribute("role", "none") if item is not None else "none"


def item_nick(presence: Element) -> str | None:
    item = muc_item(presence)
    return item.getAttribute("nick") if item is not None else None


def has_status(presence: Element, code: str) -> bool:
    x = child(presence, "x", xmlns.MUC_USER)
    return x is not None and any(s.getAttribute("code") == code
                                 for s in children(x, "status"))


def error_condition(stanza: Element) -> str | None:
    """The defined condition of an error stanza (RFC 6120 §8.3.3), None if it has none."""
    error = child(stanza, "error")
    if error is None:
        return None
    for el in error.elements():
        if el.uri == xmlns.STANZAS and el.name != "text":
            return el.name
    return None


# --- data forms (XEP-0004) -----------------------------------------------------------


def form(
    form_type: str,
    fields: Sequence[dict],
    *,
    kind: str = "form",
    title: str | None = None,
    instructions: str | None = None,
) -> Element:
    """Build a data form. Each field: var (none for a `fixed` section header), type,
    label, desc, datatype (XEP-0122), value (str, bool, list), options, required."""
    x = Element((xmlns.DATA_FORMS, "x"))
    x["type"] = kind
    if title:
        x.addElement("title", content=title)
    if instructions:
        x.addElement("instructions", content=instructions)
    hidden = x.addElement("field")
    hidden["var"] = "FORM_TYPE"
    hidden["type"] = "hidden"
    hidden.addElement("value", content=form_type)
    for spec in fields:
        field = x.addElement("field")
        if spec.get("var"):
            field["var"] = spec["var"]
        if spec.get("type"):
            field["type"] = spec["type"]
        if spec.get("label"):
            field["label"] = spec["label"]
        if spec.get("desc"):
            field.addElement("desc", content=spec["desc"])
        if spec.get("datatype"):
            field.addElement((xmlns.DATA_VALIDATE, "validate"))["datatype"] = spec["datatype"]
        value = spec.get("value")
        if isinstance(value, bool):
            values = ["1" if value else "0"]
        elif isinstance(value, (list, tuple)):
            values = [str(v) for v in value]
        elif value is None:
            values = []
        else:
            values = [str(value)]
        if spec.get("required"):
            field.addElement("required")
        for v in values:
            field.addElement("value", content=v)
        for opt_value, opt_label in spec.get("options", ()):
            option = field.addElement("option")
            option["label"] = opt_label
            option.addElement("value", content=opt_value)
    return x


def table_form(form_type: str, columns: Sequence[tuple[str, str]],
               rows: Iterable[dict[str, str]], *, title: str | None = None) -> Element:
    """A multi-item result form (XEP-0004 §3.4): `columns` are (var, label) of the
    <reported/> fields, each row one <item/> with a value for each of them."""
    x = form(form_type, (), kind="result", title=title)
    reported = x.addElement("reported")
    for var, label in columns:
        field = reported.addElement("field")
        field["var"], field["label"] = var, label
    for row in rows:
        item = x.addElement("item")
        for var, _ in columns:
            field = item.addElement("field")
            field["var"] = var
            field.addElement("value", content=row.get(var, ""))
    return x


def parse_form(x: Element) -> dict[str, list[str]]:
    """Submitted form fields as var -> values. A field submitted twice counts once, the
    first time (as Prosody's util.dataforms)."""
    values: dict[str, list[str]] = {}
    for field in children(x, "field"):
        var = field.getAttribute("var")
        if var and var not in values:
            values[var] = [str(v) for v in children(field, "value")]
    return values


def form_type(x: Element) -> str | None:
    values = parse_form(x).get("FORM_TYPE")
    return values[0] if values else None


def parse_bool(values: list[str] | None) -> bool | None:
    if not values:
        return None
    value = values[0].strip().lower()
    if value in ("1", "true"):
        return True
    if value in ("0", "false"):
        return False
    raise ValueError(value)


# --- serialisation for broadcast --------------------------------------------------------


_NEEDS_ESCAPE = frozenset("&<>'\"\n\r\t")


def render_without_to(stanza: Element) -> str:
    """The stanza serialised without 'to', ready for render_many (and for caching)."""
    stanza.attributes.pop("to", None)
    return stanza.toXml()


def element_name(xml: str) -> str:
    """The name of the element a serialisation begins with ("<presence from=..." ->
    "presence")."""
    match = _ELEMENT_NAME.match(xml)
    if match is None:
        raise ValueError("not a serialised element")
    return match.group(1)


_ELEMENT_NAME = re.compile(r"<([^\s/>]+)")


def render_many(stanza: Element | str, recipients: Iterable[str],
                xml: str | None = None) -> Iterator[str]:
    """Serialise `stanza` once (or take `xml`, its cached render_without_to; then
    `stanza` may be its name only) and yield one copy per recipient that differs only in
    'to'.

    This is the broadcast hot path: a 1000-occupant room serialises a message once.
    """
    if xml is None:
        assert isinstance(stanza, Element), "a name needs its serialisation"
        xml = render_without_to(stanza)
    name = stanza if isinstance(stanza, str) else stanza.name
    cut = len(name) + 1  # just after "<message"
    head, tail = xml[:cut], xml[cut:]
    for to in recipients:
        # JIDs almost never need escaping; quoteattr only when they do (it is the hot spot).
        if _NEEDS_ESCAPE.isdisjoint(to):
            yield f"{head} to='{to}'{tail}"
        else:
            yield f"{head} to={quoteattr(to)}{tail}"


def strip_stream_namespace(el: Element) -> Element:
    """Make a parsed stanza namespace-neutral (jabber:component:accept or jabber:client
    becomes None), so that copies of its children serialise without a stray xmlns."""
    stream = (xmlns.COMPONENT, xmlns.CLIENT)
    pending = [el]
    while pending:  # iterative: a deeply nested stanza must not exhaust the stack
        node = pending.pop()
        if node.uri in stream:
            node.uri = None
        if node.defaultUri in stream:
            node.defaultUri = None
        pending.extend(n for n in node.children if isinstance(n, Element))
    return el


def parse_xml(xml: str, *, stream_ns: str | None = None) -> Element:
    """One element from its serialised form (as stored, or a stanza written in a test or a
    benchmark). With `stream_ns`, it is parsed as if inside a stream of that namespace and
    made namespace-neutral, as the shell does for received stanzas."""
    found: list[Element] = []
    stream = domish.elementStream()
    stream.DocumentStartEvent = lambda root: None
    stream.ElementEvent = found.append
    stream.DocumentEndEvent = lambda: None
    wrapper = f"<r xmlns={quoteattr(stream_ns)}>" if stream_ns else "<r>"
    stream.parse(wrapper.encode() + xml.encode() + b"</r>")
    if not found:
        raise ValueError("no element")
    return strip_stream_namespace(found[0]) if stream_ns else found[0]


def parse_stanza(xml: str) -> Element:
    """A stanza as the component receives it from Prosody."""
    return parse_xml(xml, stream_ns=xmlns.COMPONENT)


def render(stanza: Element) -> str:
    return stanza.toXml()

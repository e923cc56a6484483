"""Random, well-formed but hostile stanzas for the fuzz tests (issue 8 point 6): the unit
one drives the core with them (test_fuzz_core.py), the integration one sends them through
real Prosody to `twistd dmuc-master` (tests/integration/test_fuzz.py).

Everything comes from one `random.Random`, so a seed gives the same stanzas again. The
stanzas mix what the service understands (MUC joins, messages, muc#admin and muc#owner
requests, invitations, registrations, XEP-0282 requests) with what it must survive: odd
types, attributes and values, unknown children and namespaces, huge or unicode texts,
malformed JIDs and integers, nesting, empty and duplicate elements.
"""

from __future__ import annotations

import random
from xml.sax.saxutils import escape, quoteattr

NS = {
    "muc": "http://jabber.org/protocol/muc",
    "user": "http://jabber.org/protocol/muc#user",
    "admin": "http://jabber.org/protocol/muc#admin",
    "owner": "http://jabber.org/protocol/muc#owner",
    "register": "jabber:iq:register",
    "data": "jabber:x:data",
    "dmuc": "urn:xmpp:tmp:dmuc:0",
    "disco_info": "http://jabber.org/protocol/disco#info",
    "disco_items": "http://jabber.org/protocol/disco#items",
    "ping": "urn:xmpp:ping",
    "vcard": "vcard-temp",
    "sid": "urn:xmpp:sid:0",
    "delay": "urn:xmpp:delay",
    "stanzas": "urn:ietf:params:xml:ns:xmpp-stanzas",
    "conference": "jabber:x:conference",
}
OTHER_NAMESPACES = ["urn:example:fuzz", "jabber:client", "jabber:component:accept",
                    "http://jabber.org/protocol/muc#unknown", "", "urn:xmpp:hints",
                    "http://www.w3.org/1999/xhtml"]
ROOMCONFIG_VARS = [
    "roomname", "roomdesc", "lang", "persistentroom", "publicroom", "membersonly",
    "moderatedroom", "passwordprotectedroom", "roomsecret", "whois", "maxusers",
    "historylength", "allowpm", "changesubject", "presencebroadcast", "allowinvites",
    "enablelogging", "roomowners", "roomadmins", "nonsense",
]
ROLES = ["moderator", "participant", "visitor", "none", "owner", "", "god"]
AFFILIATIONS = ["owner", "admin", "member", "outcast", "none", "", "moderator"]
STATUS_CODES = ["100", "110", "170", "201", "210", "301", "303", "307", "321", "332", "999"]
CONDITIONS = ["bad-request", "gone", "item-not-found", "remote-server-timeout",
              "service-unavailable", "recipient-unavailable", "internal-server-error",
              "policy-violation", "not-a-condition"]
WEIRD_TEXT = ["", " ", "   ", "\t", "0", "-1", "99999999999999999999", "1e9", "NaN", "true",
              "false", "none", "anyone", "moderators", "\u202eevil", "e\u0301", "\U0001f916",
              "\u200b", "<&>'\"", "a" * 300, "ÿ" * 50, "\u4e2d\u6587", "x@bad..example",
              "@", "/", "a/b", "room@", "\u0627\u0644\u0639\u0631\u0628\u064a\u0629"]
TYPES = {
    "message": ["groupchat", "chat", "normal", "headline", "error", None],
    "presence": [None, "unavailable", "probe", "error", "subscribe", "unsubscribed"],
    "iq": ["get", "set", "result", "error"],
}
WEIRD_TYPES = ["", "bogus", "GROUPCHAT", "get set", "x" * 100]


class StanzaFuzzer:
    """`stanza(sender)` -> one stanza as XML text, addressed to the service, one of `rooms`
    or an occupant of them. `sender` None leaves 'from' out (a client's server sets it)."""

    def __init__(self, rng: random.Random, service: str, rooms: list[str],
                 users: list[str], nicks: list[str], *, big: int = 20_000,
                 other_services: list[str] = ()) -> None:
        self.rng = rng
        self.service = service
        self.rooms = rooms
        self.users = users
        self.nicks = nicks
        self.big = big  # the longest text
        self.other_services = list(other_services)

    # --- building blocks ----------------------------------------------------------------

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def pick(self, seq):  # type: ignore[no-untyped-def]
        return seq[self.rng.randrange(len(seq))]

    def text(self) -> str:
        r = self.rng.random()
        if r < 0.5:
            return self.pick(["hi", "hello world", "Phaedrus", "ok", "?", "/me waves"])
        if r < 0.8:
            return self.pick(WEIRD_TEXT)
        if r < 0.95:
            alphabet = "abc xyz\n\t<>&'\"éß€\u0301\u202e\U0001f916\u4e2d"
            return "".join(self.pick(alphabet) for _ in range(self.rng.randrange(1, 200)))
        return self.pick(["x", "\u00e9", "<>"]) * self.rng.randrange(1000, self.big)

    def number(self) -> str:
        return self.pick(["0", "1", "5", "20", "-5", "1000000", "9" * 30, "abc", "",
                          " 7 ", "0x10", "1.5", str(self.rng.randrange(-10, 10**6))])

    def jid(self) -> str:
        r = self.rng.random()
        if r < 0.55:
            return self.pick(self.users)
        if r < 0.7:
            return self.pick(self.users).split("/")[0]
        if r < 0.8:
            return f"{self.pick(self.rooms)}/{self.nick()}"
        if r < 0.85:
            return self.pick([self.service, *self.rooms])
        return self.pick(["x@bad..example", "@example", "a@b@c", "user@", "a@example/",
                          "\U0001f916@example", "a" * 1100 + "@example", "example..com",
                          "user@xn--zz.example", "user@-bad-.example", "", " ",
                          "user@example/" + "r" * 1100])

    def nick(self) -> str:
        if self.chance(0.8):
            return self.pick(self.nicks)
        return self.pick(["   ", "a" * 300, "\U0001f916", "\u202eevil", "e\u0301", "x/y",
                          "n@m", "\u200b", "nick\u3000", "Ⅻ"])

    def attrs(self, **fixed: object) -> str:
        """Attributes: `fixed` ones (None: left out), and sometimes random extra ones."""
        pairs = [(k, v) for k, v in fixed.items() if v is not None]
        for _ in range(self.rng.randrange(0, 3) if self.chance(0.2) else 0):
            pairs.append((self.pick(["xml:lang", "foo", "type", "code", "by", "id",
                                     "jid", "nick", "role", "lang"]), self.text()))
        seen: set[str] = set()
        out = []
        for key, value in pairs:
            key = key.rstrip("_")
            if key in seen:
                continue  # XML allows an attribute once
            seen.add(key)
            out.append(f" {key}={quoteattr(str(value))}")
        return "".join(out)

    def el(self, name: str, ns: str | None = None, inner: str = "", **attrs: object) -> str:
        if ns is not None:
            attrs = {"xmlns": ns, **attrs}
        return f"<{name}{self.attrs(**attrs)}>{inner}</{name}>"

    def junk(self, depth: int = 0) -> str:
        """An element the service does not know, with random content."""
        name = self.pick(["a", "foo", "x", "query", "item", "body", "error", "html",
                          "thread", "origin-id", "no-store"])
        ns = self.pick(OTHER_NAMESPACES + list(NS.values()))
        inner = ""
        if depth < 6 and self.chance(0.5):
            inner = "".join(self.junk(depth + 1) for _ in range(self.rng.randrange(1, 4)))
        elif self.chance(0.7):
            inner = escape(self.text())
        return self.el(name, ns or None, inner)

    def form(self, form_type: str | None, vars_: list[str]) -> str:
        fields = []
        if form_type is not None and self.chance(0.9):
            fields.append(self.el("field", None, self.el("value", None, form_type),
                                  var="FORM_TYPE", type="hidden"))
        for _ in range(self.rng.randrange(0, 6)):
            values = "".join(self.el("value", None, escape(self.value()))
                             for _ in range(self.rng.randrange(0, 4)))
            fields.append(self.el("field", None, values, var=self.pick(vars_)))
        return self.el("x", NS["data"], "".join(fields),
                       type=self.pick(["submit", "submit", "cancel", "form", "result", None]))

    def value(self) -> str:
        return self.pick([self.text(), self.number(), self.jid(), "1", "0", "true", "false",
                          self.pick(ROLES), "moderators", "anyone"])

    # --- payloads -----------------------------------------------------------------------

    def payload(self, kind: str) -> str:
        makers = {
            "message": [self.body, self.body, self.subject, self.invite, self.voice_request,
                        self.user_x, self.stanza_id, self.delay, self.error, self.junk,
                        self.dmuc],
            "presence": [self.muc_join, self.muc_join, self.show, self.status, self.user_x,
                         self.error, self.junk, self.dmuc, self.delay],
            "iq": [self.admin, self.admin, self.owner, self.owner, self.disco, self.ping,
                   self.vcard, self.register, self.dmuc, self.junk, self.error],
        }[kind]
        return self.pick(makers)()

    def body(self) -> str:
        return self.el("body", None, escape(self.text()))

    def subject(self) -> str:
        return self.el("subject", None, escape(self.text()))

    def show(self) -> str:
        return self.el("show", None, self.pick(["away", "chat", "dnd", "xa", "bogus", ""]))

    def status(self) -> str:
        return self.el("status", None, escape(self.text()))

    def muc_join(self) -> str:
        inner = ""
        if self.chance(0.5):
            inner += self.el("history", None, maxchars=self.maybe(self.number),
                             maxstanzas=self.maybe(self.number),
                             seconds=self.maybe(self.number),
                             since=self.maybe(lambda: self.pick(
                                 ["2020-01-01T00:00:00Z", "yesterday", "", "9999-99-99"])))
        if self.chance(0.3):
            inner += self.el("password", None, escape(self.text()))
        return self.el("x", NS["muc"], inner)

    def maybe(self, make):  # type: ignore[no-untyped-def]
        return make() if self.chance(0.6) else None

    def item(self, ns_admin: bool = False) -> str:
        inner = ""
        if self.chance(0.3):
            inner += self.el("reason", None, escape(self.text()))
        if self.chance(0.1):
            inner += self.el("actor", None, nick=self.nick())
        return self.el("item", None, inner, role=self.maybe(lambda: self.pick(ROLES)),
                       affiliation=self.maybe(lambda: self.pick(AFFILIATIONS)),
                       nick=self.maybe(self.nick), jid=self.maybe(self.jid))

    def user_x(self) -> str:
        parts = []
        for _ in range(self.rng.randrange(0, 4)):
            parts.append(self.pick([
                lambda: self.item(),
                lambda: self.el("status", None, code=self.pick(STATUS_CODES)),
                lambda: self.el("invite", None, self.maybe(lambda: self.el(
                    "reason", None, escape(self.text()))) or "", to=self.maybe(self.jid),
                    from_=self.maybe(self.jid)),
                lambda: self.el("decline", None, "", to=self.maybe(self.jid)),
                lambda: self.el("destroy", None, "", jid=self.maybe(self.jid)),
                lambda: self.el("password", None, escape(self.text())),
            ])())
        return self.el("x", NS["user"], "".join(parts))

    def invite(self) -> str:
        count = 1 if self.chance(0.9) else self.rng.randrange(2, 50)
        what = self.pick(["invite", "invite", "decline"])
        invites = "".join(self.el(what, None, self.el("reason", None, escape(self.text()))
                                  if self.chance(0.3) else "", to=self.maybe(self.jid))
                          for _ in range(count))
        return self.el("x", NS["user"], invites)

    def voice_request(self) -> str:
        return self.form("http://jabber.org/protocol/muc#request",
                         ["muc#role", "muc#jid", "muc#roomnick", "muc#request_allow"])

    def stanza_id(self) -> str:
        return self.el("stanza-id", NS["sid"], "", id=self.text(),
                       by=self.pick([*self.rooms, self.service, self.jid()]))

    def delay(self) -> str:
        return self.el("delay", NS["delay"], "", stamp=self.pick(
            ["2020-01-01T00:00:00Z", "bogus", "", "1970-01-01T00:00:00.000Z"]),
            from_=self.maybe(self.jid))

    def error(self) -> str:
        cond = self.el(self.pick(CONDITIONS), NS["stanzas"])
        return self.el("error", None, cond, type=self.pick(["cancel", "wait", "modify",
                                                             "auth", "bogus"]))

    def admin(self) -> str:
        items = "".join(self.item(True) for _ in range(self.rng.randrange(0, 5)))
        return self.el("query", NS["admin"], items)

    def owner(self) -> str:
        inner = self.pick([
            lambda: "",
            lambda: self.form("http://jabber.org/protocol/muc#roomconfig",
                              [f"muc#roomconfig_{v}" for v in ROOMCONFIG_VARS]),
            lambda: self.el("destroy", None, self.el("reason", None, escape(self.text())),
                            jid=self.maybe(self.jid)),
        ])()
        return self.el("query", NS["owner"], inner)

    def disco(self) -> str:
        return self.el("query", self.pick([NS["disco_info"], NS["disco_items"]]), "",
                       node=self.maybe(lambda: self.pick(
                           ["x-roomuser-item", "http://jabber.org/protocol/muc#rooms",
                            self.text()])))

    def ping(self) -> str:
        return self.el("ping", NS["ping"])

    def vcard(self) -> str:
        return self.el("vCard", NS["vcard"])

    def register(self) -> str:
        inner = self.form("http://jabber.org/protocol/muc#register",
                          ["muc#register_roomnick", "muc#register_first",
                           "muc#register_last"]) if self.chance(0.6) else ""
        return self.el("query", NS["register"], inner)

    def dmuc(self) -> str:
        return self.el("x" if self.chance(0.5) else self.pick(["register", "keepalive"]),
                       NS["dmuc"], self.pick([
                           lambda: "",
                           lambda: self.el("refuse", None, jid=self.maybe(self.jid)),
                           lambda: self.el("enter", None, jid=self.maybe(self.jid)),
                           lambda: self.el("leave", None, jid=self.maybe(self.jid)),
                           lambda: self.el("resync", None),
                           lambda: self.el("synced", None, last=self.maybe(self.text)),
                           lambda: self.el("bogus", None),
                       ])(), keepalive=self.maybe(self.number),
                       history=self.maybe(self.number))

    def slave_request(self, room: str, sender: str | None = None) -> str:
        """What a XEP-0282 slave sends for itself, often well-formed."""
        kind = self.pick(["register", "keepalive", "unregister", "refuse", "pong"])
        if kind == "refuse":
            refuse = self.el("refuse", None, jid=self.maybe(self.jid))
            attrs = self.attrs(type="unavailable", id=self.text()[:64], to=room, from_=sender)
            return f"<presence{attrs}>{self.el('x', NS['dmuc'], refuse)}</presence>"
        if kind == "pong":
            return f"<iq{self.attrs(type='result', id=self.text()[:64], to=room, from_=sender)}/>"
        payload = self.el(kind, NS["dmuc"], keepalive=self.maybe(self.number),
                          history=self.maybe(self.number), last=self.maybe(self.text))
        itype = "get" if kind == "keepalive" else "set"
        attrs = self.attrs(type=itype, id=self.text()[:64], to=room, from_=sender)
        return f"<iq{attrs}>{payload}</iq>"

    # --- stanzas ------------------------------------------------------------------------

    def to(self) -> str:
        r = self.rng.random()
        if r < 0.1:
            return self.service
        if r < 0.45:
            return self.pick(self.rooms)
        if r < 0.97 or not self.other_services:
            return f"{self.pick(self.rooms)}/{self.nick()}"
        return self.pick(self.other_services)

    def stanza(self, sender: str | None = None, to: str | None = None,
               max_bytes: int | None = None) -> str:
        """One stanza; with `max_bytes`, one whose UTF-8 form is no longer than that
        (Prosody closes a stream that sends a stanza over its limit, 256 KiB from a
        client)."""
        while True:
            xml = self._stanza(sender, to)
            if max_bytes is None or len(xml.encode()) <= max_bytes:
                return xml

    def _stanza(self, sender: str | None, to: str | None) -> str:
        kind = self.pick(["message", "message", "presence", "presence", "iq"])
        stype = self.pick(TYPES[kind]) if self.chance(0.93) else self.pick(WEIRD_TYPES)
        children = "".join(self.payload(kind) for _ in range(
            self.pick([0, 1, 1, 1, 2, 2, 3, 5])))
        if kind == "iq" and self.chance(0.2):
            children = ""
        stanza_id = self.text()[:64] if self.chance(0.9) else None
        return (f"<{kind}{self.attrs(type=stype, id=stanza_id, to=to or self.to(), from_=sender)}>"
                f"{children}</{kind}>")

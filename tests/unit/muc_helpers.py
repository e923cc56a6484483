"""Drive the sans-I/O MUC core with stanzas written as XML text (no reactor)."""

from __future__ import annotations

from twisted.words.xish import domish

from dmuc.master.service import MUCService, ServiceSettings
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas

SERVICE = "channel.avalon.irc"
ROOM = "wallops@channel.avalon.irc"

# The seed's cast (XEP-0282 §3.1).
WUMPUS = "argl@killrc.oulubox.irc/laptop"
VALDIS = "valdis@killrc.oulubox.irc/desktop"
PHAEDRUS = "phaedrus@killrc.oulubox.irc/phone"
WIZ = "squit@eris.dclxvii.irc/jupiter"
TROY = "troy@eris.dclxvii.irc/screwdriver"
BIGCHEESE = "rubenro@vesa.yeggmaex.irc/shaver"
EFCHEN = "msa@vesa.yeggmaex.irc/bicycle"


def parse(xml: str) -> domish.Element:
    return stanzas.parse_stanza(xml)


class Harness:
    def __init__(self, **settings: object) -> None:
        self.now = 1_000_000.0
        self.service = MUCService(ServiceSettings(jid=SERVICE, **settings))  # type: ignore[arg-type]

    def send(self, xml: str) -> Outbox:
        self.now += 1
        return self.service.receive(parse(xml), self.now)

    def join(self, who: str, nick: str, room: str = ROOM, extra: str = "") -> Outbox:
        return self.send(
            f"<presence from='{who}' to='{room}/{nick}'>"
            f"<x xmlns='http://jabber.org/protocol/muc'>{extra}</x></presence>"
        )

    def create_instant(self, owner: str, nick: str, room: str = ROOM, **config: str) -> Outbox:
        self.join(owner, nick, room)
        fields = "".join(
            f"<field var='muc#roomconfig_{k}'><value>{v}</value></field>" for k, v in config.items()
        )
        return self.send(
            f"<iq type='set' id='cfg' from='{owner}' to='{room}'>"
            "<query xmlns='http://jabber.org/protocol/muc#owner'>"
            f"<x xmlns='jabber:x:data' type='submit'>{fields}</x></query></iq>"
        )


def codes(stanza: domish.Element) -> set[str]:
    x = stanzas.child(stanza, "x", "http://jabber.org/protocol/muc#user")
    return {s["code"] for s in stanzas.children(x, "status")} if x is not None else set()


def item(stanza: domish.Element) -> dict[str, str]:
    x = stanzas.child(stanza, "x", "http://jabber.org/protocol/muc#user")
    it = stanzas.child(x, "item") if x is not None else None
    return dict(it.attributes) if it is not None else {}


error_condition = stanzas.error_condition  # the tests import it from here

"""An in-memory network of one master core and slave cores (no reactor, no sockets).

It routes stanzas the way the real deployment does: a local user's stanza to a room of
the master service goes to its server's slave (mod_dmuc_slave) when there is one, else to
the master; stanzas to a slave JID go to that slave; to a user, into that user's inbox.
It counts what the master's server sends to each other server (the s2s links).
"""

from __future__ import annotations

from collections import Counter, defaultdict

from muc_helpers import SERVICE, parse
from twisted.words.xish.domish import Element

from dmuc import jids
from dmuc.master.service import MUCService, ServiceSettings
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas
from dmuc.slave.service import SlaveService, SlaveSettings

SLAVE_DOMAINS = ("killrc.oulubox.irc", "eris.dclxvii.irc", "vesa.yeggmaex.irc")


def slave_jid(domain: str) -> str:
    return f"dmuc.{domain}"


class Net:
    def __init__(self, slaves: tuple[str, ...] = SLAVE_DOMAINS,
                 allowed: tuple[str, ...] | None = None, **master_settings: object) -> None:
        allowed = slaves if allowed is None else allowed
        self.now = 1_000_000.0
        self.master = MUCService(ServiceSettings(
            jid=SERVICE, room_locking=False,
            slaves={slave_jid(d): frozenset({d}) for d in allowed},
            **master_settings))  # type: ignore[arg-type]
        self.slaves = {d: SlaveService(SlaveSettings(slave_jid(d), frozenset({d}),
                                                     frozenset({SERVICE}))) for d in slaves}
        self.inbox: dict[str, list[Element]] = defaultdict(list)
        self.s2s: Counter[tuple[str, str]] = Counter()  # (to server, stanza kind) from avalon
        self.down: set[str] = set()  # slave domains whose link is cut
        for slave in self.slaves.values():
            self._route(slave.connected(self.now), source=slave.jid)

    def server_of(self, jid: str) -> str:
        host = jids.bare(jid).split("@")[-1]
        if host == SERVICE:
            return "avalon.irc"
        return host[len("dmuc."):] if host.startswith("dmuc.") else host

    def _route(self, out: Outbox, source: str) -> None:
        for delivery in out.deliveries:
            targets = delivery.recipients or [delivery.stanza["to"]]
            for to in targets:
                copy = stanzas.copy(delivery.stanza)
                copy["to"] = to
                self._deliver(copy, source)

    def _deliver(self, stanza: Element, source: str) -> None:
        to = stanza["to"]
        from_server, to_server = self.server_of(source), self.server_of(to)
        if from_server == "avalon.irc" and to_server != "avalon.irc":
            self.s2s[(to_server, stanza.name)] += 1
        host = jids.bare(to).split("@")[-1]
        if from_server != to_server and (from_server in self.down or to_server in self.down):
            return  # netsplit: the link between the two servers is cut
        if host == SERVICE:
            self.now += 0.001
            self._route(self.master.receive(stanza, self.now), source=SERVICE)
        elif host.startswith("dmuc."):
            slave = self.slaves.get(host[len("dmuc."):])
            if slave is not None:
                self.now += 0.001
                self._route(slave.receive(stanza, self.now), source=slave.jid)
        elif "@" not in host and "@" not in to:
            pass  # to a server itself (the mirror list for mod_dmuc_slave)
        else:
            self.inbox[to].append(stanza)

    def user_sends(self, xml: str) -> None:
        """A client's stanza, as its own server handles it (divert to its slave or not)."""
        stanza = parse(xml)
        sender = stanza["from"]
        server = self.server_of(sender)
        to_host = jids.bare(stanza["to"]).split("@")[-1]
        slave = self.slaves.get(server)
        self.now += 0.001
        if slave is not None and to_host == SERVICE and "@" in stanza["to"]:
            self._route(slave.receive(stanza, self.now), source=slave.jid)
        else:
            self._deliver(stanza, sender)

    def tick(self, seconds: float) -> None:
        self.now += seconds
        self._route(self.master.tick(self.now), source=SERVICE)
        for slave in self.slaves.values():
            self._route(slave.tick(self.now), source=slave.jid)

    def join(self, who: str, nick: str, room: str, extra: str = "") -> None:
        self.user_sends(f"<presence from='{who}' to='{room}/{nick}'>"
                        f"<x xmlns='http://jabber.org/protocol/muc'>{extra}</x></presence>")

    def take(self, who: str) -> list[Element]:
        got, self.inbox[who] = self.inbox[who], []
        return got

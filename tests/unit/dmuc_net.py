"""An in-memory network of one master core and slave cores (no reactor, no sockets).

It routes stanzas the way the real deployment does: a local user's stanza to a room of
the master service goes to its server's slave (mod_dmuc_slave) when there is one, else to
the master (stamping a groupchat message with when it got it, <said/>, as the module
does); stanzas to a slave JID go to that slave; to a user, into that user's inbox.
It counts what the master's server sends to each other server (the s2s links).

Faults: a link can be cut (`down`: what crosses it is lost, as a closed or blackholed
link; `one_way`: only one direction loses), stalled (`stall`: what crosses it waits, and
`resume_link` delivers all of it in order, as TCP does after backpressure), and a
process (the master, "avalon.irc", or a slave's domain) can be paused (`pause`: SIGSTOP;
its input waits and it does nothing, not even its timers; `resume` delivers the input, as
SIGCONT does).
"""

from __future__ import annotations

from collections import Counter, defaultdict, deque

from twisted.words.xish.domish import Element

from dmuc import jids, xmlns
from dmuc.master.service import MUCService, ServiceSettings
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas
from dmuc.slave.service import SlaveService, SlaveSettings
from tests.unit.muc_helpers import SERVICE, parse

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
        self.one_way: set[tuple[str, str]] = set()  # (from server, to server) dropped
        self.stalled: dict[str, list[tuple[Element, str]]] = {}  # domain -> what waits
        self.paused: dict[str, list[tuple[Element, str]]] = {}  # process -> its input
        self._wire: deque[tuple[Element, str]] = deque()  # sent, not delivered yet
        self._carrying = False
        for slave in self.slaves.values():
            self._route(slave.connected(self.now), source=slave.jid)

    def server_of(self, jid: str) -> str:
        host = jids.bare(jid).split("@")[-1]
        if host == SERVICE:
            return "avalon.irc"
        return host[len("dmuc."):] if host.startswith("dmuc.") else host

    def _route(self, out: Outbox, source: str) -> None:
        """Everything sent goes through one FIFO, in the order it was sent, and what its
        delivery sends goes behind what was already on its way (as on the wire: a
        process's outputs never overtake each other)."""
        for delivery in out.deliveries:
            targets = delivery.recipients or [delivery.stanza["to"]]
            for to in targets:
                copy = stanzas.copy(delivery.stanza)
                copy["to"] = to
                self._wire.append((copy, source))
        if self._carrying:
            return
        self._carrying = True
        try:
            while self._wire:
                self._deliver(*self._wire.popleft())
        finally:
            self._carrying = False

    def _deliver(self, stanza: Element, source: str, unstalled: bool = False) -> None:
        to = stanza["to"]
        from_server, to_server = self.server_of(source), self.server_of(to)
        if from_server == "avalon.irc" and to_server != "avalon.irc":
            self.s2s[(to_server, stanza.name)] += 1
        host = jids.bare(to).split("@")[-1]
        if from_server != to_server and (from_server in self.down or to_server in self.down):
            return  # netsplit: the link between the two servers is cut
        if (from_server, to_server) in self.one_way:
            return  # one direction of the link blackholed
        crossing = {from_server, to_server} if from_server != to_server else set()
        backlog = next((self.stalled[d] for d in crossing if d in self.stalled), None)
        if backlog is not None and not unstalled:
            backlog.append((stanza, source))  # a stalled link: delivered at its resume
            return
        if self._process_of(host) in self.paused:
            self.paused[self._process_of(host)].append((stanza, source))
            return
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

    @staticmethod
    def _process_of(host: str) -> str:
        """The process a stanza to `host` is handled by ("": a user's client)."""
        if host == SERVICE:
            return "avalon.irc"
        return host[len("dmuc."):] if host.startswith("dmuc.") else ""

    def stall(self, domain: str) -> None:
        """The link between avalon.irc and `domain` stops moving; nothing is lost."""
        self.stalled.setdefault(domain, [])

    def resume_link(self, domain: str) -> None:
        """The stalled link moves again: everything queued on it arrives, in order, before
        anything sent from now on."""
        backlog = self.stalled.get(domain, [])
        while backlog:  # what its delivery sends across goes behind the rest (TCP)
            stanza, source = backlog.pop(0)
            self._deliver(stanza, source, unstalled=True)
        self.stalled.pop(domain, None)

    def pause(self, process: str) -> None:
        """SIGSTOP: `process` ("avalon.irc", the master, or a slave's domain) stops."""
        self.paused.setdefault(process, [])

    def resume(self, process: str, timers_first: bool = False) -> None:
        """SIGCONT: the process reads what waited for it, in order (its timers run first
        when `timers_first`: which comes first after a long stop is up to the reactor)."""
        waiting = self.paused.pop(process, [])
        if timers_first:
            self._tick_process(process)
        for stanza, source in waiting:
            if process in self.slaves and "@" in source:  # a local user's, via its Prosody
                self._route(self.slaves[process].receive(stanza, self.now),
                            source=self.slaves[process].jid)
            else:
                self._deliver(stanza, source)

    def _tick_process(self, process: str) -> None:
        if process in self.paused:
            return
        if process == "avalon.irc":
            self._route(self.master.tick(self.now), source=SERVICE)
        elif process in self.slaves:
            slave = self.slaves[process]
            self._route(slave.tick(self.now), source=slave.jid)

    def user_sends(self, xml: str) -> None:
        """A client's stanza, as its own server handles it (divert to its slave or not)."""
        stanza = parse(xml)
        sender = stanza["from"]
        server = self.server_of(sender)
        to_host = jids.bare(stanza["to"]).split("@")[-1]
        slave = self.slaves.get(server)
        self.now += 0.001
        if slave is not None and to_host == SERVICE and "@" in stanza["to"]:
            if stanza.name == "message" and stanza.getAttribute("type") == "groupchat":
                module_stamp(stanza, self.now)
            if server in self.paused:
                self.paused[server].append((stanza, sender))  # its Prosody queues it
                return
            self._route(slave.receive(stanza, self.now), source=slave.jid)
        else:
            self._deliver(stanza, sender)

    def tick(self, seconds: float) -> None:
        self.now += seconds
        self._tick_process("avalon.irc")
        for domain in self.slaves:
            self._tick_process(domain)

    def join(self, who: str, nick: str, room: str, extra: str = "") -> None:
        self.user_sends(f"<presence from='{who}' to='{room}/{nick}'>"
                        f"<x xmlns='http://jabber.org/protocol/muc'>{extra}</x></presence>")

    def take(self, who: str) -> list[Element]:
        got, self.inbox[who] = self.inbox[who], []
        return got


def module_stamp(stanza: Element, now: float) -> None:
    """What mod_dmuc_slave does to a local user's groupchat message for a mirrored room:
    whatever the client put in the dmuc namespace goes, its own <said/> comes in."""
    stanza.children = [c for c in stanza.children
                       if not (isinstance(c, Element) and c.uri == xmlns.DMUC)]
    x = stanza.addElement((xmlns.DMUC, "x"))
    whole = stanzas.format_stamp(now).rstrip("Z")
    x.addElement("said")["stamp"] = f"{whole}.{int(now % 1 * 1000):03d}Z"  # as the module

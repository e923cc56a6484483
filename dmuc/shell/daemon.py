"""The Twisted/wokkel shell shared by the daemons: an XEP-0114 connection to Prosody that
feeds parsed stanzas to a sans-I/O core and writes back what the core returns."""

from __future__ import annotations

import abc
import dataclasses
import os
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import Metric
from twisted.application import service
from twisted.internet import defer, reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.logger import LogLevel
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.words.protocols.jabber import xmlstream
from twisted.words.xish.domish import Element
from wokkel import component, subprotocols

from dmuc.config import ConfigError, restart_keys
from dmuc.log import get_logger, set_level
from dmuc.outbox import (
    AppendArchive,
    AppendHistory,
    ClearHistory,
    DeleteArchive,
    DeleteRoom,
    ExpireArchive,
    ForgetOccupants,
    Outbox,
    QueryArchive,
    RecordStatus,
    RetractArchived,
    SaveOccupant,
    SaveRoom,
    StorageOp,
)
from dmuc.protocol import stanzas, xep0282
from dmuc.records import ArchiveRecord, OccupantRecord, RoomRecord, status_service
from dmuc.shell import metrics
from dmuc.shell.fairness import FairQueue, OutputLanes, link_peer, sender_key
from dmuc.shell.metrics import Metrics
from dmuc.shell.resume import RETRY_EVERY, TickGate
from dmuc.shell.sdnotify import Notifier
from dmuc.shell.stalls import StallWatch, freeze_startup_objects
from dmuc.storage import Storage, url_for_log

log = get_logger("dmuc")

# Exit statuses: 1 a failure a restart may cure, 2 a configuration to fix (no restart).
EXIT_FAILURE = 1
EXIT_CONFIGURATION = 2

# How long changes of the master's direct occupants are coalesced before one write (a
# burst of joins is one transaction; a crash loses at most this much of them).
OCCUPANT_SAVE_DELAY = 0.1

# Backoff between reconnection attempts, in seconds. Prosody is the daemon's own (local)
# server: an attempt costs nothing, and after a restart of Prosody every user of the room
# waits for the daemon to be back (a 30 s bound made a netjoin after 18 s of downtime
# take 22 s more).
RECONNECT_MAX_DELAY = 5.0


# Stream errors that no retry cures, with what to fix. Prosody may still be starting (its
# components not loaded yet), so a few attempts come first; then the daemon exits with
# status 2 (the units' RestartPreventExitStatus=2: no restart loop).
PERMANENT_REFUSALS = {
    "not-authorized": "check component.secret against the component_secret of {jid}'s "
                      "Component block in Prosody",
    "host-unknown": "Prosody has no Component block for {jid}: add one "
                    "(etc/prosody/dmuc-*.cfg.lua) and reload Prosody",
    "conflict": "another process is already connected to Prosody as {jid}: stop it "
                "(a second instance?)",
}
PERMANENT_ATTEMPTS = 4  # with the backoff: about 5.5 s from the first refusal to the exit


class ComponentConnection(component.Component):
    """wokkel's XEP-0114 component, with one clear log line per failed attempt instead of
    wokkel's stop-and-raise, reconnection with backoff when Prosody goes away, and an end
    (`on_permanent`) when Prosody keeps refusing the stream for a reason retrying cannot
    cure."""

    def __init__(self, host: str, port: int, jid: str, secret: str,
                 on_permanent: Callable[[str], None] | None = None) -> None:
        super().__init__(host, port, jid, secret)
        self.jid = jid
        self.on_permanent = on_permanent
        self.factory.maxDelay = RECONNECT_MAX_DELAY
        self.factory.initialDelay = self.factory.delay = 0.5
        self.factory.noisy = False
        # Twisted's XmlStreamFactory resets the backoff on every TCP connect, so a refused
        # handshake (wrong secret) retried every 0.5 s forever: reset it in _authd instead.
        build = self.factory.buildProtocol

        def build_protocol(addr):  # type: ignore[no-untyped-def]
            delay, retries = self.factory.delay, self.factory.retries
            xs = build(addr)
            self.factory.delay, self.factory.retries = delay, retries
            return xs

        self.factory.buildProtocol = build_protocol
        self.factory.addBootstrap(xmlstream.STREAM_ERROR_EVENT, self._stream_error)
        self._refused: str | None = None  # the stream error of the current attempt
        self._refusals = 0  # permanent refusals since the last successful handshake
        failed, lost = self.factory.clientConnectionFailed, self.factory.clientConnectionLost

        def connection_failed(connector, reason):  # type: ignore[no-untyped-def]
            failed(connector, reason)  # schedules the next attempt
            self._note(f"cannot connect to {host}:{port}: {reason.getErrorMessage()}; "
                       f"retrying in {self.next_attempt_in():.1f} s")

        def connection_lost(connector, reason):  # type: ignore[no-untyped-def]
            lost(connector, reason)
            refused, self._refused = self._refused, None
            if refused is not None:
                self._refusal(refused)
            elif self.running:
                self._note(f"connection to {host}:{port} lost; "
                           f"retrying in {self.next_attempt_in():.1f} s")

        self.factory.clientConnectionFailed = connection_failed
        self.factory.clientConnectionLost = connection_lost

    def next_attempt_in(self) -> float:
        """Seconds until the scheduled reconnection: read from the scheduled call, since
        Twisted versions differ in when they multiply factory.delay (26 does it after
        scheduling, so factory.delay is the attempt after next)."""
        call = getattr(self.factory, "_callID", None)
        clock = self.factory.clock or reactor
        if call is not None and call.active():
            return max(0.0, call.getTime() - clock.seconds())
        return float(self.factory.delay)

    def _note(self, message: str) -> None:
        log.warn("component {jid}: {message}", jid=self.jid, message=message)

    def _stream_error(self, failure: object) -> None:
        """Kept for the line the lost connection writes (one line per attempt)."""
        self._refused = getattr(getattr(failure, "value", None), "condition", "unknown")

    def _refusal(self, condition: str) -> None:
        fix = PERMANENT_REFUSALS.get(condition)
        if fix is None:
            self._note(f"Prosody refused the stream: {condition}; "
                       f"retrying in {self.next_attempt_in():.1f} s")
            return
        self._refusals += 1
        fix = fix.format(jid=self.jid)
        if self._refusals < PERMANENT_ATTEMPTS or self.on_permanent is None:
            self._note(f"Prosody refused the stream: {condition} ({fix}); retrying in "
                       f"{self.next_attempt_in():.1f} s ({self._refusals} of "
                       f"{PERMANENT_ATTEMPTS} attempts)")
            return
        self.factory.stopTrying()
        self.on_permanent(f"component {self.jid}: Prosody refused the stream "
                          f"{self._refusals} times: {condition}; {fix}")

    def _authd(self, xs: xmlstream.XmlStream) -> None:
        log.info("component connected as {jid} to {host}:{port}", jid=self.jid, host=self.host,
                 port=self.port)
        self.factory.resetDelay()
        self._refusals = 0
        super()._authd(xs)

    def initializationFailed(self, reason: object) -> None:
        if self._refused is None:  # a stream error has its line when the connection goes
            self._note(f"stream initialisation failed: {getattr(reason, 'value', reason)}")
        if self.xmlstream is not None and self.xmlstream.transport is not None:
            self.xmlstream.transport.loseConnection()


# Bytes read from the component socket at once (Twisted's default is 64 KiB): 256 KiB of
# stanzas parse in ~20 ms, well inside a reactor turn.
READ_SIZE = 256 * 1024
# What our transport may hold (bytes) before the bulk waits in OutputLanes, and the
# kernel's send buffer of the component socket (Linux doubles it): what a stanza to the
# link's peer may find ahead of it (a slave's fan-out of 1,000 recipients is ~35 KiB).
WRITE_BOUND = 32 * 1024
SEND_BUFFER = 32 * 1024


# XEP-0182: the application-specific condition of a stanza larger than we accept.
NS_XMPP_ERRORS = "urn:xmpp:errors"


@dataclass(frozen=True)
class StanzaLimits:
    """The largest stanza a core is given (see stanzas.measure). Anything bigger is
    answered with policy-violation before any code walks it; every function that walks a
    stanza recursively (domish's serialiser, for one) therefore only sees shallow trees."""

    depth: int
    elements: int
    chars: int


# From users (a JID with a localpart): deeper than any real payload (XHTML-IM, forms,
# vCards stay under a dozen levels), far below Python's recursion limit.
USER_LIMITS = StanzaLimits(depth=32, elements=5_000, chars=512 * 1024)
# From servers and components (slaves, masters): a master's broadcast is a user's stanza
# plus the dmuc wrapper, and a netjoin carries a whole room.
# (Twisted's parser itself drops the stream at 100,000 elements or 10 MiB in a stanza.)
PEER_LIMITS = StanzaLimits(depth=48, elements=100_000, chars=10 * 1024 * 1024)


def _summary(element: Element) -> str:
    """<kind from=... to=... type=... id=...> for a log line (never the whole stanza)."""
    attrs = " ".join(f"{k}={element.getAttribute(k)!r}" for k in ("from", "to", "type", "id")
                     if element.getAttribute(k) is not None)
    return stanzas.one_line(f"<{element.name} {attrs}>", 300)


def _internal_error_line(doing: str, exc: Exception) -> None:
    """One line for an internal error (the traceback only at debug level)."""
    log.error("internal error {doing}: {error}", doing=doing,
              error=stanzas.one_line(f"{type(exc).__name__}: {exc}", 300))
    log.debug("{traceback}", traceback="".join(traceback.format_exception(exc)))


def _small_send_buffers(transport: Any) -> None:
    """What the transport and the kernel hold of our output is out of the lanes' reach:
    a stanza to the link's peer waits behind it. Twisted pauses its producer above its
    bufferSize, which is also how much it reads at once (READ_SIZE, large on purpose), so
    the bound for writing is set apart; the kernel's buffer, left to autotuning, grows
    to megabytes under a flood."""
    if hasattr(transport, "_isSendBufferFull") and hasattr(transport, "dataBuffer"):
        transport._isSendBufferFull = lambda: (  # Twisted's own test, with our bound
            len(transport.dataBuffer) - transport.offset + transport._tempDataLen
            > WRITE_BOUND)
    try:
        transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    except (AttributeError, OSError):  # not a socket (a test's transport)
        pass


class CoreHandler(subprotocols.XMPPHandler):
    """Passes every stanza to `receive` and writes the resulting Outbox.

    One guard around everything a stanza causes: a stanza over the limits is answered
    policy-violation, an exception internal-server-error, each with one log line."""

    def __init__(self, receive: Callable[[Element, float], Outbox], storage: Storage,
                 service_jid: str, on_connect: Callable[[float], Outbox] | None = None,
                 save_delay: float = 0.0, user_limits: StanzaLimits = USER_LIMITS,
                 peer_limits: StanzaLimits = PEER_LIMITS) -> None:
        super().__init__()
        self.receive = receive
        self.storage = storage
        self.service_jid = service_jid
        self.on_connect = on_connect
        self.save_delay = save_delay
        self.user_limits = user_limits
        self.peer_limits = peer_limits
        self._pending_saves: dict[str, SaveRoom] = {}
        self._save_call: Any = None
        # the master's direct occupants changed in the last OCCUPANT_SAVE_DELAY s, by
        # (room, nick): one write of their state as it is then, in one transaction
        self._pending_occupants: dict[tuple[str, str], SaveOccupant] = {}
        self._occupants_call: Any = None
        # archive appends of one reactor turn, written in one transaction
        self._pending_archive: list[tuple[str, ArchiveRecord]] = []
        self._archive_call: Any = None
        self.stalls = StallWatch()
        self._writing = 0  # storage writes issued and not done yet
        self.metrics: Metrics | None = None  # set by the Daemon
        self.on_link: Callable[[bool], None] | None = None  # told when the stream comes/goes
        # the core's own work for later turns (a slave's held stanzas going out a slice a
        # turn): asked after each turn, it returns an Outbox, or None when it has none
        self.more_work: Callable[[float], Outbox | None] | None = None
        # stanzas parsed and not handled yet, per sender (see dmuc.shell.fairness)
        self.turns: FairQueue[Element] = FairQueue(time.perf_counter)
        # what we write: the link's peers first, the bulk as the transport's buffer
        # drains (see dmuc.shell.fairness.OutputLanes)
        self.lanes = OutputLanes()
        # domains whose stanzas share one queue, in arrival order (fairness.sender_key)
        self.one_turn = {}
        self._turn_call: Any = None
        self._reading_paused: Any = None  # the transport we stopped reading, if any

    @property
    def one_turn(self) -> dict[str, str]:
        return self._one_turn

    @one_turn.setter
    def one_turn(self, turns: dict[str, str]) -> None:
        """Domains whose stanzas share one queue (fairness.sender_key); the queues' owners
        are the link's peers, whose output goes first (OutputLanes)."""
        self._one_turn = turns
        self.lanes.peers = frozenset(turns.values())

    @property
    def storage_queue(self) -> int:
        return (self._writing + len(self._pending_saves) + len(self._pending_archive)
                + len(self._pending_occupants))

    def connectionInitialized(self) -> None:
        for kind in ("message", "presence", "iq"):
            self.xmlstream.addObserver(f"/{kind}", self.arrived)
        # Read (and parse) a burst in a few large reads rather than 64 KiB a reactor turn:
        # a stanza written behind it is queued, and gets its turn, that much sooner.
        self.xmlstream.transport.bufferSize = READ_SIZE
        self.lanes.reset()
        self.xmlstream.transport.registerProducer(self, True)  # told when its buffer is full
        _small_send_buffers(self.xmlstream.transport)
        if self.on_connect is not None:
            self.write(self.on_connect(time.time()))  # the core's greeting, every connect
        if self.on_link is not None:
            self.on_link(True)

    def connectionLost(self, reason: object) -> None:
        super().connectionLost(reason)
        self._reading_paused = None  # that transport is gone; what is queued is handled
        self.lanes.reset()
        if self.on_link is not None:
            self.on_link(False)

    def arrived(self, element: Element) -> None:
        """A stanza parsed from the stream: queued for its sender's turn, handled in a
        later reactor turn; reading stops while too many wait (the socket holds the rest)."""
        if getattr(element, "handled", False):
            return
        element.handled = True
        self.turns.push(sender_key(element.getAttribute("from"), self.one_turn), element)
        if self.turns.full and self._reading_paused is None and self.xmlstream is not None:
            self._reading_paused = self.xmlstream.transport
            self._reading_paused.pauseProducing()
        if self._turn_call is None:
            self._turn_call = reactor.callLater(0, self._take_turn)

    def _take_turn(self) -> None:
        """Handle queued stanzas round-robin for one turn's budget; the reactor reads the
        socket and runs timers between two turns."""
        self._turn_call = None
        more = self.turns.run(self.handle)
        if self.more_work is not None and self._work():
            more = True
        if more:
            self._turn_call = reactor.callLater(0, self._take_turn)
        if self._reading_paused is not None and self.turns.drained:
            paused, self._reading_paused = self._reading_paused, None
            paused.resumeProducing()

    def _work(self) -> bool:
        """One slice of the core's own work (more_work); True if there was some."""
        assert self.more_work is not None
        timed = self.stalls.begin()
        try:
            out = self.more_work(time.time())
            if out is None:
                return False
            self.write(out)
            return True
        except Exception as exc:  # noqa: BLE001 - one line; the daemon goes on
            _internal_error_line("in the core's queued work", exc)
            return False
        finally:
            self.stalls.end(timed, "held stanzas going out")

    def backlog(self) -> bool:
        """Whether stanzas are waiting: parsed and not handled yet, or still unread in
        the component socket (resume.TickGate: read before the timers run)."""
        if self.turns.pending or self._reading_paused is not None:
            return True
        transport = self.xmlstream.transport if self.xmlstream is not None else None
        try:
            readable, _, _ = select.select([transport.fileno()], [], [], 0)
        except (AttributeError, OSError, ValueError):  # no socket (yet), or closed
            return False
        return bool(readable)

    def on_stanza(self, element: Element) -> None:
        """Handle a stanza now (the stream's stanzas go through `arrived`)."""
        if getattr(element, "handled", False):
            return
        element.handled = True
        self.handle(element)

    def handle(self, element: Element) -> None:
        began = time.perf_counter()
        timed = self.stalls.begin()
        if self.metrics is not None:
            self.metrics.received(element.name)
        try:
            if self._too_big(element):
                return
            stanzas.strip_stream_namespace(element)
            out = self.receive(element, time.time())
            self.write(out)
            if self.metrics is not None and any(d.recipients for d in out.deliveries):
                self.metrics.fanout.observe(time.perf_counter() - began)
        except Exception as exc:  # noqa: BLE001 - one bad stanza must not take us down
            self._internal_error(element, exc)
        finally:
            self.stalls.end(timed, _summary(element))

    def limits_for(self, element: Element) -> StanzaLimits:
        sender = element.getAttribute("from") or ""
        return self.user_limits if "@" in sender.split("/", 1)[0] else self.peer_limits

    def _too_big(self, element: Element) -> bool:
        """Refuse a stanza over the limits: policy-violation (RFC 6120 §8.3.3.12), with
        XEP-0182's <stanza-too-big/> when it is too large rather than too deep."""
        limits = self.limits_for(element)
        size = stanzas.measure(element, max_depth=limits.depth, max_elements=limits.elements,
                               max_chars=limits.chars)
        if size.depth > limits.depth:
            why = f"nested more than {limits.depth} levels deep"
        elif size.elements > limits.elements:
            why = f"more than {limits.elements} elements"
        elif size.chars > limits.chars:
            why = f"more than {limits.chars} characters"
        else:
            return False
        log.info("refused {stanza}: policy-violation (stanza {why})",
                 stanza=_summary(element), why=why)
        if self._answerable(element):
            reply = stanzas.error_reply(element, "modify", "policy-violation",
                                        f"Stanza {why}", by=self.service_jid)
            if size.depth <= limits.depth:
                stanzas.child(reply, "error").addElement((NS_XMPP_ERRORS, "stanza-too-big"))
            self.send_reply(reply)
        return True

    @staticmethod
    def _answerable(element: Element) -> bool:
        """RFC 6120 §8.3.1: never answer an error (or a result) with an error."""
        return (element.getAttribute("type") not in ("error", "result")
                and element.getAttribute("from") is not None)

    def _internal_error(self, element: Element, exc: Exception) -> None:
        """One log line (the full traceback only at debug level) and one
        internal-server-error answer."""
        _internal_error_line(f"handling {_summary(element)}", exc)
        if not self._answerable(element):
            return
        try:
            self.send_reply(stanzas.error_reply(element, "wait", "internal-server-error",
                                                by=self.service_jid))
        except Exception as again:  # noqa: BLE001 - e.g. the stream went away meanwhile
            log.error("cannot answer {stanza}: {error}", stanza=_summary(element),
                      error=stanzas.one_line(f"{type(again).__name__}: {again}", 300))

    def write(self, out: Outbox) -> None:
        # Everything one stanza caused goes to the socket in a single write; each
        # broadcast was serialised once, its copies differ only in 'to'.
        chunks: list[str] = []
        urgent: list[str] = []  # to the link's peers: not behind the bulk (OutputLanes)
        peers = self.lanes.peers
        for delivery in out.deliveries:
            # a copy given serialised (xml) is written from it: its tree is never parsed
            shown = delivery.name if delivery.xml is not None else delivery.stanza
            if delivery.recipients is None:
                lane = urgent if link_peer(delivery.stanza.getAttribute("to"), peers) \
                    else chunks
                lane.append(stanzas.render(delivery.stanza))
            elif delivery.host is not None:
                chunks.append(xep0282.render_fanout(shown, delivery.host,
                                                    delivery.recipients, delivery.xml))
            else:
                to_peers = [r for r in delivery.recipients if link_peer(r, peers)]
                if to_peers:
                    urgent.extend(stanzas.render_many(shown, to_peers, delivery.xml))
                chunks.extend(stanzas.render_many(
                    shown, [r for r in delivery.recipients if not link_peer(r, peers)]
                    if to_peers else delivery.recipients, delivery.xml))
            if self.metrics is not None:
                self.metrics.sent(delivery.name, 1 if delivery.recipients is None
                                  else len(delivery.recipients))
        if urgent:
            self.send("".join(urgent))
        if chunks:
            self.send_bulk("".join(chunks))
        for level, message in out.log:
            log.emit(LogLevel.levelWithName(level), "{message}", message=message)
        for op in out.storage:
            self.persist(op)

    def send_bulk(self, data: str) -> None:
        """Bulk output (local deliveries, answers to users): now if the transport takes
        it, else in order once its buffer drains."""
        now = self.lanes.now_or_later(data)
        if now is not None:
            self.send(now)

    def send_reply(self, reply: Element) -> None:
        """An answer of the shell's own (an error), in its recipient's lane."""
        if link_peer(reply.getAttribute("to"), self.lanes.peers):
            self.send(stanzas.render(reply))
        else:
            self.send_bulk(stanzas.render(reply))

    # the transport calls these (IPushProducer): its buffer is full, drained, closed
    def pauseProducing(self) -> None:
        self.lanes.full = True

    def resumeProducing(self) -> None:
        self.lanes.full = False
        while (data := self.lanes.next_bulk()) is not None:
            self.send(data)  # may fill the buffer again: pauseProducing stops the loop

    def stopProducing(self) -> None:
        self.lanes.reset()

    def write_queued(self) -> None:
        """Everything still queued to the transport (on stop: it writes its buffer out
        before it closes)."""
        self.lanes.full = False
        while (data := self.lanes.next_bulk()) is not None:
            self.send(data)
        self.lanes.full = True  # nothing more goes out now

    def persist(self, op: StorageOp) -> None:
        """The one persistence path of both daemons. Saves of a room are coalesced over
        `save_delay` seconds (the state is read when written); everything else is written
        at once, in order."""
        if isinstance(op, SaveRoom):
            if self.save_delay <= 0:
                self._write(op)
                return
            self._pending_saves[op.room_jid] = op
            if self._save_call is None:
                self._save_call = reactor.callLater(self.save_delay, self._write_saves)
            return
        if isinstance(op, SaveOccupant):
            self._pending_occupants[(op.room_jid, op.nick)] = op
            if self._occupants_call is None:
                self._occupants_call = reactor.callLater(OCCUPANT_SAVE_DELAY,
                                                         self._write_occupants)
            return
        if isinstance(op, ForgetOccupants):
            self._write_occupants()  # what changed before comes first
        if isinstance(op, AppendArchive):
            # One transaction for every message archived in this reactor turn (a busy
            # room would otherwise cost a thread hop per message).
            self._pending_archive.append((op.room_jid, op.record))
            if self._archive_call is None:
                self._archive_call = reactor.callLater(0, self._write_archive)
            return
        if isinstance(op, DeleteRoom):
            self._pending_saves.pop(op.room_jid, None)
        if isinstance(op, (QueryArchive, RetractArchived, ExpireArchive, DeleteArchive)):
            self._write_archive()  # what was archived before comes first
        self._write(op)

    def _write(self, op: StorageOp) -> Deferred:
        s = self.storage
        if isinstance(op, SaveRoom):
            rows = op.entries() if op.entries is not None else []
            d = s.save_room(self.service_jid, RoomRecord(op.room_jid, op.state), rows)
            if rows and op.unwritten is not None:
                d.addErrback(_unwritten, op.unwritten, rows)
        elif isinstance(op, DeleteRoom):
            d = s.delete_room(self.service_jid, op.room_jid, op.history_key)
        elif isinstance(op, ForgetOccupants):
            d = s.forget_occupants(self.service_jid, op.room_jid)
        elif isinstance(op, AppendHistory):
            d = s.append_history(op.key, op.record, op.keep)
        elif isinstance(op, ClearHistory):
            d = s.clear_history(op.key)
        elif isinstance(op, RetractArchived):
            d = s.retract_archive(op.room_jid, op.sid, op.tombstone_xml)
        elif isinstance(op, ExpireArchive):
            d = s.expire_archive(op.older_than, op.room_jid)
            d.addCallback(_log_expired)
        elif isinstance(op, DeleteArchive):
            d = s.delete_archive(op.room_jid)
        elif isinstance(op, QueryArchive):
            return self._query(op)
        elif isinstance(op, RecordStatus):
            d = s.save_room(status_service(self.service_jid), RoomRecord(op.key, op.state))
        else:
            raise TypeError(f"cannot store {op!r}")
        self._writing += 1
        d.addBoth(self._written, time.perf_counter())
        d.addErrback(lambda f: log.error("storage write failed ({op}): {err}",
                                         op=type(op).__name__, err=f.getErrorMessage()))
        return d

    def _query(self, op: QueryArchive) -> Deferred:
        """Run an archive read, then hand its page (or the failure) back to the core and
        write what the core answers."""
        d = self.storage.query_archive(op.room_jid, op.query)

        def answer(result: object) -> None:
            value = result.value if isinstance(result, Failure) else result
            out = Outbox(time.time())
            try:
                op.answer(value, out)  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001 - one bad answer must not take us down
                _internal_error_line(f"answering an archive query of {op.room_jid}", exc)
                return
            if self.xmlstream is not None:
                self.write(out)

        d.addBoth(answer)
        return d

    def _write_archive(self) -> Deferred:
        if self._archive_call is not None and self._archive_call.active():
            self._archive_call.cancel()
        self._archive_call = None
        pending, self._pending_archive = self._pending_archive, []
        if not pending:
            return defer.succeed(None)
        d = self.storage.append_archive(pending)
        self._writing += 1
        d.addBoth(self._written, time.perf_counter())
        d.addErrback(lambda f: log.error("storage write failed (AppendArchive of {n}): {err}",
                                         n=len(pending), err=f.getErrorMessage()))
        return d

    def _write_occupants(self) -> Deferred:
        """The occupants changed lately, each as it is now (stored, or forgotten)."""
        if self._occupants_call is not None and self._occupants_call.active():
            self._occupants_call.cancel()
        self._occupants_call = None
        pending, self._pending_occupants = self._pending_occupants, {}
        if not pending:
            return defer.succeed(None)
        records: list[OccupantRecord | tuple[str, str]] = []
        for op in pending.values():
            state = op.snapshot()
            records.append((op.room_jid, op.nick) if state is None
                           else OccupantRecord(op.room_jid, op.nick, state))
        d = self.storage.save_occupants(self.service_jid, records)
        self._writing += 1
        d.addBoth(self._written, time.perf_counter())
        named = [f"{op.room_jid}/{op.nick}" for op in list(pending.values())[:5]]
        d.addCallback(lambda _: log.debug("stored direct occupants: {named}{more}",
                                          named=" ".join(named),
                                          more=" ..." if len(pending) > 5 else ""))
        d.addErrback(lambda f: log.error("storage write failed (SaveOccupant of {n}): {err}",
                                         n=len(records), err=f.getErrorMessage()))
        return d

    def _written(self, result: object, began: float) -> object:
        self._writing -= 1
        if self.metrics is not None:
            self.metrics.storage_write.observe(time.perf_counter() - began)
        return result

    def _write_saves(self) -> list[Deferred]:
        if self._save_call is not None and self._save_call.active():
            self._save_call.cancel()
        self._save_call = None
        pending, self._pending_saves = self._pending_saves, {}
        return [self._write(op) for op in pending.values()]

    def flush(self) -> Deferred:
        """Handle the stanzas still queued, then write the saves still being coalesced
        (on stop)."""
        if self._turn_call is not None and self._turn_call.active():
            self._turn_call.cancel()
        self._turn_call = None
        while self.turns.pending:
            self.handle(self.turns.pop())
        return defer.gatherResults([self._write_archive(), self._write_occupants(),
                                    *self._write_saves()],
                                   consumeErrors=True)


def _unwritten(failure: Failure, unwritten: Callable[[list[Any]], None],
               rows: list[Any]) -> Failure:
    """A room save failed: its entry rows were taken from the core's changes; they go
    back, to be written with the room's next save (then logged as any failed write)."""
    unwritten(rows)
    return failure


def _log_expired(count: int) -> None:
    if count:
        log.info("archive retention: deleted {count} expired messages", count=count)


def config_options(daemon: str, loader: Callable[[str], Any]) -> type[usage.Options]:
    """twistd options `--config FILE`; a bad file is one line on stderr and exit status 2."""

    class Options(usage.Options):
        synopsis = "--config FILE"
        optParameters = [["config", "c", f"/etc/dmuc/{daemon}.toml", "TOML configuration file"]]

        def postOptions(self) -> None:
            try:
                self["parsed"] = loader(self["config"])
            except ConfigError as exc:
                # One line for the operator, no traceback, non-zero exit.
                print(f"{daemon}: configuration error: {exc}", file=sys.stderr)
                raise SystemExit(EXIT_CONFIGURATION) from None

    return Options


class Daemon(service.Service, abc.ABC):
    """A dmuc daemon: opens storage, restores its state, then connects to Prosody; runs the
    core's timers every second while connected; flushes and closes storage on stop.

    Operations: tells systemd (sd_notify) when it is ready, how it is doing and that it is
    alive; serves Prometheus metrics where ``[metrics] listen`` says; on SIGHUP re-reads
    its configuration file and applies what it can without dropping the connection."""

    TICK_SECONDS = 1.0
    STATUS_EVERY = 30  # ticks between STATUS= updates while connected

    def __init__(self, label: str, cfg: Any, storage: Storage, handler: CoreHandler,
                 tick: Callable[[float], Outbox]) -> None:
        self.label = label
        self.cfg = cfg
        self.storage = storage
        self.handler = handler
        c = cfg.component
        self.connection = ComponentConnection(
            c.host, c.port, c.jid, c.secret,
            on_permanent=lambda line: fatal(f"{label}: {line}", EXIT_CONFIGURATION))
        handler.setHandlerParent(self.connection)
        self._tick_core = tick
        self._ticker = task.LoopingCall(self._tick)
        self._ticks = 0
        self._gate = TickGate()
        self._tick_retry: Any = None
        self.notifier = Notifier()
        self.metrics = Metrics(self._collect)
        handler.metrics = self.metrics
        handler.on_link = self._link_changed
        self._previous_sighup: Any = None
        self._reloading: Deferred | None = None
        # fires once the state is restored and the connection started; never when the
        # daemon stops first (metrics port taken, store unreadable)
        self._starting: Deferred = Deferred()

    @abc.abstractmethod
    def restore(self) -> Deferred:
        """Load the daemon's state from storage; fires with a line for the log."""

    @abc.abstractmethod
    def load_config(self, path: str) -> Any:
        """Read and check the configuration file (raises ConfigError)."""

    @abc.abstractmethod
    def apply_config(self, new: Any) -> Any:
        """Apply a reloaded configuration to the core; returns the configuration now in
        force (the new one, with the keys that wait for a restart kept as they were)."""

    @abc.abstractmethod
    def summary(self) -> str:
        """A few words on the core's state, for STATUS= and the log."""

    @abc.abstractmethod
    def core_metrics(self) -> Iterable[Metric]:
        """The core's state as metric families, read at scrape time."""

    def _collect(self) -> Iterable[Metric]:
        yield from self.core_metrics()
        stalls = self.handler.stalls
        yield from metrics.shell_state(self.handler.xmlstream is not None,
                                       self.handler.storage_queue, stalls.stalls,
                                       stalls.slowest)

    @defer.inlineCallbacks
    def _start(self):  # type: ignore[no-untyped-def]
        freeze_startup_objects()
        self.handler.stalls.watch_collections()
        try:
            yield self.storage.open()
            restored = yield self.restore()
        except Exception as exc:  # noqa: BLE001 - reported to the operator and fatal
            fatal(f"{self.label}: storage {url_for_log(self.cfg.storage_url)}: {exc}")
            return
        log.info("{restored} from {url}", restored=restored,
                 url=url_for_log(self.cfg.storage_url))
        self.notifier.status(f"{restored}; connecting to Prosody")
        self.connection.startService()

    def _tick(self) -> None:
        if self.handler.xmlstream is None:
            return
        if not self._gate.due(time.monotonic(), self.handler.backlog()):
            # resumed from a stop: what waited in the socket is read first (resume.py)
            if self._tick_retry is None or not self._tick_retry.active():
                self._tick_retry = reactor.callLater(RETRY_EVERY, self._tick)
            return
        if self._tick_retry is not None and self._tick_retry.active():
            self._tick_retry.cancel()
        self._tick_retry = None
        self.handler.write(self._tick_core(time.time()))
        self._ticks += 1
        if self._ticks % self.STATUS_EVERY == 0:
            self.notifier.status(self._status())

    def _status(self) -> str:
        return f"connected to Prosody as {self.cfg.component.jid}: {self.summary()}"

    def _link_changed(self, up: bool) -> None:
        """READY=1 after the first handshake (the state was restored before connecting)."""
        if up:
            self.notifier.mark_ready(self._status())
        elif self.running:
            self.notifier.status(f"disconnected from Prosody "
                                 f"({self.cfg.component.host}:{self.cfg.component.port}); "
                                 "reconnecting")

    def startService(self) -> None:
        super().startService()
        if self.cfg.metrics_listen is not None:
            try:
                self.metrics.listen(self.cfg.metrics_listen)
            except CannotListenError as exc:
                # before the reactor runs: stop it as soon as it does
                reactor.callWhenRunning(fatal, f"{self.label}: metrics.listen: cannot listen "
                                        f"on {_address(self.cfg.metrics_listen)}: "
                                        f"{exc.socketError}")
                return
            log.info("metrics at {url}", url=self.metrics.url)
        self._previous_sighup = signal.signal(
            signal.SIGHUP, lambda signum, frame: reactor.callFromThread(self.reload))
        self.notifier.start_watchdog()
        self._start().chainDeferred(self._starting)
        self._ticker.start(self.TICK_SECONDS, now=False)

    @defer.inlineCallbacks
    def stopService(self):  # type: ignore[no-untyped-def]
        super().stopService()
        self.handler.stalls.stop_watching_collections()
        self.notifier.stopping()
        if self._previous_sighup is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._previous_sighup = None
        if self._ticker.running:
            self._ticker.stop()
        if self._tick_retry is not None and self._tick_retry.active():
            self._tick_retry.cancel()
        if self.connection.running:
            self.handler.write_queued()
            self.connection.stopService()
        yield self.metrics.close()
        yield self.handler.flush()
        yield self.storage.close()
        self.notifier.stop()

    # --- reload (SIGHUP) ----------------------------------------------------------------

    def reload(self) -> Deferred:
        """Re-read the configuration file and apply it (one reload at a time: a SIGHUP
        during a reload waits for it)."""
        if self._reloading is not None:
            return self._reloading.addCallback(lambda _: self.reload())
        self._reloading = self._reload()
        self._reloading.addErrback(self._reload_failed)
        self._reloading.addBoth(self._reload_done)
        return self._reloading

    def _reload_failed(self, failure: Any) -> bool:
        """A bug, not a bad file: one line (the traceback at debug level); the daemon
        keeps running on whatever was applied."""
        log.error("configuration reload failed: {error}", error=stanzas.one_line(
            f"{failure.type.__name__}: {failure.getErrorMessage()}", 300))
        log.debug("{traceback}", traceback=failure.getTraceback())
        self.notifier.reloaded(self._status_now())
        return False

    def _reload_done(self, result: object) -> object:
        self._reloading = None
        return result

    @defer.inlineCallbacks
    def _reload(self):  # type: ignore[no-untyped-def]
        self.notifier.reloading()
        path = self.cfg.path
        try:
            new = self.load_config(path)
        except ConfigError as exc:
            log.error("configuration reload refused: {error}; the running configuration "
                      "is kept", error=exc)
            self.notifier.reloaded(self._status_now())
            return False
        old = self.cfg
        waiting = restart_keys(old, new)
        set_level(new.log_level)
        new = self.apply_config(dataclasses.replace(
            new, component=old.component, storage_url=old.storage_url))
        metrics_note = yield self._reload_metrics(new.metrics_listen)
        self.cfg = dataclasses.replace(new, metrics_listen=self.metrics.address)
        log.info("configuration reloaded from {path}: log level {threshold}, {summary}; "
                 "metrics {metrics}", path=path, threshold=new.log_level,
                 summary=self.reload_summary(), metrics=metrics_note)
        if waiting:
            log.warn("configuration reload: not applied until a restart: {keys}",
                     keys=", ".join(waiting))
        self.notifier.reloaded(self._status_now())
        return True

    def reload_summary(self) -> str:
        """What a reload applied, for its log line."""
        return self.summary()

    def _status_now(self) -> str:
        if self.handler.xmlstream is not None:
            return self._status()
        return "not connected to Prosody; reconnecting"

    @defer.inlineCallbacks
    def _reload_metrics(self, wanted: tuple[str, int] | None):  # type: ignore[no-untyped-def]
        """Turn the endpoint on, off or move it. A new address is opened before the old
        one is closed: if it cannot be, the old endpoint stays (and the log says so)."""
        current = self.metrics.address
        if wanted == current:
            return f"at {self.metrics.url}" if current else "off"
        if wanted is None:
            yield self.metrics.close()
            return "off"
        old_port = self.metrics.port
        try:
            self.metrics.listen(wanted)
        except CannotListenError as exc:
            self.metrics.port, self.metrics.address = old_port, current
            log.error("configuration reload: metrics.listen: cannot listen on {address}: "
                      "{error}; {kept}", address=_address(wanted), error=exc.socketError,
                      kept=f"kept {_address(current)}" if current else "metrics stay off")
            return f"at {self.metrics.url}" if current else "off"
        if old_port is not None:
            yield defer.maybeDeferred(old_port.stopListening)
        return f"at {self.metrics.url}"


def _address(address: tuple[str, int] | None) -> str:
    if address is None:
        return "-"
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def fatal(message: str, status: int = EXIT_FAILURE) -> None:
    """Log one line and stop the daemon with a non-zero exit status."""
    log.critical("{message}", message=message)
    reactor.addSystemEventTrigger("after", "shutdown", os._exit, status)
    reactor.stop()

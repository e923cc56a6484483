"""The Twisted/wokkel shell shared by the daemons: an XEP-0114 connection to Prosody that
feeds parsed stanzas to a sans-I/O core and writes back what the core returns."""

from __future__ import annotations

import abc
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.application import service
from twisted.internet import defer, reactor, task
from twisted.internet.defer import Deferred
from twisted.logger import LogLevel
from twisted.python import usage
from twisted.words.protocols.jabber import xmlstream
from twisted.words.xish.domish import Element
from wokkel import component, subprotocols

from dmuc.config import ConfigError
from dmuc.log import get_logger
from dmuc.outbox import AppendHistory, ClearHistory, DeleteRoom, Outbox, SaveRoom, StorageOp
from dmuc.protocol import stanzas, xep0282
from dmuc.storage import RoomRecord, Storage

log = get_logger("dmuc")

# Backoff between reconnection attempts, in seconds.
RECONNECT_MAX_DELAY = 30.0


class ComponentConnection(component.Component):
    """wokkel's XEP-0114 component, with one clear log line per failed attempt instead of
    wokkel's stop-and-raise, and reconnection with backoff when Prosody goes away."""

    def __init__(self, host: str, port: int, jid: str, secret: str) -> None:
        super().__init__(host, port, jid, secret)
        self.jid = jid
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
        self._last_failure: str | None = None
        failed, lost = self.factory.clientConnectionFailed, self.factory.clientConnectionLost

        def connection_failed(connector, reason):  # type: ignore[no-untyped-def]
            failed(connector, reason)  # schedules the next attempt (factory.delay)
            self._note(f"cannot connect to {host}:{port}: {reason.getErrorMessage()}; "
                       f"retrying in {self.factory.delay:.1f} s")

        def connection_lost(connector, reason):  # type: ignore[no-untyped-def]
            lost(connector, reason)
            if self.running:
                self._note(f"connection to {host}:{port} lost; "
                           f"retrying in {self.factory.delay:.1f} s")

        self.factory.clientConnectionFailed = connection_failed
        self.factory.clientConnectionLost = connection_lost

    def _note(self, message: str) -> None:
        log.warn("component {jid}: {message}", jid=self.jid, message=message)

    def _stream_error(self, failure: object) -> None:
        condition = getattr(getattr(failure, "value", None), "condition", "unknown")
        hint = " (check component.secret and Prosody's component_secret)" \
            if condition == "not-authorized" else ""
        self._note(f"Prosody refused the stream: {condition}{hint}")

    def _authd(self, xs: xmlstream.XmlStream) -> None:
        log.info("component connected as {jid} to {host}:{port}", jid=self.jid, host=self.host,
                 port=self.port)
        self.factory.resetDelay()
        super()._authd(xs)

    def initializationFailed(self, reason: object) -> None:
        self._note(f"stream initialisation failed: {getattr(reason, 'value', reason)}")
        if self.xmlstream is not None and self.xmlstream.transport is not None:
            self.xmlstream.transport.loseConnection()


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

    def connectionInitialized(self) -> None:
        for kind in ("message", "presence", "iq"):
            self.xmlstream.addObserver(f"/{kind}", self.on_stanza)
        if self.on_connect is not None:
            self.write(self.on_connect(time.time()))  # the core's greeting, every connect

    def on_stanza(self, element: Element) -> None:
        if getattr(element, "handled", False):
            return
        element.handled = True
        try:
            if self._too_big(element):
                return
            stanzas.strip_stream_namespace(element)
            self.write(self.receive(element, time.time()))
        except Exception as exc:  # noqa: BLE001 - one bad stanza must not take us down
            self._internal_error(element, exc)

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
            self.send(stanzas.render(reply))
        return True

    @staticmethod
    def _answerable(element: Element) -> bool:
        """RFC 6120 §8.3.1: never answer an error (or a result) with an error."""
        return (element.getAttribute("type") not in ("error", "result")
                and element.getAttribute("from") is not None)

    def _internal_error(self, element: Element, exc: Exception) -> None:
        """One log line (the full traceback only at debug level) and one
        internal-server-error answer."""
        log.error("internal error handling {stanza}: {error}", stanza=_summary(element),
                  error=stanzas.one_line(f"{type(exc).__name__}: {exc}", 300))
        log.debug("{traceback}", traceback="".join(traceback.format_exception(exc)))
        if not self._answerable(element):
            return
        try:
            self.send(stanzas.render(stanzas.error_reply(
                element, "wait", "internal-server-error", by=self.service_jid)))
        except Exception as again:  # noqa: BLE001 - e.g. the stream went away meanwhile
            log.error("cannot answer {stanza}: {error}", stanza=_summary(element),
                      error=stanzas.one_line(f"{type(again).__name__}: {again}", 300))

    def write(self, out: Outbox) -> None:
        # Everything one stanza caused goes to the socket in a single write; each
        # broadcast was serialised once, its copies differ only in 'to'.
        chunks: list[str] = []
        for delivery in out.deliveries:
            if delivery.recipients is None:
                chunks.append(stanzas.render(delivery.stanza))
            elif delivery.host is not None:
                chunks.append(xep0282.render_fanout(delivery.stanza, delivery.host,
                                                    delivery.recipients, delivery.xml))
            else:
                chunks.extend(stanzas.render_many(delivery.stanza, delivery.recipients,
                                                  delivery.xml))
        if chunks:
            self.send("".join(chunks))
        for level, message in out.log:
            log.emit(LogLevel.levelWithName(level), "{message}", message=message)
        for op in out.storage:
            self.persist(op)

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
        if isinstance(op, DeleteRoom):
            self._pending_saves.pop(op.room_jid, None)
        self._write(op)

    def _write(self, op: StorageOp) -> Deferred:
        s = self.storage
        if isinstance(op, SaveRoom):
            d = s.save_room(self.service_jid, RoomRecord(op.room_jid, op.state))
        elif isinstance(op, DeleteRoom):
            d = s.delete_room(self.service_jid, op.room_jid, op.history_key)
        elif isinstance(op, AppendHistory):
            d = s.append_history(op.key, op.record, op.keep)
        elif isinstance(op, ClearHistory):
            d = s.clear_history(op.key)
        else:
            raise TypeError(f"cannot store {op!r}")
        d.addErrback(lambda f: log.error("storage write failed ({op}): {err}",
                                         op=type(op).__name__, err=f.getErrorMessage()))
        return d

    def _write_saves(self) -> list[Deferred]:
        if self._save_call is not None and self._save_call.active():
            self._save_call.cancel()
        self._save_call = None
        pending, self._pending_saves = self._pending_saves, {}
        return [self._write(op) for op in pending.values()]

    def flush(self) -> Deferred:
        """Write the saves still being coalesced (on stop)."""
        return defer.gatherResults(self._write_saves(), consumeErrors=True)


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
                raise SystemExit(2) from None

    return Options


class Daemon(service.Service, abc.ABC):
    """A dmuc daemon: opens storage, restores its state, then connects to Prosody; runs the
    core's timers every second while connected; flushes and closes storage on stop."""

    TICK_SECONDS = 1.0

    def __init__(self, label: str, cfg: Any, storage: Storage, handler: CoreHandler,
                 tick: Callable[[float], Outbox]) -> None:
        self.label = label
        self.cfg = cfg
        self.storage = storage
        self.handler = handler
        c = cfg.component
        self.connection = ComponentConnection(c.host, c.port, c.jid, c.secret)
        handler.setHandlerParent(self.connection)
        self._tick_core = tick
        self._ticker = task.LoopingCall(self._tick)

    @abc.abstractmethod
    def restore(self) -> Deferred:
        """Load the daemon's state from storage; fires with a line for the log."""

    @defer.inlineCallbacks
    def _start(self):  # type: ignore[no-untyped-def]
        try:
            yield self.storage.open()
            restored = yield self.restore()
        except Exception as exc:  # noqa: BLE001 - reported to the operator and fatal
            fatal(f"{self.label}: storage {self.cfg.storage_url}: {exc}")
            return
        log.info("{restored} from {url}", restored=restored, url=self.cfg.storage_url)
        self.connection.startService()

    def _tick(self) -> None:
        if self.handler.xmlstream is not None:
            self.handler.write(self._tick_core(time.time()))

    def startService(self) -> None:
        super().startService()
        self._starting = self._start()
        self._ticker.start(self.TICK_SECONDS, now=False)

    @defer.inlineCallbacks
    def stopService(self):  # type: ignore[no-untyped-def]
        super().stopService()
        if self._ticker.running:
            self._ticker.stop()
        if self.connection.running:
            self.connection.stopService()
        yield self.handler.flush()
        yield self.storage.close()


def fatal(message: str) -> None:
    """Log one line and stop the daemon with a non-zero exit status."""
    log.critical("{message}", message=message)
    reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
    reactor.stop()

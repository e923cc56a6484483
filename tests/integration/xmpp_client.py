"""A real XMPP client (slixmpp) for synchronous integration tests.

All clients live on one asyncio event loop for the whole test session; tests drive it with
``run(coro)``. Every message/presence/iq a client receives is recorded, as a raw ElementTree
element, in ``client.inbox``; ``expect`` waits (event-driven) for a matching one.

    alice = make_client("argl@killrc.oulubox.irc/laptop")
    alice.send_raw("<message to='...' type='chat'><body>hi</body></message>")
    msg = run(bob.expect(is_message(from_="argl@killrc.oulubox.irc/laptop", type_="chat")))
"""

from __future__ import annotations

import asyncio
import copy
import functools
import itertools
import re
import ssl
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import slixmpp

# -- namespaces
NS_CLIENT = "jabber:client"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
NS_MUC_ADMIN = "http://jabber.org/protocol/muc#admin"
NS_MUC_OWNER = "http://jabber.org/protocol/muc#owner"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_DATA = "jabber:x:data"
NS_DELAY = "urn:xmpp:delay"
NS_PING = "urn:xmpp:ping"
NS_VCARD = "vcard-temp"
NS_VERSION = "jabber:iq:version"

Predicate = Callable[[ET.Element], bool]
T = TypeVar("T")

# ----------------------------------------------------------------------------------------------
# the session's event loop

_loop: asyncio.AbstractEventLoop | None = None


def get_loop() -> asyncio.AbstractEventLoop:
    """The one event loop all clients share (created on first use)."""
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
        asyncio.set_event_loop(_loop)
    return _loop


def run(aw: Awaitable[T], timeout: float | None = 60) -> T:
    """Drive ``aw`` (a coroutine or future) to completion on the session loop, from a
    synchronous test."""
    if timeout is not None:
        aw = asyncio.wait_for(aw, timeout)
    return get_loop().run_until_complete(aw)


def close_loop() -> None:
    """Cancel what is left on the loop and close it (end of the test session)."""
    global _loop
    if _loop is None or _loop.is_closed():
        return
    pending = [t for t in asyncio.all_tasks(_loop) if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        _loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    _loop.run_until_complete(_loop.shutdown_asyncgens())
    _loop.close()
    _loop = None


# ----------------------------------------------------------------------------------------------
# matchers


def local(tag: str) -> str:
    """'{ns}name' -> 'name'."""
    return tag.rsplit("}", 1)[-1]


def xml_str(elem: ET.Element) -> str:
    return ET.tostring(elem, encoding="unicode")


def _attrs_match(elem: ET.Element, name: str, from_: str | None, to: str | None) -> bool:
    if local(elem.tag) != name:
        return False
    if from_ is not None and elem.get("from") != from_:
        return False
    return to is None or elem.get("to") == to


def is_presence(from_: str | None = None, type_: str | None = None,
                to: str | None = None) -> Predicate:
    """Presence from/to exactly these JIDs; ``type_="available"`` matches a missing type."""
    def pred(elem: ET.Element) -> bool:
        return _attrs_match(elem, "presence", from_, to) and (
            type_ is None or elem.get("type", "available") == type_)
    return pred


def is_message(from_: str | None = None, type_: str | None = None,
               to: str | None = None) -> Predicate:
    """Message from/to exactly these JIDs; ``type_="normal"`` matches a missing type."""
    def pred(elem: ET.Element) -> bool:
        return _attrs_match(elem, "message", from_, to) and (
            type_ is None or elem.get("type", "normal") == type_)
    return pred


def is_iq(id_: str | None = None, type_: str | None = None, from_: str | None = None) -> Predicate:
    def pred(elem: ET.Element) -> bool:
        return (_attrs_match(elem, "iq", from_, None)
                and (id_ is None or elem.get("id") == id_)
                and (type_ is None or elem.get("type") == type_))
    return pred


def all_of(*preds: Predicate) -> Predicate:
    return lambda elem: all(p(elem) for p in preds)


def muc_user(elem: ET.Element) -> ET.Element | None:
    """The <x xmlns='muc#user'/> child, if any."""
    return elem.find(f"{{{NS_MUC_USER}}}x")


def has_status(elem: ET.Element, code: int | str) -> bool:
    """Whether the stanza carries muc#user <status code='code'/>."""
    x = muc_user(elem)
    return x is not None and any(
        s.get("code") == str(code) for s in x.findall(f"{{{NS_MUC_USER}}}status"))


def status_codes(elem: ET.Element) -> set[str]:
    x = muc_user(elem)
    if x is None:
        return set()
    return {s.get("code", "") for s in x.findall(f"{{{NS_MUC_USER}}}status")}


def muc_item(elem: ET.Element) -> dict[str, str] | None:
    """Attributes of the muc#user <item/> (affiliation, role, jid, nick), or None."""
    x = muc_user(elem)
    item = None if x is None else x.find(f"{{{NS_MUC_USER}}}item")
    return None if item is None else dict(item.attrib)


def body(elem: ET.Element) -> str | None:
    b = elem.find(f"{{{NS_CLIENT}}}body")
    return None if b is None else (b.text or "")


def error_condition(elem: ET.Element) -> str | None:
    """The defined condition of a stanza error ('item-not-found', ...), or None."""
    err = elem.find(f"{{{NS_CLIENT}}}error")
    if err is None:
        return None
    for child in err:
        if child.tag.startswith(f"{{{NS_STANZAS}}}") and local(child.tag) != "text":
            return local(child.tag)
    return None


# ----------------------------------------------------------------------------------------------
# the client

_ids = itertools.count(1)
_IQ_OPEN = re.compile(r"^\s*<iq\b[^>]*>", re.S)
_ID_ATTR = re.compile(r"""\sid\s*=\s*(['"])(.*?)\1""")
RECORDED = {"message", "presence", "iq"}


@functools.cache
def _unused_ssl_context() -> ssl.SSLContext:
    """We never use TLS; without a context slixmpp builds one per client and loads the system
    CA store each time (20-700 ms)."""
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def fresh_id(prefix: str = "t") -> str:
    return f"{prefix}{next(_ids)}"


class Client:
    """One slixmpp client session: plain TCP, PLAIN auth, no roster fetch."""

    def __init__(self, jid: str, password: str = "pw", host: str = "127.0.0.1",
                 port: int = 5222) -> None:
        self.requested_jid = jid
        self.host = host
        self.port = port
        self.xmpp = slixmpp.ClientXMPP(
            jid, password, loop=get_loop(), ssl_context=_unused_ssl_context(),
            plugin_config={"feature_mechanisms": {"unencrypted_plain": True}},
        )
        self.xmpp.enable_starttls = False
        self.xmpp.enable_direct_tls = False
        self.xmpp.enable_plaintext = True
        for plugin in ("xep_0030", "xep_0045", "xep_0199"):
            self.xmpp.register_plugin(plugin)
        # xep_0045 pulls in entity caps (xep_0115), which would put caps in our presence and
        # send disco#info to every JID that shows caps (room occupants included): turn it off
        caps = self.xmpp.plugin["xep_0115"]
        caps.broadcast = False
        self.xmpp.del_event_handler("entity_caps", caps._process_caps)
        self.inbox: list[ET.Element] = []
        self._arrived = asyncio.Event()
        self._own_iq_ids: set[str] = set()
        # an 'in' filter sees every stanza before the handlers and does not count as a
        # handler, so slixmpp's own routing (iq results, unhandled-iq errors, xep_0045) still work
        self.xmpp.add_filter("in", self._record)
        # iqs slixmpp sends itself (bind, disco, ...) pass the 'out' filters; send_raw does not
        self.xmpp.add_filter("out", self._note_own_iq)

    def _note_own_iq(self, stanza: Any) -> Any:
        if local(stanza.xml.tag) == "iq" and stanza.xml.get("type") in ("get", "set"):
            self._own_iq_ids.add(stanza.xml.get("id", ""))
        return stanza

    def _record(self, stanza: Any) -> Any:
        elem = stanza.xml
        name = local(elem.tag)
        if name not in RECORDED:
            return stanza
        if name == "iq" and elem.get("type") in ("result", "error") \
                and elem.get("id") in self._own_iq_ids:
            self._own_iq_ids.discard(elem.get("id", ""))  # slixmpp's business, not the test's
            return stanza
        self.inbox.append(copy.deepcopy(elem))
        self._arrived.set()
        return stanza

    @property
    def jid(self) -> str:
        """The bound full JID (the requested one before connect)."""
        bound = self.xmpp.boundjid.full
        return bound if self.xmpp.session_bind_event.is_set() else self.requested_jid

    @property
    def bare(self) -> str:
        return self.xmpp.boundjid.bare

    @property
    def domain(self) -> str:
        return self.xmpp.boundjid.domain

    # -- connection

    async def connect(self, initial_presence: bool = True, timeout: float = 10) -> Client:
        """Connect, authenticate, bind; then (by default) send initial presence and consume
        its reflection from the server so the inbox starts empty."""
        loop = get_loop()
        started: asyncio.Future[None] = loop.create_future()

        def ok(_: Any) -> None:
            if not started.done():
                started.set_result(None)

        def failed(reason: Any) -> None:
            if not started.done():
                started.set_exception(AssertionError(f"{self.requested_jid}: {reason}"))

        self.xmpp.add_event_handler("session_start", ok, disposable=True)
        self.xmpp.add_event_handler("failed_auth", failed, disposable=True)
        self.xmpp.add_event_handler("connection_failed", failed, disposable=True)
        try:
            self.xmpp.connect(self.host, self.port)
            await asyncio.wait_for(started, timeout)
        except BaseException:
            self.xmpp.cancel_connection_attempt()
            self.xmpp.abort()
            raise
        finally:
            self.xmpp.del_event_handler("session_start", ok)
            self.xmpp.del_event_handler("failed_auth", failed)
            self.xmpp.del_event_handler("connection_failed", failed)
        if initial_presence:
            self.xmpp.send_presence()
            await self.expect(is_presence(from_=self.jid, type_="available"), timeout)
        return self

    async def disconnect(self, timeout: float = 5) -> None:
        """Close the stream and wait for the server to close its side (abort on timeout)."""
        if self.xmpp.transport is None:
            return
        try:
            await asyncio.wait_for(self.xmpp.disconnect(wait=timeout), timeout + 1)
        except TimeoutError:
            self.xmpp.abort()

    # -- sending

    def send_raw(self, xml: str) -> None:
        """Send raw XML (a stanza in the jabber:client default namespace)."""
        self.xmpp.send_raw(xml)

    async def iq(self, xml: str, timeout: float = 10) -> ET.Element:
        """Send an <iq/> (an id is added unless present) and return its result or error."""
        m = _IQ_OPEN.match(xml)
        if m is None:
            raise ValueError(f"not an <iq>: {xml[:80]}")
        id_match = _ID_ATTR.search(m.group(0))
        if id_match:
            iq_id = id_match.group(2)
        else:
            iq_id = fresh_id("iq")
            at = xml.index("<iq") + 3
            xml = f"{xml[:at]} id='{iq_id}'{xml[at:]}"
        self.send_raw(xml)
        return await self.expect(
            lambda e: local(e.tag) == "iq" and e.get("id") == iq_id
            and e.get("type") in ("result", "error"),
            timeout,
        )

    async def barrier(self, to_jid: str | None = None, timeout: float = 10) -> ET.Element:
        """Ping ``to_jid`` (default: our server) and wait for the reply. Streams are in order,
        so everything ``to_jid`` sent us before answering has then arrived. Returns the reply
        (result, or an error if the entity does not do XEP-0199: that is a barrier too)."""
        to = to_jid or self.domain
        return await self.iq(f"<iq type='get' to='{to}'><ping xmlns='{NS_PING}'/></iq>", timeout)

    # -- receiving

    async def expect(self, predicate: Predicate, timeout: float = 10) -> ET.Element:
        """Remove and return the first inbox stanza matching ``predicate``, waiting for it."""
        loop = get_loop()
        deadline = loop.time() + timeout
        while True:
            for i, elem in enumerate(self.inbox):
                if predicate(elem):
                    del self.inbox[i]
                    return elem
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(
                    f"{self.jid}: no matching stanza within {timeout} s; inbox:\n"
                    + self.dump())
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                pass

    async def expect_none(self, predicate: Predicate, barrier_to: str | None = None,
                          timeout: float = 10) -> None:
        """Assert nothing matching ``predicate`` arrived before a :meth:`barrier` through
        ``barrier_to`` (pick the entity that would have sent it, e.g. the MUC service)."""
        await self.barrier(barrier_to, timeout)
        found = [e for e in self.inbox if predicate(e)]
        if found:
            raise AssertionError(
                f"{self.jid}: unexpected stanza(s):\n" + "\n".join(xml_str(e) for e in found))

    def received(self, predicate: Predicate | None = None) -> list[ET.Element]:
        """Inbox stanzas matching ``predicate`` (left in the inbox)."""
        return [e for e in self.inbox if predicate is None or predicate(e)]

    def drain(self) -> list[ET.Element]:
        """Empty the inbox; returns what was in it."""
        items, self.inbox = self.inbox, []
        return items

    def dump(self) -> str:
        return "\n".join("  " + xml_str(e)[:2000] for e in self.inbox) or "  (empty)"

    def __repr__(self) -> str:
        return f"<Client {self.jid}>"


async def take_through(client: Client, predicate: Predicate, timeout: float = 10
                       ) -> list[ET.Element]:
    """Wait for a stanza matching ``predicate``; remove and return it together with every
    stanza that arrived before it, in arrival order."""
    index: list[int] = []

    def pred(e: ET.Element) -> bool:
        if predicate(e):
            index.append(next(i for i, x in enumerate(client.inbox) if x is e))
            return True
        return False

    last = await client.expect(pred, timeout)
    before = client.inbox[:index[-1]]
    del client.inbox[:index[-1]]
    return [*before, last]

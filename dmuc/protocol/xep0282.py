"""Every XEP-0282 (urn:xmpp:tmp:dmuc:0) stanza master and slave exchange is built here.

docs/protocol.md shows each of them; keep the two in step.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

from twisted.words.xish.domish import Element

from dmuc import xmlns
from dmuc.protocol import stanzas
from dmuc.records import ArchiveRecord

# The message id prefixes (mod_dmuc_slave.lua names the same two it adds: keep in step).
# Part of the wire format (§4.11.2): a groupchat message a local user sent while its slave's
# link was not live carries this id prefix when it is finally submitted, so that the slave,
# which showed it locally at once, does not show it a second time.
SPLIT_ID_PREFIX = "dmuc-split-"
# A groupchat message the slave had forwarded when a netsplit was detected, without the
# master's broadcast of it coming back: submitted again at the netjoin with this prefix,
# and the master drops it if it did get the first one (§4.11.2).
RESUBMIT_ID_PREFIX = "dmuc-resent-"
# A groupchat message a local user sent without an id gets one with this prefix from its
# slave, so that it can be submitted again like any other (§4.11.2).
SLAVE_ID_PREFIX = "dmuc-id-"


def original_id(message_id: str) -> tuple[str, bool]:
    """A message id without the prefixes a slave (or mod_dmuc_slave) adds across a
    netsplit, and whether one of them says it is a resubmission."""
    resubmitted = False
    while True:
        if message_id.startswith(RESUBMIT_ID_PREFIX):
            message_id, resubmitted = message_id[len(RESUBMIT_ID_PREFIX):], True
        elif message_id.startswith(SPLIT_ID_PREFIX):
            message_id = message_id[len(SPLIT_ID_PREFIX):]
        else:
            return message_id, resubmitted


def sender_id(message_id: str | None) -> str | None:
    """The id a groupchat message's sender gave it, as users and the archive see it: the
    link's prefixes taken off (original_id), and none where the slave or mod_dmuc_slave
    made one up (SLAVE_ID_PREFIX) for a message sent without. Those are the link's
    tracking handle: they stay on the master/slave link, never reach a user (§4.11.2)."""
    if not message_id:
        return message_id
    original, _ = original_id(message_id)
    return None if original.startswith(SLAVE_ID_PREFIX) else original


def for_users(message: Element) -> Element:
    """A groupchat message as users, history and the archive get it: with the id its
    sender gave it (sender_id), where the link carries another. The same element when
    they agree (most messages: no copy)."""
    message_id = message.getAttribute("id")
    shown = sender_id(message_id)
    if shown == message_id:
        return message
    copy = stanzas.copy(message)
    copy.attributes.pop("id", None)
    if shown:
        copy["id"] = shown
    return copy


def is_held(message: Element) -> bool:
    """Whether a groupchat message is one a slave held across a netsplit (§4.11.2)."""
    return message.name == "message" and (message.getAttribute("id") or "").startswith(
        SPLIT_ID_PREFIX)


def is_replay(message: Element) -> bool:
    """Whether a groupchat message is a slave's replay: held across a netsplit, or
    submitted again after a crash or a split (§4.11.2). Its sender said it earlier, when
    the room could not judge it; a per-sender pace (a plugin's slow mode) lets it pass."""
    if message.name != "message":
        return False
    _, resubmitted = original_id(message.getAttribute("id") or "")
    return resubmitted or is_held(message)


def without_held_prefix(message_id: str) -> str:
    """A local client's message id with the held prefix taken off: only the slave marks
    what it held (mod_dmuc_slave's RESUBMIT prefix stays: it replays after a crash)."""
    while message_id.startswith(SPLIT_ID_PREFIX):
        message_id = message_id[len(SPLIT_ID_PREFIX):]
    return message_id


def dmuc_x() -> Element:
    return Element((xmlns.DMUC, "x"))


# --- slave -> Prosody (mod_dmuc_slave) ------------------------------------------------------


def mirror_iq(slave: str, domain: str, services: list[str], iq_id: str) -> Element:
    """Tell the users' Prosody which MUC services to divert to this slave."""
    mirror = Element((xmlns.DMUC, "mirror"))
    for service in services:
        mirror.addElement("service")["jid"] = service
    return stanzas.iq("set", slave, domain, iq_id, mirror)


def mirror_offers(answer: Element, feature: str) -> bool:
    """What mod_dmuc_slave says it does in its answer to the mirror list: ``<fanout/>``, it
    fans a local broadcast out itself (docs/protocol.md §4.15); ``<said/>``, it stamps its
    users' groupchat messages with when it received them (§4.11.2)."""
    mirror = stanzas.child(answer, "mirror", xmlns.DMUC)
    return answer.getAttribute("type") == "result" and mirror is not None \
        and stanzas.child(mirror, feature) is not None


def fanout_supported(answer: Element) -> bool:
    return mirror_offers(answer, "fanout")


def render_fanout(stanza: Element | str, host: str, recipients: Iterable[str],
                  xml: str | None = None) -> str:
    """ONE copy of a broadcast to local sessions, for mod_dmuc_slave: addressed to the
    users' host, the recipients' full JIDs in ``<fanout><to jid=.../></fanout>`` as its
    last child (Prosody removes it and delivers the stanza to each, as mod_muc does).
    ``xml``: the stanza already serialised without 'to' (then ``stanza`` may be its
    name only)."""
    if xml is None:
        assert not isinstance(stanza, str), "a name needs its serialisation"
        xml = stanzas.render_without_to(stanza)
    name = stanza if isinstance(stanza, str) else stanza.name
    targets = "".join(f"<to jid={quoteattr(jid)}/>" for jid in recipients)
    fanout = f"<fanout xmlns='{xmlns.DMUC}'>{targets}</fanout>"
    cut = len(name) + 1  # just after "<message"
    head = f"{xml[:cut]} to={quoteattr(host)}"
    if xml.endswith("/>") and not xml.endswith(f"</{name}>"):
        return f"{head}{xml[cut:-2]}>{fanout}</{name}>"
    close = len(name) + 3  # "</message>"
    return f"{head}{xml[cut:-close]}{fanout}{xml[-close:]}"


# --- slave -> master -----------------------------------------------------------------------


def register_iq(slave: str, room: str, iq_id: str, keepalive: int, history: int,
                last: str | None = None, sent: int = 0) -> Element:
    """§4.2: a slave asks to mirror a room, proposing keepalive and history sizes; `last`
    is the stanza-id of the newest message it has (the master replays what follows);
    `sent`, how many stanzas it has numbered for the room (§4.11.2)."""
    register = Element((xmlns.DMUC, "register"))
    register["keepalive"] = str(keepalive)
    register["history"] = str(history)
    register["seq"] = str(sent)
    if last is not None:
        register["last"] = last
    return stanzas.iq("set", slave, room, iq_id, register)


def unregister_iq(slave: str, room: str, iq_id: str) -> Element:
    """The slave stops mirroring a room (its last local occupant left)."""
    return stanzas.iq("set", slave, room, iq_id, Element((xmlns.DMUC, "unregister")))


def keepalive_iq(slave: str, room: str, iq_id: str, sent: int = 0) -> Element:
    """§4.10: are we still registered? (an error item-not-found says no). `sent`: how many
    stanzas we forwarded for the room since we registered (§4.11.2), so that the master
    notices a loss at the end of a burst too."""
    payload = Element((xmlns.DMUC, "keepalive"))
    payload["seq"] = str(sent)
    return stanzas.iq("get", slave, room, iq_id, payload)


def refuse_presence(slave: str, room: str, user: str) -> Element:
    """§4.5: the slave refuses an ENTER for a user who sent no directed presence."""
    presence = stanzas.new("presence", {"from": slave, "to": room, "type": "unavailable"})
    presence.addChild(dmuc_x()).addElement("refuse")["jid"] = user
    return presence


# --- master -> slave -------------------------------------------------------------------------


def master_restarted(service: str, slave: str) -> Element:
    """Sent by a master service to each allowed slave whenever it (re)connects: its
    registrations may be gone, so the slave registers its rooms again (netjoin)."""
    message = stanzas.new("message", {"from": service, "to": slave, "type": "normal"})
    message.addChild(dmuc_x()).addElement("restarted")
    return message


def registered_result(request: Element, keepalive: int, history: int, whois: str,
                      archive: ArchiveSettings | None = None) -> Element:
    registered = Element((xmlns.DMUC, "registered"))
    registered["keepalive"] = str(keepalive)
    registered["history"] = str(history)
    registered["whois"] = whois
    if archive is not None:
        archive.place(registered)
    return stanzas.iq_result(request, registered)


def keepalive_ping(room: str, slave: str, iq_id: str, split: bool = False) -> Element:
    """§4.10: the master's XMPP Ping to a quiet (or split) slave. To a slave it found
    split it says so (<split/> after the ping): a slave that hears the master but is not
    heard (a link blackholed towards the master only) learns of the split from it."""
    iq = stanzas.iq("get", room, slave, iq_id, Element((xmlns.PING, "ping")))
    if split:
        iq.addChild(dmuc_x()).addElement("split")
    return iq


def says_split(ping: Element) -> bool:
    """Whether the master's ping says it has found us split (it hears nothing from us)."""
    x = stanzas.child(ping, "x", xmlns.DMUC)
    return x is not None and stanzas.child(x, "split") is not None


def resync_notice(room: str, slave: str, whois: str) -> Element:
    """Netjoin: the roster snapshot that follows replaces the slave's roster. It carries
    the room's whois, which the slave applies itself (a slave that was told nothing while
    it had no occupant must not keep an old one)."""
    presence = stanzas.new("presence", {"from": room, "to": slave})
    presence.addChild(dmuc_x()).addElement("resync")["whois"] = whois
    return presence


def synced_notice(room: str, slave: str, last: str, count: int) -> Element:
    """End of a snapshot: the slave now has the room's whole roster, history and subject.
    `last`: the stanza-id of the room's newest message ("" if none yet), the place from
    which the slave's next catch-up starts; `count`: how many stanzas the snapshot had
    between <resync/> and <synced/> (a slave that got fewer lost some)."""
    presence = stanzas.new("presence", {"from": room, "to": slave})
    synced = presence.addChild(dmuc_x()).addElement("synced")
    synced["last"] = last
    synced["count"] = str(count)
    return presence


def enter(own_presence: Element, slave: str, user: str, history: Element | None) -> Element:
    """§4.5 Listing 2/12: the occupant's own presence (with 110 etc.) plus <enter/>.
    `own_presence` is built for this ENTER and becomes it (not copied: a tenth of what
    an ENTER costs the master)."""
    presence = own_presence
    presence["to"] = slave
    x = presence.addChild(dmuc_x())
    x.addElement("enter")["jid"] = user
    if history is not None:
        x.addChild(stanzas.copy(history))
    return presence


def leave(own_presence: Element, slave: str, user: str) -> Element:
    """§4.6 Listing 3: the unavailable presence for the leaving user plus <leave/>;
    `own_presence` is built for it and becomes it, as in `enter`."""
    presence = own_presence
    presence["to"] = slave
    presence.addChild(dmuc_x()).addElement("leave")["jid"] = user
    return presence


def destroyed(notice: Element, room: str, slave: str) -> Element:
    """The room is gone: the slave tells each local occupant with this notice."""
    presence = stanzas.copy(notice)
    presence["from"] = room
    presence["to"] = slave
    presence.addChild(dmuc_x()).addElement("destroy")
    return presence


def for_slave(message: Element, stamp: float, sender: str, *, history: bool = False) -> Element:
    """§4.9 Listing 6: a broadcast groupchat with urn:xmpp:delay inside the dmuc element;
    <history/> marks history replayed at registration or netjoin (store, do not show)."""
    copy = stanzas.copy(message)
    copy.attributes.pop("to", None)
    x = copy.addChild(dmuc_x())
    delay = x.addChild(stanzas.delay(stamp, sender))
    delay["stamp"] = precise_stamp(stamp)  # the archive's stamp, to the microsecond
    if history:
        x.addElement("history")
    return copy


def room_settings(room: str, slave: str, whois: str,
                  archive: ArchiveSettings | None = None) -> Element:
    """A room setting the slave applies itself changed (whois decides JID stripping;
    archiving whether its copy of the archive keeps what the room broadcasts, §4.17)."""
    message = stanzas.new("message", {"from": room, "to": slave, "type": "normal"})
    settings = message.addChild(dmuc_x()).addElement("room")
    settings["whois"] = whois
    if archive is not None:
        archive.place(settings)
    return message


# --- the room archive at the edge (§4.17) ------------------------------------------------------


@dataclass(frozen=True)
class ArchiveSettings:
    """What a slave needs to keep and answer from its copy of the room archive as the
    master does: whether the room archives, the largest page, the retention."""

    archiving: bool
    max_results: int
    expires_after: float | None  # seconds; None: kept for ever

    def place(self, el: Element) -> None:
        el["archiving"] = "true" if self.archiving else "false"
        el["archive-max"] = str(self.max_results)
        if self.expires_after is not None:
            el["archive-expires"] = str(int(self.expires_after))

    @classmethod
    def parse(cls, el: Element) -> ArchiveSettings | None:
        """The settings an element carries; None when it carries none (an older master)
        or a malformed one."""
        archiving = el.getAttribute("archiving")
        max_results = stanzas.parse_bounded_int(el.getAttribute("archive-max"), 1, 10**6)
        if archiving not in ("true", "false") or max_results is None:
            return None
        expires = el.getAttribute("archive-expires")
        seconds = stanzas.parse_bounded_int(expires, 1, 10**12) if expires else None
        if expires and seconds is None:
            return None
        return cls(archiving == "true", max_results, seconds)


def archive_fill_iq(slave: str, room: str, iq_id: str, after: str | None,
                    max_items: int) -> Element:
    """The slave asks for the room's archive after the newest message it has (all of it
    without `after`), a page at a time, at each registration."""
    fill = Element((xmlns.DMUC, "archive"))
    if after is not None:
        fill["after"] = after
    fill["max"] = str(max_items)
    return stanzas.iq("get", slave, room, iq_id, fill)


def archive_fill_result(request: Element, records: Sequence[ArchiveRecord], complete: bool,
                        with_senders: bool) -> Element:
    """One page of the archive, oldest first, each message as archived (its XML as text)
    with its stamp as stored (exact), its sender's nickname and, only to a slave that
    may see real JIDs, its bare JID; complete: nothing follows."""
    page = Element((xmlns.DMUC, "archive"))
    if complete:
        page["complete"] = "true"
    for record in records:
        item = page.addElement("item")
        item["sid"], item["stamp"], item["nick"] = record.sid, repr(record.stamp), record.nick
        if with_senders and record.sender:
            item["sender"] = record.sender
        if record.retracted:
            item["retracted"] = "true"
        item.addContent(record.xml)  # as stored, byte for byte
    return stanzas.iq_result(request, page)


def parse_archive_fill(answer: Element) -> tuple[list[ArchiveRecord], bool] | None:
    """The records of a fill page and whether it is the last; None if malformed."""
    page = stanzas.child(answer, "archive", xmlns.DMUC)
    if page is None:
        return None
    records = []
    for item in stanzas.children(page, "item"):
        try:
            stamp = float(item.getAttribute("stamp", ""))
        except ValueError:
            return None
        if not str(item).strip() or not item.getAttribute("sid"):
            return None
        records.append(ArchiveRecord(
            sid=item["sid"], stamp=stamp, nick=item.getAttribute("nick", ""),
            sender=item.getAttribute("sender", ""), xml=str(item),
            retracted=item.getAttribute("retracted") == "true"))
    return records, page.getAttribute("complete") == "true"


def precise_stamp(stamp: float) -> str:
    """XEP-0082 with microseconds (truncated, so that the second is the stamp's): the
    archive's stamp as the slave must store it."""
    micros = int((stamp % 1) * 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{micros:06d}Z"


# --- slave -> anyone asking -------------------------------------------------------------------


def slave_disco_info() -> Element:
    reply = stanzas.query(xmlns.DISCO_INFO)
    identity = reply.addElement("identity")
    identity.attributes.update({"category": "component", "type": "generic",
                                "name": "dmuc slave (XEP-0282)"})
    for var in (xmlns.DISCO_INFO, xmlns.PING, xmlns.DMUC):
        reply.addElement("feature")["var"] = var
    return reply


def held(message: Element, stamp: float) -> Element:
    """A local occupant's groupchat the slave holds through a netsplit, marked with when
    it was sent, so that the room shows and stores it at that time (§4.11.2)."""
    copy = stanzas.copy(message)
    copy.addChild(dmuc_x()).addElement("held")["stamp"] = stanzas.format_stamp(stamp)
    return copy


def held_stamp(message: Element) -> float | None:
    """The time a held message was sent, if it says so."""
    return _marker_stamp(message, "held")


def said_time(message: Element, trusted: bool, now: float) -> float | None:
    """When its sender said `message`: the one "when said" marker of the wire, ``<said/>``
    (docs/protocol.md §4.11.2), which the Prosody in front of us stamps (mod_dmuc_slave on
    every local groupchat, mod_dmuc_hold on what it held) and strips from what anyone else
    wrote. `trusted`: that module told us it is there (else a client may have written it).
    None: no trusted, well-formed, plausible stamp (the caller takes now). The one rule of
    master and slave."""
    if not trusted:
        return None
    return plausible_said_time(_marker_stamp(message, "said"), now)


def _marker_stamp(message: Element, marker_name: str) -> float | None:
    for x in stanzas.children(message, "x", xmlns.DMUC):
        marker = stanzas.child(x, marker_name)
        if marker is not None:
            return stanzas.parse_stamp(marker.getAttribute("stamp", ""))
    return None


# The oldest original time a held message may claim (a netsplit, or a slave down, longer
# than a day is replayed with the time of the replay).
MAX_HELD_SECONDS = 86_400


def plausible_said_time(stamp: float | None, now: float) -> float | None:
    """A claimed original time (a held message's, a module's receipt), if it lies within
    the last day and not in the future; the one rule of master and slave."""
    return stamp if stamp is not None and now - MAX_HELD_SECONDS <= stamp <= now else None


# --- sequence numbers: nothing one end sends the other for a room goes missing unnoticed ----


def numbered(stanza: Element, seq: int) -> Element:
    """Number a stanza the master sends a slave for a room, or a slave forwards to the
    master (§4.11.2): in its dmuc element (added if it has none). A gap tells the other
    end it lost something on the way."""
    x = stanzas.child(stanza, "x", xmlns.DMUC)
    if x is None:
        x = stanza.addChild(dmuc_x())
    x["seq"] = str(seq)
    return stanza


def sequence_number(stanza: Element) -> int | None:
    x = stanzas.child(stanza, "x", xmlns.DMUC)
    return stanzas.parse_bounded_int(x.getAttribute("seq"), 0, 2**62) if x is not None \
        else None


def take_sequence_number(stanza: Element) -> int | None:
    """The number a slave gave a stanza it forwarded (§4.11.2), taken off the stanza (the
    dmuc element goes too if it held nothing else): the room never relays it."""
    x = stanzas.child(stanza, "x", xmlns.DMUC)
    seq = sequence_number(stanza)
    if x is None or x.getAttribute("seq") is None:
        return None
    del x.attributes["seq"]
    if next(x.elements(), None) is None:
        stanza.children.remove(x)
    return seq


def missing_before(expected: int | None, seq: int) -> int | None:
    """The one rule of both directions' numbers (§4.11.2): how many stanzas were lost
    before the one numbered `seq` when `expected` was the next number: 0 in order (or
    nothing expected yet), N lost on the way, None for a repeat (one we had)."""
    if expected is None:
        return 0
    if seq < expected:
        return None
    return seq - expected


def resend_request(room: str, slave: str, first: int, last: int) -> Element:
    """The master lost stanzas a slave forwarded (a gap in their numbers): the slave sends
    again those it numbered `first` to `last` (§4.11.2)."""
    message = stanzas.new("message", {"from": room, "to": slave, "type": "normal"})
    resend = message.addChild(dmuc_x()).addElement("resend")
    resend["from"], resend["to"] = str(first), str(last)
    return message


def rejoin_request(room: str, slave: str) -> Element:
    """The master heard from a split slave again: the slave registers again (with the
    newest message it has), so that the master replays exactly what it missed."""
    message = stanzas.new("message", {"from": room, "to": slave, "type": "normal"})
    message.addChild(dmuc_x()).addElement("rejoin")
    return message

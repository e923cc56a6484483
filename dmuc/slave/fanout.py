"""What the master broadcasts, delivered to this server's occupants (XEP-0282 §4.3-§4.7,
§4.9, §4.11.2): the master sends ONE copy to the slave, which stores it (roster, history,
subject) and fans it out to the local occupants; ENTER and LEAVE change the distribution
list; a snapshot (resync ... synced) replaces the roster and history, and local occupants
are told only what changed. Who sees a real JID is decided in dmuc.protocol.visibility."""

from __future__ import annotations

from twisted.words.xish.domish import Element

from dmuc import jids, xmlns
from dmuc.outbox import AppendHistory, ClearHistory, Outbox
from dmuc.protocol import occupant_id, stanzas, visibility, xep0282
from dmuc.protocol.history import (
    HistoryEntry,
    delayed,
    entry_for,
    is_historic,
    moderated_id,
    stanza_id,
)
from dmuc.protocol.occupancy import OccupancyLog
from dmuc.records import slave_history_key
from dmuc.slave import archive, roominfo
from dmuc.slave.room import RosterEntry, SlaveRoom


class Fanout:
    def __init__(self, slave_jid: str, domains: frozenset[str]) -> None:
        self.slave_jid = slave_jid
        self.domains = domains
        # local sessions entering and leaving: a debug line each, an info summary a minute
        self.occupancy = OccupancyLog("local sessions")

    def history_key(self, room_jid: str) -> str:
        return slave_history_key(self.slave_jid, room_jid)

    # --- ENTER, LEAVE, destroy (§4.5, §4.6) ------------------------------------------

    def enter(self, room: SlaveRoom, stanza: Element, nick: str, enter: Element,
              dmuc_x: Element, out: Outbox) -> None:
        """§4.5: add a local user to the distribution list and greet it (Listings 13-15)."""
        user = jids.parse(enter.getAttribute("jid"))
        if user is None or user.resource is None:
            malformed(stanza, out, "enter without a full JID")
            return
        full = user.full()
        if user.host not in self.domains or full not in room.directed:
            out.warn(f"refused ENTER of {full} to {room.jid}: no directed presence from "
                     "that user")
            out.send(xep0282.refuse_presence(self.slave_jid, room.jid, full))
            return
        # a netjoin re-entry (the user has the roster and history already), unless the
        # session joined afresh under the same JID
        already = room.local.get(full) == nick and full not in room.fresh
        room.fresh.discard(full)
        room.local[full] = nick
        room.joining.pop(full, None)
        own = without_dmuc(stanza)
        own["to"] = full
        if already:
            return
        viewer_role = stanzas.item_role(own)
        for other_nick, entry in room.shown().items():
            if other_nick == nick:
                continue
            out.broadcast(None, [full], _for_viewer(room, other_nick, entry, viewer_role))
        out.send(own)
        request = stanzas.child(dmuc_x, "history")
        for entry in room.history.select(request, out.now):
            out.broadcast(delayed(entry, room.jid), [full])
        subject = room.subject if room.subject is not None else stanzas.subject_message(
            room.jid, "")
        out.broadcast(stanzas.copy(subject), [full])
        if _photo(room.avatar) and len(room.sessions_of(nick)) == 1:
            out.broadcast(room.avatar, [full])  # as the master to a direct occupant
        out.debug(f"{full} entered {room.jid} as {nick}")
        self.occupancy.joined(room.jid, len(room.local), out.now)

    def leave(self, room: SlaveRoom, stanza: Element, leave: Element, out: Outbox) -> bool:
        """§4.6: remove the user from the distribution list; it gets the stanza. Whether
        a local occupant left."""
        full = leave.getAttribute("jid")
        if not full or full not in room.local:
            return False
        nick = room.local.pop(full)
        if full in room.fresh and not stanzas.has_status(stanza, "303"):
            # the old session of a client that joined again (say, a bounce to it made the
            # master drop it): the new one is on its way in, and is told nothing
            room.fresh.discard(full)
            room.joining.setdefault(full, out.now)
            out.debug(f"{full} left {room.jid} (its previous session; joining again)")
            return True
        if not stanzas.has_status(stanza, "303"):
            # however it left (kicked, banned, quit), it is out; a nick change (303)
            # enters again at once
            room.directed.discard(full)
            room.joining.pop(full, None)
        if nick in room.hidden and not room.sessions_of(nick):
            room.forget_occupant(nick)  # no one was shown it: its leaving is told no one
        own = without_dmuc(stanza)
        own["to"] = full
        out.send(own)
        out.debug(f"{full} left {room.jid}")
        self.occupancy.left(room.jid, len(room.local), out.now)
        return True

    def destroyed(self, room: SlaveRoom, stanza: Element, out: Outbox) -> None:
        """The room is gone: each local occupant gets the notice from its own room JID."""
        notice = without_dmuc(stanza)
        for full, nick in room.local.items():
            copy = stanzas.copy(notice)
            # each occupant's own id, from the roster the master sent (never computed here)
            occupant_id.place(copy, room.occupant_id_of(nick),
                              stanzas.child(copy, "x", xmlns.MUC_USER))
            copy["from"] = f"{room.jid}/{nick}"
            copy["to"] = full
            out.send(copy)
        out.info(f"{room.jid} was destroyed by its master")

    # --- presence updates (§4.7) -----------------------------------------------------

    def room_avatar(self, room: SlaveRoom, stanza: Element, out: Outbox) -> None:
        """The room's avatar presence (XEP-0486, §4.13): kept for entering users, and
        delivered to the local occupants when it changed."""
        presence = without_dmuc(stanza)
        presence.attributes.pop("to", None)
        changed = _photo(room.avatar) != _photo(presence)  # none known: no photo
        room.avatar = presence
        if changed and room.local:
            out.broadcast(presence, room.local_sessions())

    def roster_update(self, room: SlaveRoom, stanza: Element, nick: str, out: Outbox) -> None:
        """§4.7: store the change, then deliver it to every local occupant. An occupant
        whose role is no longer broadcast (visibility.hides_occupant) is told as gone to
        the others; if it is a local one it stays in the roster, hidden."""
        presence = stanzas.copy(stanza)
        presence.attributes.pop("to", None)
        hides = visibility.hides_occupant(presence)
        if presence.getAttribute("type") == "unavailable" and not hides:
            own = room.sessions_of(nick)
            room.forget_occupant(nick)
            new_nick = stanzas.item_nick(presence)
            if new_nick and stanzas.has_status(presence, "303"):
                for full in own:
                    room.local[full] = new_nick  # a local occupant changed its nick
            _deliver_roster_change(room, presence, own, out)
            return
        own = room.sessions_of(nick)
        old_role, had_jids = room.role_of(nick), room.receives_real_jids()
        if hides and not own:
            room.forget_occupant(nick)  # nothing more is told of it here until shown again
        else:
            room.roster[nick] = RosterEntry.of(as_listed(presence))
            if hides:
                room.hidden.add(nick)
            else:
                room.hidden.discard(nick)
        if room.resync_old is not None:
            return  # a snapshot: told at <synced/>, once the whole roster is known
        _deliver_roster_change(room, presence, own, out)
        role = room.role_of(nick)
        sees_now = visibility.sees_real_jids(room.whois, role)
        if own and sees_now != visibility.sees_real_jids(room.whois, old_role) \
                and had_jids == room.receives_real_jids():
            # As mod_muc, a local occupant who gains or loses the right to see real JIDs
            # gets the occupant list again, with or without them. (When this slave gains
            # its first or loses its last moderator, the master's snapshot does that.)
            for other, entry in room.roster.items():
                if other != nick:
                    out.broadcast(None, own, _for_viewer(room, other, entry, role))

    # --- snapshots (§4.3, §4.4, netjoin §4.11.2) -------------------------------------

    def resync_start(self, room: SlaveRoom, out: Outbox) -> None:
        """A snapshot of the master's state follows: it replaces ours; local occupants
        are told only what changed, and get what they missed."""
        ids = {sid for e in room.history if (sid := stanza_id(e.stanza, room.jid)) is not None}
        if room.resync_old is None:
            room.resync_old = room.shown()
            room.known_ids = ids
        else:
            # The previous snapshot was cut off (a netsplit before <synced/>): what local
            # occupants were last told is still the roster from before it.
            room.known_ids |= ids
        room.roster.clear()
        room.rendered.clear()
        room.hidden.clear()
        room.history.clear()
        room.subject = None  # the snapshot names it (empty for a room that is gone)
        roominfo.forget(room)  # and the room's settings, for a room that exists
        out.store(ClearHistory(self.history_key(room.jid)))

    def resync_end(self, room: SlaveRoom, out: Outbox) -> None:
        """<synced/>: tell local occupants the roster differences. Only now is every
        local occupant's role known (it decides who sees real JIDs)."""
        old = room.resync_old or {}
        room.resync_old = None
        room.known_ids = set()
        local_nicks = room.local.keys_of
        for nick, entry in room.roster.items():
            before = old.get(nick)
            if nick in room.hidden:
                if before is not None:  # hidden during the split: gone for the others
                    gone = entry.presence()
                    gone["type"] = "unavailable"
                    _deliver_roster_change(room, gone, room.sessions_of(nick), out)
            elif before is None or before.xml != entry.xml:
                _deliver_roster_change(room, entry.presence(), room.sessions_of(nick), out)
        for nick, entry in old.items():
            if nick not in room.roster and nick not in local_nicks:
                _deliver_roster_change(room, gone_during_split(entry.presence()), [], out)

    # --- messages (§4.9) -------------------------------------------------------------

    def message(self, room: SlaveRoom, stanza: Element, dmuc_x: Element | None,
                out: Outbox) -> None:
        """A broadcast groupchat (stored as history or subject, then shown), or a room
        setting the slave applies itself."""
        if stanza.getAttribute("type") != "groupchat":
            settings = stanzas.child(dmuc_x, "room") if dmuc_x is not None else None
            if settings is not None:
                _apply_settings(room, settings)
            return
        if dmuc_x is None:
            malformed(stanza, out, "groupchat from the master without a dmuc element")
            return
        stamp = _stamp_of(dmuc_x, out.now)
        local_copy = without_dmuc(stanza)
        local_copy.attributes.pop("to", None)
        is_history = stanzas.child(dmuc_x, "history") is not None
        sid = stanza_id(local_copy, room.jid)
        new = sid is None or room.take_once(sid)
        if not new and not is_history:
            # a copy queued on a link that was only slow, after the catch-up that
            # replayed it (§4.11.2): dropped, counted
            room.duplicates += 1
            return
        if sid is not None:
            room.last_id = sid  # what we have: a catch-up replays what follows it
        room.arrived(local_copy)
        echoed = _echoed_locally(room, local_copy)
        retracted = moderated_id(local_copy, room.jid)
        if new:
            self._archive(room, local_copy, retracted, stamp, out)
        _as_sender_sent(local_copy)
        if retracted is not None:
            # XEP-0425: a moderator retracted a message; joiners no longer get it
            self._drop_from_history(room, retracted, out)
            if is_history:
                # Replayed at a netjoin: we still had the message, so its retraction is
                # news here; local occupants' clients may show the message.
                if retracted in room.known_ids:
                    out.broadcast(local_copy, room.local_sessions())
                return
        if stanzas.child(local_copy, "subject") is not None and stanzas.child(
                local_copy, "body") is None:
            # kept with when it was set, the delay a newcomer gets it with (as mod_muc;
            # a snapshot's has the master's own, or none if it was never set)
            room.subject = stanzas.copy(local_copy)
            if not is_history and stanzas.child(room.subject, "delay", xmlns.DELAY) is None:
                room.subject.addChild(stanzas.delay(stamp, room.jid))
            if is_history:
                return
        elif stanzas.child(local_copy, "body") is not None or is_historic(local_copy):
            # Stored without a delay of its own (a held message's): history adds one.
            stored = stanzas.copy(local_copy)
            stored.children = [c for c in stored.children
                               if not (isinstance(c, Element) and c.uri == xmlns.DELAY)]
            entry = entry_for(stored, stamp)
            if is_historic(stored):  # the join history keeps what mod_muc's would
                self._store_history(room, entry, out)
            if is_history:
                # Replayed history: show local occupants only what they missed.
                missed = sid is not None and new and sid not in room.known_ids
                if missed and not echoed:
                    out.broadcast(delayed(entry, room.jid), room.local_sessions())
                return
        if is_history or echoed:
            return
        out.broadcast(local_copy, room.local_sessions())

    def _archive(self, room: SlaveRoom, message: Element, retracted: str | None,
                 stamp: float, out: Outbox) -> None:
        """Into our copy of the room's archive, as the master archived it (§4.17)."""
        key = self.history_key(room.jid)
        archive.keep(room, message, stamp, key, out)
        if retracted is not None:
            archive.retract(room, message, retracted, stamp, key, out)

    def _drop_from_history(self, room: SlaveRoom, sid: str, out: Outbox) -> None:
        """Forget a moderated message; the stored history is rewritten without it."""
        if not room.history.remove_id(sid, room.jid):
            return
        key = self.history_key(room.jid)
        out.store(ClearHistory(key))
        for entry in room.history:
            out.store(AppendHistory(key, entry.record(), room.history_length))

    def _store_history(self, room: SlaveRoom, entry: HistoryEntry, out: Outbox) -> None:
        if room.history.keep(entry, room.history_length) is not None:
            out.store(AppendHistory(self.history_key(room.jid), entry.record(),
                                    room.history_length))


# --- delivery: one presence change to the local occupants -------------------------------


def _deliver_roster_change(room: SlaveRoom, presence: Element, own: list[str],
                           out: Outbox) -> None:
    """One copy per variant: with 110 to the occupant's own sessions, with or without the
    real JID to the others."""
    hides = visibility.hides_occupant(presence)

    def variant(kind: str) -> Element | None:
        if kind == "self":
            # still inside: its own sessions have their own presence from the master
            return None if hides else visibility.with_self_status(
                presence, own[0] if own else None)
        if kind == "without_jid":
            return visibility.without_real_jid(presence)
        return presence

    visibility.deliver_presence(out, variant, room.local_roles(), own, room.whois)


def _for_viewer(room: SlaveRoom, nick: str, entry: RosterEntry, viewer_role: str) -> str:
    """§4.7: a listed presence, serialised, with or without the occupant's real JID.
    Without it is made once per roster entry that has one, for the first viewer who may
    not see it (when the master sent no real JID, every viewer gets the entry itself)."""
    if entry.jid is None or visibility.sees_real_jids(room.whois, viewer_role):
        return entry.xml
    cached = room.rendered.get(nick)
    if cached is None or cached[0] is not entry:
        stripped = visibility.without_real_jid(entry.presence())
        cached = (entry, stanzas.render_without_to(stripped))
        room.rendered[nick] = cached
    return cached[1]


def _photo(avatar: Element | None) -> str:
    """The photo hash the room's avatar presence names ('': none)."""
    x = stanzas.child(avatar, "x", xmlns.VCARD_UPDATE) if avatar is not None else None
    photo = stanzas.child(x, "photo") if x is not None else None
    return str(photo).strip() if photo is not None else ""


def _apply_settings(room: SlaveRoom, settings: Element) -> None:
    """The room settings the slave applies itself: whois, its archive's (§4.17), and
    what it answers disco#info and vCard gets from (§4.18)."""
    if settings.getAttribute("whois") in ("anyone", "moderators"):
        room.whois = settings["whois"]
    archive.settings_changed(room, xep0282.ArchiveSettings.parse(settings))
    roominfo.apply(room, settings)


def _stamp_of(dmuc_x: Element, now: float) -> float:
    """When the room said it (the delay in the dmuc element); now if it does not say."""
    delay = stanzas.child(dmuc_x, "delay", xmlns.DELAY)
    stamp = stanzas.parse_stamp(delay.getAttribute("stamp", "")) if delay is not None else None
    return now if stamp is None else stamp


def _as_sender_sent(message: Element) -> None:
    """A broadcast's id as its sender gave it (none if it gave none): the link's handle on
    it (xep0282.sender_id) has served once the slave has matched the broadcast."""
    shown = xep0282.sender_id(message.getAttribute("id"))
    if shown != message.getAttribute("id"):
        message.attributes.pop("id", None)
        if shown:
            message["id"] = shown


def _echoed_locally(room: SlaveRoom, message: Element) -> bool:
    """A message a local occupant sent while the link was not LIVE (or that was in flight
    when a split was found) was shown here then (link.local_echo); the master's copy is
    not shown again."""
    return room.was_echoed(message)


# --- the slave's transforms of what the master sends -------------------------------------


def without_dmuc(stanza: Element) -> Element:
    """§4.9: the slave removes the dmuc element before local delivery."""
    copy = stanzas.copy(stanza)
    copy.children = [c for c in copy.children
                     if not (isinstance(c, Element) and c.uri == xmlns.DMUC)]
    return copy


def as_listed(presence: Element) -> Element:
    """An occupant's presence as the room lists it to a newcomer (XEP-0045 §7.2.3): without
    the actor, reason and status codes of the broadcast that last changed it."""
    listed = stanzas.copy(presence)
    listed.attributes.pop("type", None)  # a hidden occupant's unavailable: still inside
    x = stanzas.child(listed, "x", xmlns.MUC_USER)
    if x is not None:
        x.children = [c for c in x.children if not (isinstance(c, Element)
                                                    and c.name == "status")]
        item = stanzas.child(x, "item")
        if item is not None:
            item.children = [c for c in item.children if not (
                isinstance(c, Element) and c.name in ("actor", "reason"))]
    return listed


def gone_during_split(presence: Element) -> Element:
    """An occupant that left while the slave was split: its unavailable presence."""
    gone = stanzas.new("presence", {"from": presence.getAttribute("from"),
                                    "type": "unavailable"})
    item = stanzas.muc_item(presence)
    x = gone.addElement((xmlns.MUC_USER, "x"))
    new_item = x.addElement("item")
    new_item["affiliation"] = item.getAttribute("affiliation", "none") if item is not None \
        else "none"
    new_item["role"] = "none"
    if item is not None and item.getAttribute("jid"):
        new_item["jid"] = item["jid"]
    occupant_id.place(gone, occupant_id.of(presence), x)
    return gone




def malformed(stanza: Element, out: Outbox, why: str) -> None:
    """A stanza from the master we cannot use: logged, and answered unless an answer."""
    out.warn(f"malformed stanza from {stanza.getAttribute('from')}: {why}")
    if stanza.getAttribute("type") not in ("error", "result"):
        out.send(stanzas.error_reply(stanza, "modify", "bad-request", why))

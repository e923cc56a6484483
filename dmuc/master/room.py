"""The room core: occupants, presence, messages and IQ routing of one XEP-0045 room.

Feature modules (history, subject, admin, owner, invites, registration, voice, disco)
sit around this class the way Prosody's plugins/muc/*.lib.lua sit around muc.lib.lua:
the room fires events (dmuc.hooks lists them) and they hook them. A session may be reached
through a relay that gets one copy of each broadcast (routing.Router); the room knows no
more of it than the events' results. Every entry point takes a parsed stanza and an
Outbox and returns nothing: what to send and what to store is written to the Outbox.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Collection, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from twisted.words.xish.domish import Element

from dmuc import jids, xmlns
from dmuc.errors import Refusal
from dmuc.master.features import iq_handlers, members_only
from dmuc.master.model import (
    AFFILIATION_RANK,
    NO_CHANGE,
    ROLE_RANK,
    Occupant,
    PresenceChange,
    RoomConfig,
)
from dmuc.outbox import Outbox, SaveRoom
from dmuc.protocol import stanzas, visibility
from dmuc.protocol.history import History
from dmuc.protocol.occupant_iq import NOT_IN_ROOM, OccupantIq
from dmuc.protocol.occupant_iq import verdict as occupant_iq_verdict

if TYPE_CHECKING:
    from dmuc.master.service import MUCService

# Pending IQs forwarded between occupants (rewritten id -> where the answer goes).
MAX_PENDING_IQS = 1000
# Error conditions that mean the occupant's session is gone (mod_muc's is_kickable_error).
KICKABLE_ERRORS = frozenset({
    "gone", "internal-server-error", "item-not-found", "jid-malformed", "recipient-unavailable",
    "redirect", "remote-server-not-found", "remote-server-timeout", "service-unavailable"})


def _asked_nick(stanza: Element, parsed: str) -> str:
    """The nick exactly as the user wrote it in 'to' (`parsed` went through resourceprep
    when the address was parsed); a difference from the nick given is a 210 rewrite."""
    _, slash, raw = (stanza.getAttribute("to") or "").partition("/")
    return raw if slash else parsed


class Room:
    def __init__(self, service: MUCService, jid: str, config: RoomConfig | None = None) -> None:
        self.service = service
        self.jid = jid
        self.config = config or RoomConfig()
        self.affiliations: dict[str, str] = {}  # bare JID -> owner/admin/member/outcast
        self.reserved_nicks: dict[str, str] = {}  # bare JID -> registered nickname
        self.subject: str = ""
        self.subject_from: str = ""  # nick of who set it ("" = the room)
        self.subject_time: float = 0.0  # when it was set (0: never), its delay on join
        self.locked = False
        self.created: float = 0.0  # when the room was created (a locked room expires)
        self.history = History()
        self.occupants: dict[str, Occupant] = {}  # nick -> occupant
        self.nick_of: dict[str, str] = {}  # full real JID of a session -> nick
        self.pending_iqs: OrderedDict[str, tuple[str, str, str]] = OrderedDict()
        self.destroyed = False
        # It has (or had) occupants reached directly, which storage keeps: a temporary
        # room is then stored too (features/direct_occupants.py)
        self.keeps_occupants = False
        # What the room's features keep with it (as Prosody's room._data), stored with the
        # room: e.g. the occupant-id salt, the room's vCard.
        self.data: dict[str, Any] = {}

    # --- persistence --------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "affiliations": dict(self.affiliations),
            "reserved_nicks": dict(self.reserved_nicks),
            "subject": self.subject,
            "subject_from": self.subject_from,
            "data": dict(self.data),
            "subject_time": self.subject_time,
        }

    @classmethod
    def from_state(cls, service: MUCService, jid: str, state: dict[str, Any]) -> Room:
        room = cls(service, jid, RoomConfig.from_dict(state.get("config", {})))
        room.affiliations = dict(state.get("affiliations", {}))
        room.reserved_nicks = dict(state.get("reserved_nicks", {}))
        room.subject = state.get("subject", "")
        room.subject_from = state.get("subject_from", "")
        room.data = dict(state.get("data", {}))
        room.subject_time = float(state.get("subject_time", 0.0))
        return room

    def save(self, out: Outbox) -> None:
        if (self.config.persistent or self.keeps_occupants) and not self.destroyed:
            out.store(SaveRoom(self.jid, self.to_state))

    # --- lookups --------------------------------------------------------------------

    def occupant_jid(self, nick: str) -> str:
        return f"{self.jid}/{nick}"

    def affiliation(self, bare_jid: str) -> str:
        if bare_jid in self.service.admins:
            return "owner"
        found = self.affiliations.get(bare_jid)
        if found is None and self.affiliations.get(jids.domain(bare_jid)) == "outcast":
            return "outcast"  # the user's whole domain is banned (as mod_muc)
        return found or "none"

    def occupant_by_session(self, full_jid: str) -> Occupant | None:
        nick = self.nick_of.get(full_jid)
        return self.occupants.get(nick) if nick is not None else None

    def role_of_session(self, session: str) -> str:
        occupant = self.occupant_by_session(session)
        return occupant.role if occupant is not None else "none"

    def occupants_of(self, bare_jid: str) -> list[Occupant]:
        return [o for o in self.occupants.values() if o.bare_jid == bare_jid]

    def default_role(self, affiliation: str) -> str:
        if affiliation in ("owner", "admin"):
            return "moderator"
        if affiliation == "member":
            return "participant"
        if affiliation == "outcast":
            return "none"
        if self.config.members_only:
            return "none"
        return "visitor" if self.config.moderated else "participant"

    def sessions_with_role(self, role: str) -> list[str]:
        return [s for o in self.occupants.values() if o.role == role for s in o.sessions]

    def is_empty(self) -> bool:
        return not self.occupants

    def is_anonymous(self) -> bool:
        return self.config.whois != "anyone"

    def reserved_by(self, nick: str) -> str | None:
        for bare, reserved in self.reserved_nicks.items():
            if reserved == nick:
                return bare
        return None

    # --- presence building --------------------------------------------------------------

    def _item(self, occupant: Occupant, with_jid: bool, **extra: str | None) -> dict:
        item: dict[str, str | None] = {
            "affiliation": self.affiliation(occupant.bare_jid),
            "role": occupant.role,
        }
        if with_jid:
            item["jid"] = occupant.primary
        item.update(extra)
        return item

    def presence_of(
        self,
        occupant: Occupant,
        with_jid: bool,
        codes: Iterable[str],
        *,
        presence_type: str | None = None,
        item_extra: dict[str, str | None] | None = None,
        reason: str | None = None,
        actor_nick: str | None = None,
        actor_jid: str | None = None,
        base: Element | None = None,
        from_nick: str | None = None,
    ) -> Element:
        """An occupant's presence as the room sends it (one variant)."""
        x = stanzas.muc_user_x(
            [self._item(occupant, with_jid, **(item_extra or {}))],
            list(codes),
            reason=reason,
            actor_nick=actor_nick,
            actor_jid=actor_jid,
        )
        # the occupant's own presence is parsed anew for each variant: its children are
        # this variant's to keep
        owned = base is None
        presence = stanzas.occupant_presence(
            occupant.presence if owned else base,
            self.occupant_jid(from_nick or occupant.nick), x, presence_type, owned=owned)
        self.service.hooks.fire("occupant-presence", room=self, occupant=occupant,
                                stanza=presence)
        return presence

    def publicise(self, occupant: Occupant, out: Outbox, change: PresenceChange = NO_CHANGE,
                  *, only_to: Iterable[str] | None = None,
                  exclude: Collection[str] = ()) -> None:
        """Send an occupant's presence, as `change` describes it, to every session in the
        room, in the variants the room needs: with the real JID (moderators, or everyone
        in a non-anonymous room), without it, and the occupant's own copy with status 110.
        Sessions reached through a relay (routing.Router) get one copy per relay.
        `only_to` sends the direct copies to those sessions alone (a reply to one of
        them); `exclude` leaves sessions out of a broadcast. Whether the others see it at
        all is visibility.presence_shown (mod_muc's presence_broadcast)."""
        occupant.listed.clear()  # whatever changed, the listed form changes with it
        nicks = (occupant.nick,) if change.from_nick in (None, occupant.nick) else (
            occupant.nick, change.from_nick)
        self.service.hooks.fire("occupant-changed", room=self, nicks=nicks, out=out)
        own = set(occupant.sessions)
        if only_to is not None:
            targets, relays = list(only_to), []
        else:
            targets, relays = self.service.router.route(self, exclude)
        shown = visibility.presence_shown(
            occupant.role, change.prev_role, self.config.presence_broadcast, hide=change.hide,
            nick_change=change.type == "unavailable" and "303" in change.statuses,
            probe=only_to is not None)

        def for_others(with_jid: bool) -> Element:
            if not shown.hiding:
                return self.changed_presence(occupant, change, with_jid, change.statuses)
            if change.hide:
                return self.hidden_presence(occupant, with_jid)
            # mod_muc: its presence as broadcast, marked unavailable
            gone = self.changed_presence(occupant, change, with_jid, change.statuses)
            gone["type"] = "unavailable"
            return gone

        def variant(kind: str) -> Element:
            if kind != "self":
                return for_others(kind == "with_jid")
            codes = visibility.self_status_codes([*change.statuses, *change.self_statuses])
            return self.changed_presence(occupant, change, True, codes, own=True)

        recipients = [(session, self.role_of_session(session)) for session in targets
                      if shown.visible or session in own]
        if (shown.hiding or not shown.visible) and only_to is None:
            # A role the room does not broadcast: the occupant still sees its own
            # presence (as mod_muc), sent to its relayed sessions too: no relay gets it,
            # or a relay gets only what the others see.
            recipients += [(session, occupant.role) for session in occupant.sessions
                           if session not in targets and session not in exclude]
        visibility.deliver_presence(out, variant, recipients, own, self.config.whois)
        if shown.visible:
            self.service.router.fan_out_presence(self, for_others, relays, out)

    def changed_presence(self, occupant: Occupant, change: PresenceChange, with_jid: bool,
                          codes: Iterable[str], *, own: bool = False) -> Element:
        """An occupant's presence as `change` describes it (one variant); the actor's
        real JID goes with the others' real JIDs, never into the occupant's `own` copy
        (as mod_muc)."""
        return self.presence_of(
            occupant, with_jid, codes, presence_type=change.type, item_extra=change.item_extra,
            reason=change.reason, actor_nick=change.actor_nick,
            actor_jid=change.actor_jid if with_jid and not own else None, base=change.base,
            from_nick=change.from_nick)

    def hidden_presence(self, occupant: Occupant, with_jid: bool) -> Element:
        """An occupant whose role the room no longer broadcasts, as the others are told of
        it (mod_muc's presence_broadcast): an unavailable presence, role kept, nothing of
        its own presence (a relay's own such occupants are in its snapshot so)."""
        return self.presence_of(occupant, with_jid, (), presence_type="unavailable")

    def broadcast_groupchat(self, message: Element, out: Outbox,
                            stamp: float | None = None) -> None:
        """A groupchat stanza to every occupant: one copy per directly reached session,
        one per relay (routing.Router), stamped `stamp` (default now); the sessions
        reached directly get it as the router says (without a relay's own handle)."""
        router = self.service.router
        direct, relays = router.route(self)
        if direct:
            out.broadcast(router.for_direct(message), direct)
        router.fan_out_groupchat(self, message, relays, out, out.now if stamp is None else stamp)

    def listed_presence(self, occupant: Occupant, with_jid: bool) -> str:
        """An occupant's presence as the room lists it to a newcomer (no status codes),
        serialised without 'to': kept until the occupant's next change, so that N joins
        cost N serialisations per occupant, not N each. Only the string is kept (the tree
        would be a few KB per occupant): the copies are written from it."""
        cached = occupant.listed.get(with_jid)
        if cached is None:
            presence = self.presence_of(occupant, with_jid, ())
            cached = occupant.listed[with_jid] = stanzas.render_without_to(presence)
        return cached

    def send_occupant_list(self, session: str, out: Outbox,
                           viewer_role: str | None = None) -> None:
        """Presence of every other occupant to a joining session (XEP-0045 §7.2.3)."""
        if viewer_role is None:
            viewer = self.occupant_by_session(session)
            viewer_role = viewer.role if viewer is not None else "none"
        with_jid = visibility.sees_real_jids(self.config.whois, viewer_role)
        for occupant in self.occupants.values():
            if session in occupant.sessions:
                continue
            if occupant.role not in self.config.presence_broadcast:
                continue
            out.broadcast(None, [session], self.listed_presence(occupant, with_jid))

    # --- presence -----------------------------------------------------------------------

    def handle_presence(self, stanza: Element, nick: str | None, out: Outbox) -> None:
        sender = stanza.getAttribute("from")
        ptype = stanza.getAttribute("type")
        occupant = self.occupant_by_session(sender)
        if ptype == "error":
            if occupant is not None:
                self.remove_session(occupant, sender, out, statuses=("307", "333"))
            return
        if ptype == "probe":
            self._answer_probe(stanza, nick, occupant, out)
            return
        if ptype == "unavailable":
            if occupant is not None:
                self.leave(occupant, sender, stanza, out)
            return
        if ptype is not None:
            return  # subscriptions are not for rooms
        if nick is None:
            is_join = stanzas.child(stanza, "x", xmlns.MUC) is not None
            if occupant is not None and not is_join:  # an update sent to the bare room JID
                self.update_presence(occupant, sender, stanza, out)
            else:
                out.send(stanzas.join_error(stanza, "modify", "jid-malformed"))
            return
        if occupant is None:
            self.join(stanza, sender, nick, out)
        elif occupant.nick == nick and stanzas.child(stanza, "x", xmlns.MUC) is not None:
            # A join from a session the room thinks is inside (e.g. Prosody restarted under
            # it): the full join sequence again, as mod_muc does, or the client never
            # gets the occupant list, history and subject.
            self.join(stanza, sender, nick, out)
        elif occupant.nick == nick:
            self.update_presence(occupant, sender, stanza, out)
        else:
            self.change_nick(occupant, sender, nick, stanza, out)

    def _answer_probe(
        self, stanza: Element, nick: str | None, prober: Occupant | None, out: Outbox
    ) -> None:
        sender = stanza.getAttribute("from")
        if prober is None:
            self._refuse(stanza, out, *NOT_IN_ROOM)
            return
        target = self.occupants.get(nick) if nick else None
        if target is None:
            out.send(self._absent_presence(stanza.getAttribute("to"), nick, sender,
                                           prober.role))
            return
        self.publicise(target, out, only_to=[sender])

    def _absent_presence(self, occupant_jid: str, nick: str | None, to: str,
                         viewer_role: str) -> Element:
        """The answer to a probe of a nick no occupant holds: as mod_muc, for a nick
        registered by a user, unavailable with that user's affiliation, role none, the
        nick and (to whom may see it) the real JID; else (mod_muc: no answer) a bare
        unavailable, so that the probe gets one."""
        absent = stanzas.new("presence", {"from": occupant_jid, "to": to,
                                          "type": "unavailable"})
        owner = self.reserved_by(nick) if nick else None
        if owner is not None:
            sees = visibility.sees_real_jids(self.config.whois, viewer_role)
            absent.addChild(stanzas.muc_user_x([{
                "affiliation": self.affiliation(owner), "role": "none", "nick": nick,
                "jid": owner if sees else None}]))
        return absent

    def check_join(self, stanza: Element, sender: str, nick: str) -> None:
        """Raise a Refusal if `sender` may not enter as `nick` (XEP-0045 §7.2.6-§7.2.11).
        The core's own rules first (lock, ban, nickname in use or registered), as in
        mod_muc's muc.lib; then the `occupant-pre-join` handlers."""
        bare = jids.bare(sender)
        affiliation = self.affiliation(bare)
        if self.locked and affiliation != "owner":
            raise Refusal("cancel", "item-not-found", "This room is locked")
        if affiliation == "outcast":
            # mod_muc checks members-only (-5) before the ban (-10): a members-only room
            # refuses a banned user as any non-member (registration-required)
            raise members_only.pre_join(self, stanza, nick, sender) or Refusal(
                "auth", "forbidden", "You have been banned from this room")
        holder = self.occupants.get(nick)
        if holder is not None and holder.bare_jid != bare:
            raise Refusal("cancel", "conflict", "That nickname is already in use")
        reserver = self.reserved_by(nick)
        if reserver is not None and reserver != bare:
            raise Refusal("cancel", "conflict", "That nickname is registered to another user")
        # Then the settings' checks (members-only, password, occupant limit, in the order
        # of their priorities) and operators' plugins: the first refusal returned wins.
        refusal = self.service.hooks.fire(
            "occupant-pre-join", room=self, stanza=stanza, nick=nick, sender=sender
        )
        if refusal is not None:
            raise refusal

    def join(
        self,
        stanza: Element,
        sender: str,
        requested_nick: str,
        out: Outbox,
        *,
        created: bool = False,
    ) -> None:
        try:
            nick = jids.check_nick(requested_nick)
        except Refusal as refusal:
            out.send(stanzas.join_error(stanza, refusal.err_type, refusal.condition, refusal.text))
            out.info(f"refused join of {sender} to {self.jid}: {refusal.text}")
            return
        bare = jids.bare(sender)
        self_codes: list[str] = []
        enforced = self.service.settings.enforce_reserved_nicks and self.reserved_nicks.get(bare)
        if enforced and enforced != nick:
            nick = enforced
        if nick != _asked_nick(stanza, requested_nick):
            self_codes.append("210")
        try:
            self.check_join(stanza, sender, nick)
        except Refusal as refusal:
            reply = stanzas.join_error(stanza, refusal.err_type, refusal.condition, refusal.text)
            reply["from"] = self.occupant_jid(requested_nick)
            out.send(reply)
            out.info(stanzas.one_line(f"refused join of {sender} to {self.jid}: "
                                      f"{refusal.condition}: {refusal.text}"))
            return
        if created:
            self_codes.append("201")
        if self.config.logging:
            self_codes.append("170")
        self_codes += visibility.entering_status_codes(self.config.whois)

        self._enter(stanza, sender, nick, self_codes, out)

    def _enter(self, stanza: Element, sender: str, nick: str, self_codes: list[str],
               out: Outbox) -> None:
        """An admitted session enters as `nick`: a new occupant, or another session of
        the user's occupant. A session an `occupant-entering` handler relays gets no
        occupant list or own presence from the room: its relay gives it them."""
        hooks = self.service.hooks
        existing = self.occupants.get(nick)
        presence = self._stored_presence(stanza)
        relayed = hooks.fire("occupant-entering", room=self, session=sender, out=out) is True
        if existing is not None:
            # Another session of the same user joins under the same nick (multi-session).
            existing.sessions[sender] = presence
            existing.primary = sender
            self.nick_of[sender] = nick
            hooks.fire("occupant-role-set", room=self, occupant=existing)
            if not relayed:
                self.send_occupant_list(sender, out)
            self.publicise(existing, out, exclude={sender})
            if not relayed:
                self.publicise(existing, out, PresenceChange(self_statuses=tuple(self_codes)),
                               only_to=[sender])
            occupant = existing
        else:
            bare = jids.bare(sender)
            occupant = Occupant(nick=nick, bare_jid=bare, primary=sender,
                                role=self.default_role(self.affiliation(bare)),
                                sessions={sender: presence})
            # The list goes out before the occupant exists, so it never contains itself.
            if not relayed:
                self.send_occupant_list(sender, out, viewer_role=occupant.role)
            self.occupants[nick] = occupant
            self.nick_of[sender] = nick
            hooks.fire("occupant-role-set", room=self, occupant=occupant)
            # a relayed session's own copy is its relay's (even when its role is hidden)
            self.publicise(occupant, out, PresenceChange(self_statuses=tuple(self_codes)),
                           exclude={sender} if relayed else ())
        self._session_new(occupant, sender, stanza, self_codes, out)
        hooks.fire("occupant-role-broadcast", room=self, occupant=occupant, out=out)
        relay = self.service.router.relay_of(self, sender)
        # one line per join at debug level; info has the summary (features/occupancy_log)
        out.debug(f"{sender} joined {self.jid} as {nick}"
                  + (f" through {relay}" if relay is not None else ""))
        hooks.fire("occupant-joined", room=self, occupant=occupant, session=sender, out=out)

    def _session_new(self, occupant: Occupant, session: str, join: Element,
                     self_codes: list[str], out: Outbox) -> None:
        """A session is in: what it gets beyond the presences (mod_muc's
        muc-occupant-session-new: history, then subject), unless a handler gave it all
        (a relayed session)."""
        self.service.hooks.fire("occupant-session-new", room=self, occupant=occupant,
                                session=session, stanza=join, self_codes=self_codes, out=out)

    def _kept_presence(self, stanza: Element) -> Element:
        """The parts of a user's presence the room keeps and repeats (show, status, caps;
        its id and whether it is unavailable, as mod_muc repeats them)."""
        kept = stanzas.new("presence", {k: v for k, v in stanza.attributes.items()
                                        if k == "id" or (k == "type" and v == "unavailable")})
        for el in stanza.elements():
            if el.uri in (xmlns.MUC, xmlns.MUC_USER) or el.name in ("error", "delay"):
                continue
            kept.addChild(stanzas.copy(el))
        return kept

    def _stored_presence(self, stanza: Element) -> str:
        """What an occupant's session keeps of its last presence (Occupant.sessions)."""
        return stanzas.render(self._kept_presence(stanza))

    def update_presence(self, occupant: Occupant, sender: str, stanza: Element,
                        out: Outbox) -> None:
        occupant.sessions[sender] = self._stored_presence(stanza)
        occupant.primary = sender
        self.publicise(occupant, out)

    def change_nick(
        self, occupant: Occupant, sender: str, requested: str, stanza: Element, out: Outbox
    ) -> None:
        target_jid = self.occupant_jid(requested)
        refusal: Refusal | None = None
        try:
            new_nick: str | None = jids.check_nick(requested)
        except Refusal as invalid:
            new_nick, refusal = None, invalid
        holder = self.occupants.get(new_nick) if new_nick is not None else None
        if new_nick is not None:
            reserver = self.reserved_by(new_nick)
            if holder is not None and holder.bare_jid != occupant.bare_jid:
                refusal = Refusal("cancel", "conflict", "That nickname is already in use")
            elif reserver is not None and reserver != occupant.bare_jid:
                refusal = Refusal("cancel", "conflict",
                                  "That nickname is registered to another user")
            elif (
                self.service.settings.enforce_reserved_nicks
                and self.reserved_nicks.get(occupant.bare_jid) not in (None, new_nick)
            ):
                refusal = Refusal("cancel", "not-acceptable",
                                  "You must use your registered nickname")
        if refusal is not None or new_nick is None:
            refusal = refusal or Refusal("modify", "jid-malformed", "Invalid nickname")
            reply = stanzas.error_reply(stanza, refusal.err_type, refusal.condition, refusal.text)
            reply["from"] = target_jid
            out.send(reply)
            out.info(f"refused nick change of {sender} in {self.jid}: {refusal.text}")
            return
        if len(occupant.sessions) > 1 or (holder is not None and holder is not occupant):
            self._move_session(occupant, sender, new_nick, requested, stanza, out)
            return
        old_nick = occupant.nick
        self.publicise(occupant, out, PresenceChange(
            type="unavailable", statuses=("303",), item_extra={"nick": new_nick},
            from_nick=old_nick))
        del self.occupants[old_nick]
        occupant.nick = new_nick
        self.occupants[new_nick] = occupant
        for session in occupant.sessions:
            self.nick_of[session] = new_nick
        occupant.sessions[sender] = self._stored_presence(stanza)
        self_codes = ("210",) if new_nick != _asked_nick(stanza, requested) else ()
        self.publicise(occupant, out, PresenceChange(self_statuses=self_codes))
        out.info(f"{sender} in {self.jid}: {old_nick} is now {new_nick}")
        self.service.hooks.fire("occupant-nick-changed", room=self, occupant=occupant,
                                old_nick=old_nick, out=out)

    def _move_session(self, occupant: Occupant, session: str, new_nick: str, requested: str,
                      stanza: Element, out: Outbox) -> None:
        """A nick change by one session of a multi-session occupant (or into a nick the
        same user holds with another session): that session alone moves, as in mod_muc.
        It sees its old self leave (303); the others see it only if no session is left."""
        old_nick = occupant.nick
        last = len(occupant.sessions) == 1
        hooks = self.service.hooks
        # A relayed session leaves its old nick and enters the new one through its relay
        # (which must know which nick each of its sessions holds).
        moved = PresenceChange(type="unavailable", statuses=("303",),
                               item_extra={"nick": new_nick})
        relayed = not last and self._leaving(occupant, session, moved, out)
        if not relayed:
            self.publicise(occupant, out, moved, only_to=None if last else [session])
        del occupant.sessions[session]
        del self.nick_of[session]
        if last:
            self.occupants.pop(old_nick, None)
        elif occupant.primary == session:
            occupant.primary = next(iter(occupant.sessions))
            self.publicise(occupant, out)
        presence = self._stored_presence(stanza)
        target = self.occupants.get(new_nick)
        if target is None:
            target = Occupant(nick=new_nick, bare_jid=occupant.bare_jid, role=occupant.role,
                              sessions={session: presence}, primary=session)
            self.occupants[new_nick] = target
        else:
            target.sessions[session] = presence
            target.primary = session
        self.nick_of[session] = new_nick
        hooks.fire("occupant-role-set", room=self, occupant=target)  # the target's role
        codes = ("210",) if new_nick != requested else ()
        if relayed:
            self.publicise(target, out, exclude={session})
            hooks.fire("occupant-session-moved", room=self, occupant=target, session=session,
                       self_codes=list(codes), out=out)
        else:
            self.publicise(target, out, PresenceChange(self_statuses=codes))
        hooks.fire("occupant-role-broadcast", room=self, occupant=target, out=out)
        out.info(f"{session} in {self.jid}: moved from {old_nick} to {new_nick}")

    def leave(self, occupant: Occupant, sender: str, stanza: Element | None, out: Outbox) -> None:
        base = self._kept_presence(stanza) if stanza is not None else None
        self.remove_session(occupant, sender, out, base=base)

    def remove_session(
        self,
        occupant: Occupant,
        session: str,
        out: Outbox,
        *,
        statuses: Iterable[str] = (),
        base: Element | None = None,
    ) -> None:
        """One session leaves; the occupant leaves with its last session."""
        hooks = self.service.hooks
        gone = PresenceChange(type="unavailable", statuses=tuple(statuses), base=base)
        if len(occupant.sessions) > 1:
            if not self._leaving(occupant, session, gone, out):
                self.publicise(occupant, out, gone, only_to=[session])
            del occupant.sessions[session]
            del self.nick_of[session]
            hooks.fire("occupant-session-gone", room=self, session=session, out=out)
            if occupant.primary == session:
                occupant.primary = next(iter(occupant.sessions))
                self.publicise(occupant, out)
            return
        prev_role, occupant.role = occupant.role, "none"
        # a relayed session's own copy is its relay's (even when its role is hidden)
        relayed = self._leaving(occupant, session, gone, out)
        self.publicise(occupant, out, replace(gone, prev_role=prev_role),
                       exclude={session} if relayed else ())
        self._drop(occupant, out)
        out.debug(f"{session} left {self.jid}")
        self.service.hooks.fire("occupant-left", room=self, occupant=occupant, out=out)
        self.service.close_if_empty(self, out)

    def _leaving(self, occupant: Occupant, session: str, change: PresenceChange,
                 out: Outbox) -> bool:
        """Fire `occupant-leaving`: True when a handler told the session it left (its
        relay, which then tells it); `change` is how its own unavailable presence is
        built."""
        return self.service.hooks.fire("occupant-leaving", room=self, occupant=occupant,
                                       session=session, change=change, out=out) is True

    def _drop(self, occupant: Occupant, out: Outbox) -> None:
        self.occupants.pop(occupant.nick, None)
        for session in occupant.sessions:
            self.nick_of.pop(session, None)
            self.service.hooks.fire("occupant-session-gone", room=self, session=session,
                                    out=out)

    def evict(
        self,
        occupant: Occupant,
        statuses: Iterable[str],
        out: Outbox,
        *,
        reason: str | None = None,
        actor_nick: str | None = None,
        actor_jid: str | None = None,
    ) -> None:
        """Remove an occupant with all its sessions (kick 307, ban 301, 321, 322...)."""
        prev_role, occupant.role = occupant.role, "none"
        gone = PresenceChange(type="unavailable", statuses=tuple(statuses), reason=reason,
                              actor_nick=actor_nick, actor_jid=actor_jid,
                              base=stanzas.new("presence"))
        # a relayed session's own copy is its relay's (even when its role is hidden)
        relayed = {session for session in list(occupant.sessions)
                   if self._leaving(occupant, session, gone, out)}
        self.publicise(occupant, out, replace(gone, prev_role=prev_role), exclude=relayed)
        self._drop(occupant, out)
        self.service.hooks.fire("occupant-left", room=self, occupant=occupant, out=out)

    # --- roles and affiliations -----------------------------------------------------------

    def set_role(self, occupant: Occupant, role: str, out: Outbox, *,
                 reason: str | None = None, actor_nick: str | None = None,
                 actor_jid: str | None = None) -> None:
        if role == "none":
            self.evict(occupant, ["307"], out, reason=reason, actor_nick=actor_nick,
                       actor_jid=actor_jid)
            out.info(f"{occupant.nick} was kicked from {self.jid}")
            self.service.close_if_empty(self, out)
            return
        if occupant.role == role:
            return
        old_role = occupant.role
        occupant.role = role
        self.service.hooks.fire("occupant-role-set", room=self, occupant=occupant)
        self.publicise(occupant, out, PresenceChange(reason=reason, actor_nick=actor_nick,
                                                     actor_jid=actor_jid, prev_role=old_role))
        self._moderation_changed(occupant, old_role, out)

    def _moderation_changed(self, occupant: Occupant, old_role: str, out: Outbox) -> None:
        """In a semi-anonymous room, whoever gains or loses the moderator role sees the
        real JIDs appear or go: the other occupants' presence is sent again (as mod_muc)."""
        self.service.hooks.fire("occupant-role-broadcast", room=self, occupant=occupant, out=out)
        if not self.is_anonymous() or (old_role == "moderator") == (occupant.role == "moderator"):
            return
        for session in occupant.sessions:
            if self.service.router.relay_of(self, session) is None:  # a relay lists itself
                self.send_occupant_list(session, out)

    def set_affiliation(self, bare_jid: str, affiliation: str, out: Outbox, *,
                        reason: str | None = None, actor_nick: str | None = None,
                        actor_jid: str | None = None, reserve_nick: str | None = None) -> None:
        """`reserve_nick`: the nick registered with it (mod_muc's reserved_nickname)."""
        previous = self.affiliations.get(bare_jid, "none")
        is_downgrade = AFFILIATION_RANK[previous] > AFFILIATION_RANK[affiliation]
        if affiliation == "none":
            self.affiliations.pop(bare_jid, None)
        else:
            self.affiliations[bare_jid] = affiliation
        if affiliation in ("none", "outcast"):
            self.reserved_nicks.pop(bare_jid, None)  # a registration is a membership
        elif reserve_nick is not None:
            self.reserved_nicks[bare_jid] = reserve_nick
        present = self.occupants_of(bare_jid)
        for occupant in present:
            if affiliation == "outcast":
                self.evict(occupant, ["301"], out, reason=reason, actor_nick=actor_nick,
                           actor_jid=actor_jid)
                continue
            role = self.default_role(self.affiliation(bare_jid))
            if role == "none":
                self.evict(occupant, ["321"], out, reason=reason, actor_nick=actor_nick,
                           actor_jid=actor_jid)
                continue
            old_role = occupant.role
            # As mod_muc: the role follows a downgrade, or rises to the new default, but a
            # higher role granted separately (e.g. moderator) survives an upgrade.
            if is_downgrade or ROLE_RANK[old_role] < ROLE_RANK[role]:
                occupant.role = role
                self.service.hooks.fire("occupant-role-set", room=self, occupant=occupant)
            self.publicise(occupant, out, PresenceChange(
                reason=reason, actor_nick=actor_nick, actor_jid=actor_jid, prev_role=old_role))
            self._moderation_changed(occupant, old_role, out)
        self.save(out)
        out.info(f"{bare_jid} is now {affiliation} of {self.jid}")
        self.service.hooks.fire("affiliation-changed", room=self, jid=bare_jid,
                                affiliation=affiliation, in_room=bool(present), reason=reason,
                                out=out)
        self.service.close_if_empty(self, out)

    # --- messages -----------------------------------------------------------------------

    def handle_message(self, stanza: Element, nick: str | None, out: Outbox) -> None:
        sender = stanza.getAttribute("from")
        mtype = stanza.getAttribute("type") or "normal"
        occupant = self.occupant_by_session(sender)
        if mtype == "error":
            # Our broadcast (from room/nick, or the room) bounced at the user's server: the
            # session is gone. As mod_muc, only for conditions that say so.
            cond = stanzas.error_condition(stanza)
            if occupant is not None and (cond is None or cond in KICKABLE_ERRORS):
                self.remove_session(occupant, sender, out, statuses=("307", "333"))
            return
        if nick is not None:
            self._private_message(stanza, nick, occupant, out)
            return
        # invitations, declines, voice requests (whatever their type, as mod_muc)
        if self.service.hooks.fire("message-to-room", room=self, stanza=stanza,
                                   occupant=occupant, out=out):
            return
        if mtype != "groupchat":
            self._refuse(stanza, out, "modify", "bad-request",
                         "Messages to the room must be of type groupchat")
            return
        if occupant is None:
            self._refuse(stanza, out, *NOT_IN_ROOM)
            return
        if occupant.role == "visitor" or occupant.role == "none":
            self._refuse(stanza, out, "auth", "forbidden",
                         "You do not have voice in this room")
            return
        if self.service.hooks.fire("occupant-groupchat", room=self, occupant=occupant,
                                   stanza=stanza, out=out):
            return  # taken over by a handler (a subject change, a resubmission)
        self.broadcast_message(stanza, occupant, out)

    def broadcast_message(self, stanza: Element, occupant: Occupant, out: Outbox) -> Element:
        """Relay a groupchat message to every occupant, with a stanza-id, into history."""
        msg = stanzas.new("message", {"from": self.occupant_jid(occupant.nick),
                                      "type": "groupchat", "id": stanza.getAttribute("id")})
        for el in stanza.elements():
            if el.uri == xmlns.STANZA_ID and el.getAttribute("by") == self.jid:
                continue  # never relay a stanza-id forged in the room's name
            if el.uri in (xmlns.DELAY, xmlns.DMUC) or el.name == "error":
                continue
            msg.addChild(stanzas.copy(el))
        sid = msg.addElement((xmlns.STANZA_ID, "stanza-id"))
        sid["id"] = str(uuid.uuid4())
        sid["by"] = self.jid
        hooks = self.service.hooks
        said_at = hooks.fire("message-time", room=self, stanza=stanza, now=out.now)
        stamp = out.now if said_at is None else said_at
        # decorated by the features (occupant-id), then kept by history and the archive
        hooks.fire("message-broadcast", room=self, stanza=msg, occupant=occupant, out=out,
                   stamp=stamp)
        live = msg
        if said_at is not None:
            # Said earlier than now (a relay kept it through a netsplit): everyone sees when.
            live = stanzas.copy(msg)
            live.addChild(stanzas.delay(said_at, self.jid))
        self.broadcast_groupchat(live, out, stamp)
        return msg

    def _private_message(
        self, stanza: Element, nick: str, sender_occupant: Occupant | None, out: Outbox
    ) -> None:
        mtype = stanza.getAttribute("type") or "normal"
        if mtype == "groupchat":
            self._refuse(stanza, out, "modify", "bad-request",
                         "Private messages may not be of type groupchat")
            return
        if sender_occupant is None:
            self._refuse(stanza, out, *NOT_IN_ROOM)
            return
        target = self.occupants.get(nick)
        if target is None:
            self._refuse(stanza, out, "cancel", "item-not-found",
                         "That occupant is not in the room")
            return
        if not self._pm_allowed(sender_occupant, target):
            self._refuse(stanza, out, "cancel", "policy-violation",
                         "Private messages are restricted in this room")
            return
        msg = stanzas.new("message", {"from": self.occupant_jid(sender_occupant.nick),
                                      "type": stanza.getAttribute("type"),
                                      "id": stanza.getAttribute("id")})
        for el in stanza.elements():
            if el.uri not in (xmlns.MUC, xmlns.MUC_USER):  # never relay a forged muc#user
                msg.addChild(stanzas.copy(el))
        msg.addElement((xmlns.MUC_USER, "x"))  # as mod_muc: marks a private message
        self.service.hooks.fire("private-message", room=self, stanza=msg,
                                occupant=sender_occupant, out=out)
        out.broadcast(msg, target.session_jids())

    def _pm_allowed(self, sender: Occupant, target: Occupant) -> bool:
        if sender.bare_jid == target.bare_jid:
            return True
        allow = self.config.allow_pm
        if allow == "none":
            return False
        if allow == "affiliated":
            return self.affiliation(sender.bare_jid) not in ("none", "outcast")
        return ROLE_RANK[sender.role] >= ROLE_RANK[allow]

    def _refuse(self, stanza: Element, out: Outbox, err_type: str, condition: str,
                text: str | None = None) -> None:
        """Answer a stanza the room refuses, and log it once."""
        stanzas.refuse(out, stanza, err_type, condition, text,
                       what=f"{stanza.name} to {stanza.getAttribute('to')}")

    def subject_stanza(self, to: str) -> Element:
        from_ = self.occupant_jid(self.subject_from) if self.subject_from else self.jid
        msg = stanzas.subject_message(from_, self.subject)
        if self.subject_time:  # as mod_muc: when it was set
            msg.addChild(stanzas.delay(self.subject_time, self.jid))
        msg["to"] = to
        return msg

    # --- IQs ------------------------------------------------------------------------------

    def handle_iq(self, stanza: Element, nick: str | None, out: Outbox) -> None:
        if nick is None:
            iq_handlers.handle_room_iq(self, stanza, out)
            return
        itype = stanza.getAttribute("type")
        if itype in ("result", "error"):
            self._route_iq_answer(stanza, nick, out)
            return
        sender = stanza.getAttribute("from")
        sender_occupant = self.occupant_by_session(sender)
        target = self.occupants.get(nick)
        payload = next(stanza.elements(), None)
        decided = occupant_iq_verdict(
            stanza, sender_occupant.nick if sender_occupant is not None else None, nick,
            target is not None)
        if decided is OccupantIq.NOT_IN_ROOM or sender_occupant is None:
            # XEP-0410: a client that is not joined learns it from this error.
            self._refuse(stanza, out, *NOT_IN_ROOM)
            return
        if decided is OccupantIq.NO_RECIPIENT or target is None:
            self._refuse(stanza, out, "cancel", "item-not-found")
            return
        if decided is OccupantIq.SELF_PING:
            out.send(stanzas.iq_result(stanza))  # XEP-0410 self-ping, answered by the room
            return
        to_bare = payload is not None and payload.uri == xmlns.VCARD
        destination = target.bare_jid if to_bare else target.primary
        new_id = uuid.uuid4().hex
        self.pending_iqs[new_id] = (sender, stanza.getAttribute("id") or "", destination)
        while len(self.pending_iqs) > MAX_PENDING_IQS:
            self.pending_iqs.popitem(last=False)
        forwarded = stanzas.iq(itype, self.occupant_jid(sender_occupant.nick), destination, new_id)
        for el in stanza.elements():
            forwarded.addChild(stanzas.copy(el))
        out.send(forwarded)

    def _route_iq_answer(self, stanza: Element, nick: str, out: Outbox) -> None:
        pending = self.pending_iqs.get(stanza.getAttribute("id") or "")
        if pending is None:
            return
        requester, original_id, destination = pending
        answerer = stanza.getAttribute("from")
        if answerer != destination and jids.bare(answerer) != destination:
            return  # only the asked party may answer
        del self.pending_iqs[stanza.getAttribute("id")]
        target = self.occupant_by_session(answerer) or (
            self.occupants_of(jids.bare(answerer)) or [None]
        )[0]
        from_nick = target.nick if target is not None else nick
        answer = stanzas.iq(stanza.getAttribute("type"), self.occupant_jid(from_nick),
                            requester, original_id)
        for el in stanza.elements():
            answer.addChild(stanzas.copy(el))
        out.send(answer)

    # --- destruction ---------------------------------------------------------------------

    def destroy(
        self, out: Outbox, *, reason: str | None = None, alternate: str | None = None,
        password: str | None = None,
    ) -> None:
        """XEP-0045 §10.9: every occupant gets an unavailable presence with <destroy/>."""
        router = self.service.router
        notice: Element | None = None
        for occupant in list(self.occupants.values()):
            x = stanzas.muc_user_x([{"affiliation": "none", "role": "none"}])
            destroy_el = x.addElement("destroy")
            if alternate:
                destroy_el["jid"] = alternate
            if reason:
                destroy_el.addElement("reason", content=reason)
            if password:
                destroy_el.addElement("password", content=password)
            notice = stanzas.occupant_presence(None, self.occupant_jid(occupant.nick), x,
                                               "unavailable")
            self.service.hooks.fire("occupant-presence", room=self, occupant=occupant,
                                    stanza=notice)
            direct = [s for s in occupant.session_jids() if router.relay_of(self, s) is None]
            out.broadcast(notice, direct)
        # each relay tells its sessions (one notice each)
        self.service.hooks.fire("room-destroying", room=self, notice=notice, out=out)
        self.occupants.clear()
        self.nick_of.clear()
        self.service.remove_room(self, out)

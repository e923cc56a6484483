"""Event hooks: how room features and operators' plugins join in (cf. Prosody's module:hook).

Handlers are called with the event's data as keyword arguments and run by priority,
highest first. A handler returning something other than None stops the event and that
value is the result of ``fire`` (e.g. a refusal from an ``occupant-pre-join`` handler).

Room settings (one module each in dmuc.master.features, hooked before operators'
plugins; a plugin's handler at the default priority 0 runs after them all):

``room-config-form`` (room, fields)
    append the field specs (var, type, label, value, options) of the muc#owner
    configuration form to ``fields``; the form's order is the priority order.
``room-config-submitted`` (room, values, new)
    read your var(s) from ``values`` (var -> list of str) and set them on ``new``, the
    RoomConfig being built (a plugin's own settings go in ``new.extra``); raise or
    return a dmuc.errors.Refusal on a bad value: the first one is the answer and nothing
    is applied.
``room-config-applied`` (room, old, out)
    the new configuration is in ``room.config``: do what a change of your setting implies
    (evictions, storage), before the occupants get the status codes.
``room-disco-features`` (room, features)
    append the room's disco#info features.
``room-disco-info`` (room, fields)
    append the fields of the muc#roominfo form, in priority order.
``occupant-pre-join`` (room, stanza, nick, sender)
    return a Refusal to refuse the join; fired after the core's own rules (lock, ban,
    nickname in use or registered to another user).

Other events: ``room-pre-create`` (room, stanza, out: the join that creates the room,
before it is processed; password.py reads its password), ``room-created``,
``room-configured`` (room, old, out) and
``room-destroyed`` (room, out); ``occupant-joined`` (room, occupant, session, out),
``occupant-nick-changed`` (room, occupant, old_nick, out), ``occupant-left`` (room,
occupant, out), ``affiliation-changed`` (room, jid, affiliation, out),
``message-broadcast`` (room, stanza, occupant, out, stamp: a groupchat about to be
broadcast, when it was said; handlers at priority 0 and above decorate it, history (-1)
and mam (-2) keep it), ``invite`` (room, stanza, out: an invitation about to be relayed;
password.py adds the password), ``private-message`` (room, stanza,
occupant, out: the relayed copy, from the sender's occupant), ``occupant-presence``
(room, occupant, stanza: each presence the room builds about an occupant, any variant),
``slave-snapshot`` (room, extra: append stanzas from the room JID that a XEP-0282
snapshot carries after the subject), ``slave-archive-settings`` (room: the
xep0282.ArchiveSettings a slave keeps its copy of the archive by), ``slave-archive-fill``
(room, stanza, payload, with_senders, out: a page of the archive for a slave's copy, true
when answered), ``slave-room-mirror`` (room, settings, vcard: add to the room settings a
slave answers from, e.g. the disco#info query; the vCard when `vcard`),
``room-mirror-changed`` (room, out, vcard: what the slaves answer from changed);
``room-iq``, ``service-iq`` (stanza, payload, out; ``room-iq`` with room) and ``stanza``
(stanza, out), where a true result means the stanza was handled;
``service-disco-features`` (features);
``tick`` (now, out: every second); ``config-reloaded`` (service, out: a SIGHUP applied
new settings, ``service.settings``; a plugin re-reads its own, e.g. its
``plugin_config`` table).

The room core's own steps, where a handler may take a session or a stanza over (a true
result: the room does not do that step itself). dmuc.master.distribution (XEP-0282) hooks
them all (at priority 1000, but ``occupant-groupchat`` at 10); whether a session is
relayed is read from dmuc.master.routing.Router:

``occupant-entering`` (room, session, out)
    a session is about to enter; True: it is relayed (its relay sends it the occupant
    list and its own presence, the room does not).
``occupant-session-new`` (room, occupant, session, stanza, self_codes, out)
    the session is in and the room has broadcast it (mod_muc's muc-occupant-session-new):
    history.py (50) sends the history ``stanza``, the join, asks for, subject.py (20) the
    subject; True: it gets them from its relay instead.
``occupant-session-moved`` (room, occupant, session, self_codes, out)
    a relayed session moved into another occupant (a nick change of one session): its
    relay tells it.
``occupant-leaving`` (room, occupant, session, out, presence)
    a session is leaving; True: its relay told it (``presence``: how its own unavailable
    presence is built: statuses, base, reason, actor_nick, item_extra).
``occupant-session-gone`` (room, session, out)
    a session is no longer in the room.
``occupant-role-set`` (room, occupant)
    an occupant's sessions have its role (a join, a session moved into it, a role
    change), before the change is broadcast.
``occupant-changed`` (room, nicks, out)
    an occupant's presence is about to go out (it joined, left, changed nick, role or
    status; ``nicks``: its nick, and the one it leaves): features/direct_occupants.py
    stores what it keeps of it.
``occupant-role-broadcast`` (room, occupant, out)
    after the broadcast that followed ``occupant-role-set``.
``occupant-groupchat`` (room, occupant, stanza, out)
    a groupchat from an occupant with voice, before the room broadcasts it (mod_muc's
    muc-occupant-groupchat); True: taken over (subject.py at 20: a subject change;
    distribution at 10: a resubmission already broadcast).
``message-to-room`` (room, stanza, occupant, out)
    a message to the room JID, of any type, before the groupchat rules; True: handled
    (invites.py at 20: an invitation or decline; voice.py at 10: a voice request).
``message-time`` (room, stanza, now)
    return when a groupchat was said, if earlier than now (a message held through a
    netsplit): it is broadcast with that delay.
``message-kept`` (room, entry, sid, restored)
    a message entered the room's record (history, a moderation notice, or restored
    from storage with ``restored``).
``message-retracted`` (room, sid)
    a message was moderated away (XEP-0425).
``recent-message`` (room, sid)
    return the recent message (HistoryEntry) with that stanza-id, if one is kept.
``room-destroying`` (room, notice, out)
    the room is being destroyed; ``notice`` is the unavailable presence with <destroy/>
    its occupants got (None if it had none).
"""

from __future__ import annotations

import importlib
from collections import defaultdict
from collections.abc import Callable
from typing import Any

Handler = Callable[..., Any]


class Hooks:
    def __init__(self) -> None:
        self._handlers: dict[str, list[tuple[int, int, Handler]]] = defaultdict(list)
        self._order = 0

    def add(self, event: str, handler: Handler, priority: int = 0) -> None:
        """Higher priority runs first; equal priorities run in the order added."""
        self._order += 1
        self._handlers[event].append((-priority, self._order, handler))
        self._handlers[event].sort(key=lambda entry: entry[:2])

    def remove(self, event: str, handler: Handler) -> None:
        self._handlers[event] = [h for h in self._handlers[event] if h[2] is not handler]

    def fire(self, event: str, **data: Any) -> Any:
        for _, _, handler in list(self._handlers.get(event, ())):
            result = handler(**data)
            if result is not None:
                return result
        return None


def load_plugins(names: list[str], hooks: Hooks, service: Any) -> None:
    """Import each plugin module and call its ``setup(hooks, service)``."""
    for name in names:
        module = importlib.import_module(name)
        setup = getattr(module, "setup", None)
        if not callable(setup):
            raise ImportError(f"plugin {name!r} has no setup(hooks, service) function")
        setup(hooks, service)

"""Room state: configuration, affiliations, occupants, history. Plain data."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

from twisted.words.xish.domish import Element

from dmuc.protocol import stanzas

ROLES = ("none", "visitor", "participant", "moderator")
AFFILIATIONS = ("outcast", "none", "member", "admin", "owner")
ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}
AFFILIATION_RANK = {"outcast": -1, "none": 0, "member": 1, "admin": 2, "owner": 3}

WHOIS_VALUES = ("moderators", "anyone")
# Who may send private messages (the values of Prosody's allowpm room setting).
ALLOW_PM_VALUES = ("visitor", "participant", "moderator", "affiliated", "none")
BROADCAST_ROLES = ("moderator", "participant", "visitor")


@dataclass
class RoomConfig:
    """muc#roomconfig, with Prosody mod_muc's defaults. Each setting is read from and
    written to the form by its own module in dmuc.master.features; `extra` holds the
    settings of operators' plugins (key -> JSON value), stored with the room."""

    name: str = ""
    description: str = ""
    language: str = ""
    persistent: bool = False
    public: bool = True
    members_only: bool = False
    moderated: bool = False
    password: str = ""
    whois: str = "moderators"
    max_users: int = 0  # 0: no limit
    history_length: int = 20
    # what a join asking for no history limit gets (mod_muc's default_history_messages)
    default_history_messages: int = 20
    allow_pm: str = "visitor"
    change_subject: bool = False
    presence_broadcast: list[str] = field(default_factory=lambda: list(BROADCAST_ROLES))
    allow_member_invites: bool = False
    logging: bool = False
    archiving: bool = True  # the room's XEP-0313 archive (mod_muc_mam's muc_log_by_default)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoomConfig:
        """Unknown keys are ignored; values are copied (two rooms never share a list)."""
        known = {k: copy.deepcopy(v) for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(slots=True)  # one per occupant: no per-instance __dict__
class Occupant:
    nick: str
    bare_jid: str
    role: str
    # full JID of each of the user's sessions in the room -> that session's last presence
    # as the room keeps it (Room.stored_presence), serialised: a string costs a tenth of
    # the tree per occupant, and is parsed only when a variant of it is built
    sessions: dict[str, str] = field(default_factory=dict)
    # the session whose presence the room shows (the most recent one)
    primary: str = ""
    # with_jid -> its listed presence serialised (Room.listed_presence's cache)
    listed: dict[bool, str] = field(default_factory=dict, repr=False)
    # its XEP-0421 occupant-id, computed once (features/occupant_id.py)
    occupant_id: str = field(default="", repr=False)

    @property
    def presence(self) -> Element | None:
        """The primary session's kept presence, parsed (a new tree each time)."""
        xml = self.sessions.get(self.primary)
        return None if xml is None else stanzas.parse_stanza(xml)

    def session_jids(self) -> list[str]:
        return list(self.sessions)


@dataclass(frozen=True)
class PresenceChange:
    """A change of an occupant's presence, as the room broadcasts it (Room.publicise):
    what the presence says, and what the room knows of the change."""

    type: str | None = None  # "unavailable": it (or one of its sessions) leaves
    statuses: tuple[str, ...] = ()  # status codes everyone gets
    self_statuses: tuple[str, ...] = ()  # status codes only its own sessions get
    item_extra: dict[str, str | None] | None = None  # e.g. the new nick of a 303
    reason: str | None = None
    actor_nick: str | None = None
    actor_jid: str | None = None  # the actor's real JID: only to those who see real JIDs
    base: Element | None = None  # the presence repeated (default: the occupant's own)
    from_nick: str | None = None  # the nick it comes from (default: the occupant's)
    prev_role: str | None = None  # its role before (None: the role did not change)
    hide: bool = False  # its role is no longer broadcast (the setting changed)


NO_CHANGE = PresenceChange()  # its presence again (a status update, a new primary session)

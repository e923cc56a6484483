"""What the sans-I/O core asks the shell to do: stanzas to write, records to store."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.words.xish.domish import Element

from dmuc.protocol import stanzas
from dmuc.records import ArchivePage, ArchiveQuery, ArchiveRecord, HistoryRecord, OccupantRecord

# Every log line stays one line, whatever a sender put in the names it quotes.
_ONE_LINE = {c: " " for c in [*range(0x20), 0x7F, 0x85, 0x2028, 0x2029]}


class Delivery:
    """A stanza to send: with its own 'to' (recipients None), or one copy per recipient.
    A copy may be given only serialised (`xml`, without 'to'), as a slave keeps its
    roster: the tree is then parsed only if something asks for `stanza` (a test, or the
    master's own inspection); the shell writes it from `xml` and `name`."""

    __slots__ = ("_stanza", "host", "name", "recipients", "xml")

    def __init__(self, stanza: Element | None, recipients: Sequence[str] | None = None,
                 xml: str | None = None, host: str | None = None) -> None:
        if stanza is None and xml is None:
            raise ValueError("a delivery needs its stanza or its serialisation")
        self._stanza = stanza
        # None: the stanza carries its own 'to'; otherwise one copy per recipient
        self.recipients = recipients
        # the stanza already serialised without 'to' (a cache the core keeps), if any
        self.xml = xml
        # set by a slave: the recipients are sessions of this host, whose Prosody
        # (mod_dmuc_slave) fans one copy out itself; the shell writes that one copy
        self.host = host
        self.name: str = stanza.name if stanza is not None else stanzas.element_name(xml or "")

    @property
    def stanza(self) -> Element:
        if self._stanza is None:
            self._stanza = stanzas.parse_xml(self.xml or "")
        return self._stanza

    def to(self, recipients: Sequence[str], host: str | None) -> Delivery:
        """The same stanza for other recipients (its tree parsed only if it was)."""
        copy = Delivery(self._stanza, recipients, self.xml, host)
        copy.name = self.name
        return copy

    def __repr__(self) -> str:
        return f"Delivery({self.name}, {self.recipients!r}, host={self.host!r})"


@dataclass
class SaveRoom:
    """Store a room's state. `snapshot` is called when the write happens, so the shell may
    coalesce several saves of one room into one write (the slave's roster changes often)."""

    room_jid: str
    snapshot: Callable[[], dict[str, Any]]
    # the room's entries stored as rows beside its state (a slave's mirrored roster and
    # sessions), in the same transaction: called when the write happens, it returns those
    # changed since its last call (rows to store, (room, key) of rows to delete)
    entries: Callable[[], list[OccupantRecord | tuple[str, str]]] | None = None
    # told the rows of a write that failed: they are written with the room's next save
    unwritten: Callable[[list[OccupantRecord | tuple[str, str]]], None] | None = None

    @property
    def state(self) -> dict[str, Any]:
        return self.snapshot()


@dataclass
class DeleteRoom:
    """Forget a room and its history (kept under `history_key`; None: the room JID)."""

    room_jid: str
    history_key: str | None = None


@dataclass
class SaveOccupant:
    """Store (or forget) one occupant the master reaches directly. `snapshot` is called
    when the write happens (the shell coalesces an occupant's changes into one write);
    it returns None when there is nothing to keep (the occupant left, or is reached
    through a slave now): the row is deleted."""

    room_jid: str
    nick: str
    snapshot: Callable[[], dict[str, Any] | None]


@dataclass
class ForgetOccupants:
    """Forget every stored occupant of a room (it was destroyed), or every entry row of a
    slave's mirrored room (it is forgotten)."""

    room_jid: str


@dataclass
class AppendHistory:
    """Append to the history kept under `key` (the room JID, or a slave's history key)."""

    key: str
    record: HistoryRecord
    keep: int


@dataclass
class ClearHistory:
    key: str


@dataclass
class AppendArchive:
    """Add a message to a room's archive (XEP-0313)."""

    room_jid: str
    record: ArchiveRecord


@dataclass
class RetractArchived:
    """Replace an archived message with its XEP-0425 tombstone."""

    room_jid: str
    sid: str
    tombstone_xml: str


@dataclass
class ExpireArchive:
    """Delete archived messages said before `older_than` (the retention timer): of every
    room, or of the one archive `room_jid` (a slave's copy, trimmed by its room's
    retention)."""

    older_than: float
    room_jid: str | None = None


@dataclass
class DeleteArchive:
    room_jid: str


@dataclass
class QueryArchive:
    """Read a page of a room's archive, then answer: the shell runs the query and calls
    `answer(page, out)` with the page (or the storage's exception) and a fresh Outbox,
    which it then writes like any other. The core stays free of I/O and the reactor
    never waits for the database."""

    room_jid: str
    query: ArchiveQuery
    answer: Callable[[ArchivePage | Exception, Outbox], None]


@dataclass
class RecordStatus:
    """Record how the service stands, for dmuc-admin list-slaves: a slave's link state, or
    the daemon's heartbeat, under `key` (beside the rooms: dmuc.records.status_service)."""

    key: str
    state: dict[str, Any]


StorageOp = (SaveRoom | DeleteRoom | SaveOccupant | ForgetOccupants | AppendHistory
             | ClearHistory | AppendArchive | RetractArchived | ExpireArchive | DeleteArchive
             | QueryArchive | RecordStatus)


@dataclass
class Outbox:
    now: float
    deliveries: list[Delivery] = field(default_factory=list)
    storage: list[StorageOp] = field(default_factory=list)
    log: list[tuple[str, str]] = field(default_factory=list)  # (level, message)

    def send(self, stanza: Element) -> None:
        self.deliveries.append(Delivery(stanza))

    def broadcast(self, stanza: Element | None, recipients: Sequence[str],
                  xml: str | None = None) -> None:
        """One copy per recipient; `stanza` may be None when `xml` (its serialisation
        without 'to') is given."""
        if recipients:
            self.deliveries.append(Delivery(stanza, list(recipients), xml))

    def store(self, op: StorageOp) -> None:
        self.storage.append(op)

    def info(self, message: str) -> None:
        self.log.append(("info", message.translate(_ONE_LINE)))

    def warn(self, message: str) -> None:
        self.log.append(("warn", message.translate(_ONE_LINE)))

    def debug(self, message: str) -> None:
        self.log.append(("debug", message.translate(_ONE_LINE)))

    def stanzas_for(self, jid: str) -> list[Element]:
        """Every stanza addressed to `jid`, in order (for tests and the slave)."""
        found = []
        for d in self.deliveries:
            if d.recipients is None:
                if d.stanza.getAttribute("to") == jid:
                    found.append(d.stanza)
            elif jid in d.recipients:
                found.append(d.stanza)
        return found

"""What the sans-I/O core asks the shell to do: stanzas to write, records to store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from twisted.words.xish.domish import Element

from dmuc.storage import HistoryRecord


@dataclass
class Delivery:
    stanza: Element
    # None: the stanza carries its own 'to'; otherwise one copy per recipient
    recipients: Sequence[str] | None = None
    # the stanza already serialised without 'to' (a cache the core keeps), if any
    xml: str | None = None


@dataclass
class SaveRoom:
    room_jid: str
    state: dict


@dataclass
class DeleteRoom:
    room_jid: str


@dataclass
class AppendHistory:
    room_jid: str
    record: HistoryRecord
    keep: int


@dataclass
class ClearHistory:
    room_jid: str


@dataclass
class SaveSlaveRoom:
    room_jid: str


@dataclass
class DeleteSlaveRoom:
    room_jid: str


@dataclass
class ClearSlaveHistory:
    room_jid: str


@dataclass
class AppendSlaveHistory:
    room_jid: str
    record: HistoryRecord
    keep: int


StorageOp = (SaveRoom | DeleteRoom | AppendHistory | ClearHistory | SaveSlaveRoom
             | DeleteSlaveRoom | AppendSlaveHistory | ClearSlaveHistory)


@dataclass
class Outbox:
    now: float
    deliveries: list[Delivery] = field(default_factory=list)
    storage: list[StorageOp] = field(default_factory=list)
    log: list[tuple[str, str]] = field(default_factory=list)  # (level, message)

    def send(self, stanza: Element) -> None:
        self.deliveries.append(Delivery(stanza))

    def broadcast(self, stanza: Element, recipients: Sequence[str],
                  xml: str | None = None) -> None:
        if recipients:
            self.deliveries.append(Delivery(stanza, list(recipients), xml))

    def store(self, op: StorageOp) -> None:
        self.storage.append(op)

    def info(self, message: str) -> None:
        self.log.append(("info", message))

    def warn(self, message: str) -> None:
        self.log.append(("warn", message))

    def store_slave_history(self, room_jid: str, stamp: float, xml: str, keep: int) -> None:
        self.store(AppendSlaveHistory(room_jid, HistoryRecord(stamp, xml), keep))

    def store_slave_delete(self, room_jid: str) -> None:
        self.store(DeleteSlaveRoom(room_jid))

    def debug(self, message: str) -> None:
        self.log.append(("debug", message))

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

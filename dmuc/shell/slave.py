"""``twistd dmuc-slave --config FILE``: the XEP-0282 slave as a Prosody component."""

from __future__ import annotations

from twisted.application import service
from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred
from twisted.python import usage

from dmuc.config import SlaveConfig, load_slave_config
from dmuc.log import get_logger, set_level
from dmuc.outbox import (
    AppendSlaveHistory,
    ClearSlaveHistory,
    DeleteSlaveRoom,
    Outbox,
    SaveSlaveRoom,
)
from dmuc.shell.daemon import CoreHandler, Daemon, config_options
from dmuc.slave.core import SlaveRoom, SlaveService, SlaveSettings
from dmuc.storage import HistoryRecord, RoomRecord, Storage, open_storage, slave_history_key

log = get_logger("dmuc.slave")

SAVE_DELAY = 0.2  # room state writes are coalesced over this long


Options = config_options("dmuc-slave", load_slave_config)


class SlaveHandler(CoreHandler):
    """The slave's shell: connect hook, keepalive ticks, coalesced room-state writes."""

    def __init__(self, slave: SlaveService, storage: Storage) -> None:
        super().__init__(slave.receive, storage, slave.jid, on_connect=slave.connected)
        self.slave = slave
        self._dirty: set[str] = set()
        self._save_call = None

    def write(self, out: Outbox) -> None:
        super().write(out)
        # Every stanza may change a room: save the rooms it touched (coalesced).
        self._dirty.update(self.slave.take_touched())
        if self._dirty and self._save_call is None:
            self._save_call = reactor.callLater(SAVE_DELAY, self._save)

    def _save(self) -> None:
        self._save_call = None
        dirty, self._dirty = self._dirty, set()
        for room_jid in sorted(dirty):
            room = self.slave.rooms.get(room_jid)
            if room is not None:
                self.persist(SaveSlaveRoom(room_jid))

    def persist_other(self, op: object) -> Deferred:
        s, me = self.storage, self.slave.jid
        if isinstance(op, SaveSlaveRoom):
            room = self.slave.rooms.get(op.room_jid)
            if room is None:
                return defer.succeed(None)
            return s.save_room(me, RoomRecord(op.room_jid, room.to_state()))
        if isinstance(op, DeleteSlaveRoom):
            self._dirty.discard(op.room_jid)
            d = s.delete_room(me, op.room_jid)
            d.addCallback(lambda _: s.clear_history(slave_history_key(me, op.room_jid)))
            return d
        if isinstance(op, AppendSlaveHistory):
            return s.append_history(slave_history_key(me, op.room_jid), op.record, op.keep)
        if isinstance(op, ClearSlaveHistory):
            return s.clear_history(slave_history_key(me, op.room_jid))
        raise TypeError(op)

    def flush(self) -> Deferred:
        if self._save_call is not None and self._save_call.active():
            self._save_call.cancel()
        self._save_call = None
        dirty, self._dirty = self._dirty, set()
        ds = []
        for room_jid in sorted(dirty):
            room = self.slave.rooms.get(room_jid)
            if room is not None:
                ds.append(self.storage.save_room(self.slave.jid,
                                                 RoomRecord(room_jid, room.to_state())))
        return defer.gatherResults(ds, consumeErrors=True)


class SlaveDaemon(Daemon):
    """The slave: restores its mirrored rooms, then registers them again once connected."""

    def __init__(self, cfg: SlaveConfig) -> None:
        self.slave = SlaveService(SlaveSettings(
            jid=cfg.component.jid, domains=frozenset(cfg.domains),
            masters=frozenset(cfg.masters), keepalive=cfg.keepalive, history=cfg.history,
            rooms=tuple(cfg.rooms)))
        storage = open_storage(cfg.storage_url)
        super().__init__("dmuc-slave", cfg, storage, SlaveHandler(self.slave, storage),
                         self.slave.tick)

    @defer.inlineCallbacks
    def restore(self):  # type: ignore[no-untyped-def]
        records = yield self.storage.load_rooms(self.slave.jid)
        for record in records:
            room = SlaveRoom.from_state(record.jid, record.state)
            history: list[HistoryRecord] = yield self.storage.load_history(
                slave_history_key(self.slave.jid, record.jid), room.history_length)
            self.slave.restore(room, history)
        return f"restored {len(records)} mirrored rooms"


def makeService(options: usage.Options) -> service.IService:
    cfg: SlaveConfig = options["parsed"]
    set_level(cfg.log_level)
    return SlaveDaemon(cfg)

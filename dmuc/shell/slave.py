"""``twistd dmuc-slave --config FILE``: the XEP-0282 slave as a Prosody component."""

from __future__ import annotations

from twisted.application import service
from twisted.internet import defer
from twisted.python import usage

from dmuc.config import SlaveConfig, load_slave_config
from dmuc.log import get_logger, set_level
from dmuc.shell.daemon import CoreHandler, Daemon, config_options
from dmuc.slave.room import SlaveRoom
from dmuc.slave.service import SlaveService, SlaveSettings
from dmuc.storage import HistoryRecord, open_storage, slave_history_key

log = get_logger("dmuc.slave")

SAVE_DELAY = 0.2  # room state writes are coalesced over this long


Options = config_options("dmuc-slave", load_slave_config)


class SlaveDaemon(Daemon):
    """The slave: restores its mirrored rooms, then registers them again once connected."""

    def __init__(self, cfg: SlaveConfig) -> None:
        self.slave = SlaveService(SlaveSettings(
            jid=cfg.component.jid, domains=frozenset(cfg.domains),
            masters=frozenset(cfg.masters), keepalive=cfg.keepalive, history=cfg.history,
            rooms=tuple(cfg.rooms)))
        storage = open_storage(cfg.storage_url)
        handler = CoreHandler(self.slave.receive, storage, self.slave.jid,
                              on_connect=self.slave.connected, save_delay=SAVE_DELAY)
        super().__init__("dmuc-slave", cfg, storage, handler, self.slave.tick)

    @defer.inlineCallbacks
    def restore(self):  # type: ignore[no-untyped-def]
        records = yield self.storage.load_rooms(self.slave.jid)
        for record in records:
            room = SlaveRoom.from_state(record.jid, record.state)
            history: list[HistoryRecord] = yield self.storage.load_history(
                slave_history_key(self.slave.jid, record.jid), room.history_length)
            self.slave.restore(room, history, record.state)
        return f"restored {len(records)} mirrored rooms"


def makeService(options: usage.Options) -> service.IService:
    cfg: SlaveConfig = options["parsed"]
    set_level(cfg.log_level)
    return SlaveDaemon(cfg)

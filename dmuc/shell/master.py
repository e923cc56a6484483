"""``twistd dmuc-master --config FILE``: options and service construction."""

from __future__ import annotations

from twisted.application import service
from twisted.internet import defer
from twisted.python import usage

from dmuc.config import MasterConfig, load_master_config
from dmuc.hooks import Hooks, load_plugins
from dmuc.log import set_level
from dmuc.master.service import MUCService
from dmuc.shell.daemon import CoreHandler, Daemon, config_options
from dmuc.storage import open_storage

Options = config_options("dmuc-master", load_master_config)


def build_service(cfg: MasterConfig) -> MUCService:
    hooks = Hooks()
    muc = MUCService(cfg.muc, hooks)
    load_plugins(cfg.plugins, hooks, muc)
    return muc


class MasterService(Daemon):
    """The master: restores persistent rooms, then serves them."""

    def __init__(self, cfg: MasterConfig) -> None:
        storage = open_storage(cfg.storage_url)
        self.muc = build_service(cfg)
        handler = CoreHandler(self.muc.receive, storage, cfg.component.jid,
                              on_connect=self.muc.connected)
        super().__init__("dmuc-master", cfg, storage, handler, self.muc.tick)

    @defer.inlineCallbacks
    def restore(self):  # type: ignore[no-untyped-def]
        records = yield self.storage.load_rooms(self.cfg.component.jid)
        for record in records:
            keep = int(record.state.get("config", {}).get("history_length", 20))
            history = yield self.storage.load_history(record.jid, keep)
            self.muc.restore_room(record, history)
        return f"restored {len(records)} persistent rooms"


def makeService(options: usage.Options) -> service.IService:
    cfg: MasterConfig = options["parsed"]
    set_level(cfg.log_level)
    return MasterService(cfg)

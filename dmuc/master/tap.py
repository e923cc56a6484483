"""``twistd dmuc-master --config FILE``: options and service construction."""

from __future__ import annotations

import sys
import time

from twisted.application import service
from twisted.internet import defer, task
from twisted.python import usage

from dmuc import compat  # noqa: F401  (must precede every wokkel import)
from dmuc.config import ConfigError, MasterConfig, load_master_config
from dmuc.hooks import Hooks, load_plugins
from dmuc.log import get_logger, set_level
from dmuc.service import MUCService, ServiceSettings
from dmuc.shell import ComponentConnection, CoreHandler, fatal
from dmuc.storage import Storage, open_storage

log = get_logger("dmuc.master")


class Options(usage.Options):
    synopsis = "--config FILE"
    optParameters = [["config", "c", "/etc/dmuc/dmuc-master.toml", "TOML configuration file"]]

    def postOptions(self) -> None:
        try:
            self["parsed"] = load_master_config(self["config"])
        except ConfigError as exc:
            # One line for the operator, no traceback, non-zero exit.
            print(f"dmuc-master: configuration error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None


def build_service(cfg: MasterConfig) -> MUCService:
    hooks = Hooks()
    settings = ServiceSettings(
        jid=cfg.component.jid,
        admins=frozenset(cfg.admins),
        create_rooms=cfg.create_rooms,
        room_locking=cfg.room_locking,
        max_history_length=cfg.max_history_length,
        enforce_reserved_nicks=cfg.enforce_reserved_nicks,
        allow_unaffiliated_register=cfg.allow_unaffiliated_register,
        room_defaults=cfg.room_defaults,
        slaves={jid: frozenset(domains) for jid, domains in cfg.slaves.items()},
    )
    muc = MUCService(settings, hooks)
    load_plugins(cfg.plugins, hooks, muc)
    return muc


class MasterService(service.Service):
    """Opens storage, restores persistent rooms, then connects to Prosody."""

    def __init__(self, cfg: MasterConfig) -> None:
        self.cfg = cfg
        self.storage: Storage = open_storage(cfg.storage_url)
        self.muc = build_service(cfg)
        c = cfg.component
        self.connection = ComponentConnection(c.host, c.port, c.jid, c.secret)
        self.handler = CoreHandler(self.muc.receive, self.storage, c.jid)
        self.handler.setHandlerParent(self.connection)

    @defer.inlineCallbacks
    def _start(self):  # type: ignore[no-untyped-def]
        try:
            yield self.storage.open()
            records = yield self.storage.load_rooms(self.cfg.component.jid)
            for record in records:
                keep = int(record.state.get("config", {}).get("history_length", 20))
                history = yield self.storage.load_history(record.jid, keep)
                self.muc.restore_room(record, history)
        except Exception as exc:  # noqa: BLE001 - reported to the operator and fatal
            fatal(f"dmuc-master: storage {self.cfg.storage_url}: {exc}")
            return
        log.info("restored {n} persistent rooms from {url}", n=len(records),
                 url=self.cfg.storage_url)
        self.connection.startService()

    def _tick(self) -> None:
        self.handler.write(self.muc.tick(time.time()))

    def startService(self) -> None:
        super().startService()
        self._starting = self._start()
        self._ticker = task.LoopingCall(self._tick)
        self._ticker.start(1.0, now=False)

    @defer.inlineCallbacks
    def stopService(self):  # type: ignore[no-untyped-def]
        super().stopService()
        ticker = getattr(self, "_ticker", None)
        if ticker is not None and ticker.running:
            ticker.stop()
        if self.connection.running:
            self.connection.stopService()
        yield self.storage.close()


def makeService(options: Options) -> service.IService:
    cfg: MasterConfig = options["parsed"]
    set_level(cfg.log_level)
    return MasterService(cfg)

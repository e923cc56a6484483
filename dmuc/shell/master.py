"""``twistd dmuc-master --config FILE``: options and service construction."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterable, Mapping

from prometheus_client.core import Metric
from twisted.application import service
from twisted.internet import defer, task
from twisted.python import usage

from dmuc.config import MasterConfig, load_master_config
from dmuc.hooks import Hooks, load_plugins
from dmuc.log import set_level
from dmuc.master.distribution import RegistrationState
from dmuc.master.service import MUCService
from dmuc.master.status import DAEMON_KEY, SlaveStatus
from dmuc.outbox import RecordStatus
from dmuc.shell import metrics
from dmuc.shell.daemon import CoreHandler, Daemon, config_options
from dmuc.storage import open_storage

Options = config_options("dmuc-master", load_master_config)


def build_service(cfg: MasterConfig) -> MUCService:
    hooks = Hooks()
    muc = MUCService(cfg.muc, hooks)
    load_plugins(cfg.plugins, hooks, muc)
    return muc


def slave_turns(slaves: Mapping[str, frozenset[str]]) -> dict[str, str]:
    """Each allowed slave's stanzas and its users' (which it forwards) in one queue, in
    the order they came: a user's ENTER is handled before that user's messages."""
    turns: dict[str, str] = {}
    for slave, domains in slaves.items():
        turns[slave.lower()] = slave.lower()
        for domain in domains:
            turns[domain.lower()] = slave.lower()
    return turns


class MasterService(Daemon):
    """The master: restores persistent rooms, then serves them."""

    def __init__(self, cfg: MasterConfig) -> None:
        storage = open_storage(cfg.storage_url)
        self.muc = build_service(cfg)
        handler = CoreHandler(self.muc.receive, storage, cfg.component.jid,
                              on_connect=self.muc.connected)
        super().__init__("dmuc-master", cfg, storage, handler, self.muc.tick)
        handler.one_turn = slave_turns(cfg.muc.slaves)
        self.slave_status = SlaveStatus(self.muc.distribution)
        self.started = time.time()
        self._status_call = task.LoopingCall(self.record_status)

    # The slaves' link states and a heartbeat, for dmuc-admin list-slaves: written every
    # STATUS_SECONDS when changed (the heartbeat always), never on the stanza path.
    STATUS_SECONDS = 5.0

    def record_status(self, stopped: bool = False) -> None:
        now = time.time()
        records = dict(self.slave_status.changes(now))
        records[DAEMON_KEY] = {"pid": os.getpid(), "started": self.started, "updated": now,
                               "rooms": len(self.muc.rooms), **({"stopped": now} if stopped
                                                                else {})}
        for key, state in records.items():
            self.handler.persist(RecordStatus(key, state))

    def startService(self) -> None:
        super().startService()
        self._starting.addCallback(self._start_recording)

    def _start_recording(self, _: object) -> None:
        """The first record once the store is open and the rooms restored (a store that
        failed to open stops the daemon instead: nothing to record then)."""
        if self.connection.running:
            self._status_call.start(self.STATUS_SECONDS)

    def stopService(self):  # type: ignore[no-untyped-def]
        if self._status_call.running:
            self._status_call.stop()
            self.record_status(stopped=True)  # queued before the store closes
        return super().stopService()

    @defer.inlineCallbacks
    def restore(self):  # type: ignore[no-untyped-def]
        records = yield self.storage.load_rooms(self.cfg.component.jid)
        for record in records:
            keep = int(record.state.get("config", {}).get("history_length", 20))
            history = yield self.storage.load_history(record.jid, keep)
            self.muc.restore_room(record, history)
        occupants = yield self.storage.load_occupants(self.cfg.component.jid)
        self.handler.write(self.muc.restore_occupants(occupants, time.time()))
        persistent = sum(room.config.persistent for room in self.muc.rooms.values())
        return f"restored {persistent} persistent rooms"

    def load_config(self, path: str) -> MasterConfig:
        return load_master_config(path)

    def apply_config(self, new: MasterConfig) -> MasterConfig:
        """[muc] (room defaults for rooms created from now on) and the [[slaves]] allow
        list; the JID, rate limits and plugins were set up at start and stay."""
        old: MasterConfig = self.cfg
        settings = dataclasses.replace(new.muc, jid=old.muc.jid, limits=old.muc.limits)
        self.handler.write(self.muc.reconfigure(settings, time.time()))
        self.handler.one_turn = slave_turns(settings.slaves)
        return dataclasses.replace(new, muc=settings, plugins=old.plugins)

    def summary(self) -> str:
        links = self.muc.distribution.links_by_state()
        linked = {slave for (slave, state) in links if state is RegistrationState.LIVE}
        rooms = len(self.muc.rooms)
        return (f"{rooms} room{'' if rooms == 1 else 's'}, {len(linked)} of "
                f"{len(self.muc.distribution.allowed)} slaves linked")

    def core_metrics(self) -> Iterable[Metric]:
        """Read from the core at scrape time: O(rooms + links), nothing per stanza."""
        rooms = self.muc.rooms
        distribution = self.muc.distribution
        yield metrics.gauge("dmuc_rooms", "Rooms of this service", len(rooms))
        yield metrics.gauge("dmuc_occupants", "Occupants (nicknames) in all rooms",
                            sum(len(room.occupants) for room in rooms.values()))
        direct, via = distribution.sessions_by_route()
        yield metrics.labelled_gauge(
            "dmuc_master_sessions",
            "Occupant sessions by route: reached directly, or through a slave (its JID)",
            ["route"], [(["direct"], direct), *(([slave], n) for slave, n in sorted(via.items()))])
        links = distribution.links_by_state()
        slaves = sorted(set(distribution.allowed) | {slave for slave, _ in links})
        yield metrics.labelled_gauge(
            "dmuc_master_slave_links", "Rooms each slave is registered for, by link state",
            ["slave", "state"],
            [([slave, state.name], links.get((slave, state), 0))
             for slave in slaves for state in RegistrationState])
        yield metrics.gauge("dmuc_master_allowed_slaves", "Slaves in the [[slaves]] allow list",
                            len(distribution.allowed))
        yield from metrics.split_counts(distribution.splits)


def makeService(options: usage.Options) -> service.IService:
    cfg: MasterConfig = options["parsed"]
    set_level(cfg.log_level)
    return MasterService(cfg)

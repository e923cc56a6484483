"""``twistd dmuc-slave --config FILE``: the XEP-0282 slave as a Prosody component."""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Iterable

from prometheus_client.core import Metric
from twisted.application import service
from twisted.internet import defer
from twisted.python import usage

from dmuc.config import SlaveConfig, load_slave_config
from dmuc.log import get_logger, set_level
from dmuc.records import HistoryRecord, slave_history_key
from dmuc.shell import metrics
from dmuc.shell.daemon import CoreHandler, Daemon, config_options
from dmuc.slave.link import LinkState
from dmuc.slave.room import SlaveRoom
from dmuc.slave.service import SlaveService, SlaveSettings
from dmuc.storage import open_storage

log = get_logger("dmuc.slave")

SAVE_DELAY = 0.2  # room state writes are coalesced over this long
PER_ROOM_SERIES = 200  # rooms with a series of their own in a scrape, at most


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
        handler.more_work = self.slave.work  # held stanzas go out a slice a turn
        super().__init__("dmuc-slave", cfg, storage, handler, self.slave.tick)
        # a master's service JID and its rooms in one queue, in the order they came
        handler.one_turn = {m.lower(): m.lower() for m in cfg.masters}

    @defer.inlineCallbacks
    def restore(self):  # type: ignore[no-untyped-def]
        records = yield self.storage.load_rooms(self.slave.jid)
        entries: dict[str, dict[str, dict]] = {}  # room -> row key -> row
        for row in (yield self.storage.load_occupants(self.slave.jid)):
            entries.setdefault(row.room_jid, {})[row.nick] = row.state
        for record in records:
            room = SlaveRoom.from_state(record.jid, record.state, entries.get(record.jid))
            history: list[HistoryRecord] = yield self.storage.load_history(
                slave_history_key(self.slave.jid, record.jid), room.history_length)
            self.slave.restore(room, history, record.state)
        return f"restored {len(records)} mirrored rooms"

    def load_config(self, path: str) -> SlaveConfig:
        return load_slave_config(path)

    def apply_config(self, new: SlaveConfig) -> SlaveConfig:
        """The keepalive and history proposed from now on; the domains, masters and rooms
        (Prosody's mirror list, registrations at start) wait for a restart."""
        old: SlaveConfig = self.cfg
        self.slave.reconfigure(new.keepalive, new.history)
        return dataclasses.replace(new, domains=old.domains, masters=old.masters,
                                   rooms=old.rooms)

    def summary(self) -> str:
        live = sum(link.state is LinkState.LIVE for link in self.slave.links.values())
        local = sum(len(room.local) for room in self.slave.rooms.values())
        rooms = len(self.slave.rooms)
        return (f"mirroring {rooms} room{'' if rooms == 1 else 's'} ({live} live) for {local} "
                f"local session{'' if local == 1 else 's'}")

    def reload_summary(self) -> str:
        cfg: SlaveConfig = self.cfg
        return f"keepalive {cfg.keepalive} s, history {cfg.history} (new registrations)"

    def core_metrics(self) -> Iterable[Metric]:
        """Read from the core at scrape time, in one pass over the rooms."""
        rooms, links = self.slave.rooms, self.slave.links
        counts = {state: 0 for state in LinkState}
        occupants = sessions = held = 0
        troubled: list[tuple[int, str]] = []  # (held, room) of rooms whose link is not LIVE
        for jid, room in rooms.items():
            link = links.get(jid)
            state = link.state if link is not None else LinkState.UNREGISTERED
            counts[state] += 1
            sessions += len(room.local)
            occupants += len(room.local.keys_of)
            held += len(room.queue)
            if state is not LinkState.LIVE or room.queue:
                troubled.append((len(room.queue), jid))
        yield metrics.gauge("dmuc_rooms", "Rooms mirrored", len(rooms))
        yield metrics.gauge("dmuc_occupants", "Local occupants (nicknames) in mirrored rooms",
                            occupants)
        yield metrics.gauge("dmuc_slave_local_sessions",
                            "Local user sessions in mirrored rooms", sessions)
        yield metrics.labelled_gauge("dmuc_slave_links", "Mirrored rooms by link state",
                                     ["state"], [([s.name], n) for s, n in counts.items()])
        yield metrics.gauge("dmuc_slave_held_stanzas_all",
                            "Local stanzas held for the master, in all rooms", held)
        # Per room only where something is wrong (a link not LIVE, stanzas held), and at
        # most PER_ROOM_SERIES rooms, those holding the most first: a scrape must stay
        # cheap (it runs in the reactor) when thousands of rooms are split at once.
        worst = heapq.nlargest(PER_ROOM_SERIES, troubled)
        yield metrics.labelled_gauge(
            "dmuc_slave_link_state",
            "1 for the link state of each room whose link to its master is not LIVE",
            ["room", "state"],
            [([jid, links[jid].state.name if jid in links else "UNREGISTERED"], 1)
             for _, jid in worst])
        yield metrics.labelled_gauge(
            "dmuc_slave_held_stanzas",
            "Local stanzas held for the master, per room whose link is not LIVE",
            ["room"], [([jid], n) for n, jid in worst])
        yield from metrics.split_counts(self.slave.splits)


def makeService(options: usage.Options) -> service.IService:
    cfg: SlaveConfig = options["parsed"]
    set_level(cfg.log_level)
    return SlaveDaemon(cfg)

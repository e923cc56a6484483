"""dmuc-admin: import rooms from Prosody's mod_muc and inspect the master's store.

Every command works on the master's store through the storage adapter of its URL (the
same asynchronous interface the daemon uses), driven by Twisted's `react`: it opens the
store (creating or migrating the schema, as the daemon would), does its work, closes it.
The store is read from the master's configuration (`--config`, default
/etc/dmuc/dmuc-master.toml: storage.url and component.jid), or given with `--storage`
and `--service`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from twisted.internet import defer, task
from twisted.internet.defer import Deferred

from dmuc.admin import prosody_import
from dmuc.admin.errors import AdminError
from dmuc.config import ConfigError, load_master_config
from dmuc.errors import StorageError
from dmuc.master.status import DAEMON_KEY, UNREGISTERED
from dmuc.records import RoomRecord, status_service
from dmuc.storage import Storage, StoreAbsent, open_storage

DEFAULT_CONFIG = "/etc/dmuc/dmuc-master.toml"
PROG = "dmuc-admin"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Administer a dmuc master: import rooms from Prosody's mod_muc, list "
                    "and show the stored rooms, show the slaves' link states.")
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG, metavar="FILE",
                        help="the master's TOML configuration (storage.url, component.jid, "
                             "[[slaves]]); default %(default)s")
    parser.add_argument("--storage", metavar="URL",
                        help="the store's URL instead of the configuration's storage.url")
    parser.add_argument("--service", metavar="JID",
                        help="the MUC service JID instead of the configuration's "
                             "component.jid")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    imp = commands.add_parser(
        "import-prosody", help="import a Prosody 0.12 MUC component's persistent rooms",
        description="Import the persistent rooms of a Prosody 0.12 mod_muc component "
                    "(name, description, every room setting, affiliations, reserved nicks, "
                    "subject) into the store. Stop Prosody's MUC component and dmuc-master "
                    "first. One line per room, then a summary; running it again changes "
                    "nothing.")
    imp.add_argument("--host", required=True, metavar="HOST",
                     help="the MUC component's host in Prosody, e.g. conference.example.org")
    source = imp.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-path", metavar="DIR",
                        help="Prosody's data_path (storage = \"internal\"), e.g. "
                             "/var/lib/prosody")
    source.add_argument("--sqlite", metavar="FILE",
                        help="the database of storage = \"sql\" with driver SQLite3")
    imp.add_argument("--dry-run", action="store_true",
                     help="show what would be imported, write nothing")
    imp.add_argument("--replace", action="store_true",
                     help="overwrite rooms that exist in the store with another state")

    commands.add_parser("list-rooms", help="list the stored rooms",
                        description="One line per stored room: JID, flags, affiliations, "
                                    "name.")
    show = commands.add_parser("show-room", help="show one stored room",
                               description="A stored room's settings, affiliations, "
                                           "reserved nicks and subject.")
    show.add_argument("jid", metavar="JID", help="the room's bare JID")
    show.add_argument("--json", action="store_true", help="print the stored state as JSON")
    commands.add_parser("list-slaves", help="show each slave's link state and since when",
                        description="Each slave allowed in [[slaves]] or known to the "
                                    "running master: its link state (live, stale, split, "
                                    "unregistered), since when, its rooms per state; and "
                                    "when the master last recorded them.")
    return parser


class Target:
    """The store and service a command works on."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.slaves: dict[str, frozenset[str]] = {}
        self.max_history: int | None = None  # the master's, when its config is read
        url, service = args.storage, args.service
        if url is None or service is None:
            try:
                cfg = load_master_config(args.config)
            except ConfigError as exc:
                raise AdminError(f"configuration error: {exc}") from None
            url = url or cfg.storage_url
            service = service or cfg.component.jid
            self.slaves = dict(cfg.muc.slaves)
            self.max_history = cfg.muc.max_history_length
        self.url: str = url
        self.service: str = service


def _flags(config: dict[str, Any]) -> str:
    flags = ["public" if config.get("public", True) else "hidden"]
    for key, flag in (("members_only", "members-only"), ("moderated", "moderated"),
                      ("password", "password")):
        if config.get(key):
            flags.append(flag)
    if config.get("whois") == "anyone":
        flags.append("non-anonymous")
    return ",".join(flags)


def _when(stamp: float | None, now: float) -> str:
    if not isinstance(stamp, (int, float)):
        return "-"
    shown = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp))
    return f"{shown} ({max(0, int(now - stamp))} s ago)"


def _write(line: str = "") -> None:
    sys.stdout.write(line + "\n")


@defer.inlineCallbacks
def cmd_import(args: argparse.Namespace, target: Target, storage: Storage | None):  # type: ignore[no-untyped-def]
    """`storage` is None in a dry run against a store that does not exist yet."""
    rooms = prosody_import.read_rooms(data_path=args.data_path, sqlite=args.sqlite,
                                      host=args.host)
    if not rooms:
        where = prosody_import.rooms_location(data_path=args.data_path, sqlite=args.sqlite,
                                              host=args.host)
        raise AdminError(f"no room of {args.host} found in {where}: check --host (the MUC "
                         "component's host in Prosody's configuration) and the data path")
    existing = {} if storage is None else \
        {r.jid: r.state for r in (yield storage.load_rooms(target.service))}
    counts = {"imported": 0, "replaced": 0, "unchanged": 0, "skipped": 0, "conflicts": 0}
    verb = "would import" if args.dry_run else "imported"
    for room in rooms:
        converted = prosody_import.convert(room, target.service, target.max_history)
        if converted.state is None:
            counts["skipped"] += 1
            _write(f"skipped   {converted.jid}: {converted.skipped}")
            continue
        detail = _detail(converted)
        old = existing.get(converted.jid)
        if old is not None and prosody_import.normal_state(old) == converted.state:
            counts["unchanged"] += 1
            _write(f"unchanged {converted.jid}")
            continue
        if old is not None and not args.replace:
            counts["conflicts"] += 1
            _write(f"conflict  {converted.jid}: already in the store with another state "
                   "(--replace to overwrite)")
            continue
        if not args.dry_run:
            yield storage.save_room(target.service, RoomRecord(converted.jid, converted.state))
        counts["replaced" if old is not None else "imported"] += 1
        label = ("would replace" if args.dry_run else "replaced") if old is not None else verb
        _write(f"{label} {converted.jid}: {detail}")
    if args.dry_run:
        counts = {("to import" if k == "imported" else "to replace" if k == "replaced" else k): n
                  for k, n in counts.items()}
    summary = ", ".join(f"{n} {what}" for what, n in counts.items())
    _write(f"{len(rooms)} rooms read from {args.data_path or args.sqlite} ({args.host}): "
           f"{summary}{' (dry run: nothing written)' if args.dry_run else ''}")
    return 1 if counts["conflicts"] else 0


def _detail(converted: prosody_import.Converted) -> str:
    state = converted.state or {}
    cfg = state.get("config", {})
    parts = [_flags(cfg), f"{len(state.get('affiliations', {}))} affiliations",
             f"{len(state.get('reserved_nicks', {}))} reserved nicks"]
    if state.get("subject"):
        parts.append("subject")
    parts += converted.notes
    return "; ".join(parts)


@defer.inlineCallbacks
def cmd_list_rooms(args: argparse.Namespace, target: Target, storage: Storage):  # type: ignore[no-untyped-def]
    records = yield storage.load_rooms(target.service)
    for record in records:
        cfg = record.state.get("config", {})
        _write(f"{record.jid}\t{_flags(cfg)}\t"
               f"{len(record.state.get('affiliations', {}))} affiliations\t"
               f"{cfg.get('name', '')}")
    _write(f"{len(records)} rooms on {target.service}")
    return 0


@defer.inlineCallbacks
def cmd_show_room(args: argparse.Namespace, target: Target, storage: Storage):  # type: ignore[no-untyped-def]
    records = yield storage.load_rooms(target.service)
    record = next((r for r in records if r.jid == args.jid), None)
    if record is None:
        raise AdminError(f"no room {args.jid} in the store of {target.service}")
    state = record.state
    if args.json:
        _write(json.dumps(state, indent=2, sort_keys=True, ensure_ascii=False))
        return 0
    _write(f"room {record.jid}")
    _write("settings:")
    for key, value in state.get("config", {}).items():
        if key == "password" and value:
            value = "(set)"
        _write(f"  {key} = {json.dumps(value, ensure_ascii=False)}")
    _write("affiliations:")
    for jid, affiliation in sorted(state.get("affiliations", {}).items()):
        _write(f"  {affiliation:8} {jid}")
    _write("reserved nicks:")
    for jid, nick in sorted(state.get("reserved_nicks", {}).items()):
        _write(f"  {nick} = {jid}")
    who = state.get("subject_from") or "the room"
    _write(f"subject: {json.dumps(state.get('subject', ''), ensure_ascii=False)} "
           f"(set by {who})")
    return 0


@defer.inlineCallbacks
def cmd_list_slaves(args: argparse.Namespace, target: Target, storage: Storage):  # type: ignore[no-untyped-def]
    records = {r.jid: r.state for r in
               (yield storage.load_rooms(status_service(target.service)))}
    now = time.time()
    daemon = records.pop(DAEMON_KEY, None)
    if daemon is None:
        _write(f"the master of {target.service} has recorded no state in this store")
    elif daemon.get("stopped"):
        _write(f"master {target.service}: stopped {_when(daemon.get('stopped'), now)} "
               "(the states below are as it left them)")
    else:
        _write(f"master {target.service}: pid {daemon.get('pid')}, started "
               f"{_when(daemon.get('started'), now)}, last recorded "
               f"{_when(daemon.get('updated'), now)}")
    for jid in sorted(set(records) | set(target.slaves)):
        record = records.get(jid)
        domains = ",".join(record.get("domains", []) if record else sorted(target.slaves[jid]))
        if record is None:
            _write(f"{jid}\t{UNREGISTERED}\tsince -\tdomains {domains}\t(no state recorded)")
            continue
        counts = " ".join(f"{k}={v}" for k, v in record.get("rooms", {}).items())
        _write(f"{jid}\t{record.get('state')}\tsince {_when(record.get('since'), now)}\t"
               f"domains {domains}\t{'rooms ' + counts if counts else 'no rooms'}")
    return 0


COMMANDS = {
    "import-prosody": cmd_import,
    "list-rooms": cmd_list_rooms,
    "show-room": cmd_show_room,
    "list-slaves": cmd_list_slaves,
}


@defer.inlineCallbacks
def run(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    target = Target(args)
    storage = open_storage(target.url)
    # A dry run writes nothing anywhere: the store is opened read-only (no file, no
    # table, no migration), and one that does not exist yet holds no rooms.
    read_only = args.command == "import-prosody" and args.dry_run
    try:
        yield storage.open(read_only=read_only)
    except StoreAbsent:
        if not read_only:
            raise
        return (yield COMMANDS[args.command](args, target, None))
    try:
        status = yield COMMANDS[args.command](args, target, storage)
    finally:
        yield storage.close()
    return status


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    status: dict[str, int] = {}

    def go(reactor: object) -> Deferred:
        d = run(args)

        def done(code: int) -> None:
            status["code"] = code

        def failed(failure: Any) -> None:
            if failure.check(AdminError, StorageError):
                sys.stderr.write(f"{PROG}: {failure.value}\n")
                status["code"] = 1
                return
            failure.raiseException()

        return d.addCallbacks(done, failed)

    try:
        task.react(go)
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise
    sys.exit(status.get("code", 1))

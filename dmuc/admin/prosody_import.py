"""Read a Prosody 0.12 mod_muc component's persistent rooms and turn them into dmuc rooms.

Where Prosody keeps them (mod_muc.lua, muc.lib.lua `room:freeze`, 0.12.3):
- the "config" store, one entry per room keyed by the room's node: the frozen room,
  `{ _jid = "room@host", _data = {...}, _affiliation_data = {...}, ["user@host"] = "owner" }`
  (the old format, `new_muc_storage_format = false`, has `jid` and `_affiliations`);
- the "persistent" map lists the persistent rooms (informational: the config store is
  what mod_muc restores a room from).
With `storage = "internal"` (util/datamanager.lua) that is
`<data_path>/<host, escaped>/config/<node, escaped>.dat`, a Lua file `return {...};`
(escaping: every byte but ASCII letters and digits as %xx). With `storage = "sql"`
(mod_storage_sql.lua) it is rows of the table `prosody` (host, user = the node,
store = "config", key = each top-level key of the frozen room, type, value), a value of
type "json" for tables.

`convert` maps each mod_muc setting onto dmuc's room state (Room.to_state); what dmuc has
no setting for is kept in RoomConfig.extra under "prosody.<key>" and reported.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from dmuc import jids
from dmuc.admin import luadata
from dmuc.admin.errors import AdminError, ProsodyDataError
from dmuc.master.features.allow_pm import LEGACY as ALLOW_PM_LEGACY
from dmuc.master.model import (
    AFFILIATIONS,
    ALLOW_PM_VALUES,
    BROADCAST_ROLES,
    WHOIS_VALUES,
    RoomConfig,
)

EXTRA_PREFIX = "prosody."
PROSODY_DEFAULT_HISTORY = 20  # history.lib.lua default_history_length

# _data keys that are state, not settings, and that dmuc does not keep (nothing to report;
# subject_time is imported with the subject).
_NOT_SETTINGS = {"subject_time", "occupant_id_salt", "history", "locked"}


@dataclass
class ProsodyRoom:
    """One frozen room as mod_muc stored it."""

    jid: str
    data: dict[str, Any]  # room._data
    affiliations: dict[str, str]
    affiliation_data: dict[str, dict[str, Any]]
    source: str  # where it was read from, for messages


@dataclass
class Converted:
    jid: str  # the room's JID on the dmuc service
    state: dict[str, Any] | None  # None: not imported (see skipped)
    skipped: str = ""
    notes: list[str] = field(default_factory=list)


# --- reading Prosody's stores -------------------------------------------------------------


def path_encode(s: str) -> str:
    """util/datamanager.lua's encode: every byte but ASCII letters and digits as %xx."""
    return "".join(chr(b) if chr(b).isascii() and chr(b).isalnum() else f"%{b:02x}"
                   for b in s.encode("utf-8"))


def path_decode(s: str) -> str:
    raw = re.sub(rb"%([0-9a-fA-F]{2})", lambda m: bytes([int(m.group(1), 16)]),
                 s.encode("utf-8", errors="surrogateescape"))
    return raw.decode("utf-8", errors="surrogateescape")


def _lua_table(value: Any) -> dict[Any, Any]:
    """An empty Lua table parses as [] (it has no keys); a table here is a map."""
    if isinstance(value, dict):
        return value
    if value in (None, []):
        return {}
    if isinstance(value, list):
        return {i + 1: v for i, v in enumerate(value)}
    raise ProsodyDataError(f"expected a table, got {value!r}")


def thaw(frozen: Any, host: str, node: str, source: str) -> ProsodyRoom:
    """A room from what `room:freeze` wrote (either storage format)."""
    if not isinstance(frozen, dict):
        raise ProsodyDataError(f"{source}: not a frozen room (a table expected)")
    jid = frozen.get("_jid") or frozen.get("jid") or f"{node}@{host}"
    if not isinstance(jid, str):
        raise ProsodyDataError(f"{source}: the room JID is not a string")
    data = _lua_table(frozen.get("_data"))
    if "jid" in frozen and "_affiliations" in frozen:  # the old format
        affiliations = _lua_table(frozen["_affiliations"])
    else:  # the new format: every bare JID key with a string value is an affiliation
        affiliations = {k: v for k, v in frozen.items()
                        if isinstance(k, str) and isinstance(v, str) and not k.startswith("_")
                        and "/" not in k and k != "jid"}
    affiliation_data = {k: _lua_table(v) for k, v in
                        _lua_table(frozen.get("_affiliation_data")).items()}
    return ProsodyRoom(jid=jid, data=dict(data), affiliations=dict(affiliations),
                       affiliation_data=affiliation_data, source=source)


def read_file_store(data_path: str, host: str) -> list[ProsodyRoom]:
    """Every room in `<data_path>/<host>/config/*.dat` (Prosody's internal storage)."""
    directory = os.path.join(data_path, path_encode(host), "config")
    if not os.path.isdir(data_path):
        raise ProsodyDataError(f"{data_path}: no such directory (Prosody's data_path)")
    if not os.path.isdir(directory):
        return []  # the component never stored a room
    rooms = []
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".dat"):
            continue
        path = os.path.join(directory, name)
        try:
            frozen = luadata.load_file(path)
        except OSError as exc:
            raise ProsodyDataError(f"{path}: {exc.strerror}") from None
        rooms.append(thaw(frozen, host, path_decode(name[:-4]), path))
    return rooms


def _sql_value(kind: str, value: str, where: str) -> Any:
    """mod_storage_sql's deserialize."""
    if kind == "string":
        return value
    if kind == "boolean":
        if value in ("true", "false"):
            return value == "true"
    elif kind == "number":
        try:
            number = float(value)
            return int(number) if number.is_integer() and "." not in value else number
        except ValueError:
            pass
    elif kind == "json":
        try:
            return json.loads(value)
        except ValueError:
            pass
    raise ProsodyDataError(f"{where}: cannot read a value of type {kind!r}: {value[:60]!r}")


def read_sql_rows(rows: Iterable[tuple[str, str, str, str]], host: str,
                  source: str) -> list[ProsodyRoom]:
    """Rooms from the rows (user, key, type, value) of the "config" store of `host`."""
    frozen_by_node: dict[str, dict[Any, Any]] = {}
    for user, key, kind, value in rows:
        where = f"{source}: room {user!r} key {key!r}"
        decoded = _sql_value(kind, value, where)
        frozen = frozen_by_node.setdefault(user, {})
        if key:
            frozen[key] = decoded
        elif isinstance(decoded, dict):  # the "" row holds the non-string keys
            frozen.update(decoded)
    return [thaw(frozen, host, node, f"{source} (room {node})")
            for node, frozen in sorted(frozen_by_node.items())]


def read_sqlite_store(database: str, host: str) -> list[ProsodyRoom]:
    """Rooms from the SQLite3 database of Prosody's mod_storage_sql, opened read-only."""
    if not os.path.isfile(database):
        raise ProsodyDataError(f"{database}: no such file (Prosody's sql.database)")
    try:
        conn = sqlite3.connect(f"file:{quote(os.path.abspath(database))}?mode=ro", uri=True)
        try:
            rows = conn.execute(
                'SELECT "user", "key", "type", "value" FROM "prosody" '
                'WHERE "host" = ? AND "store" = ? ORDER BY "user", "key"',
                (host, "config")).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise ProsodyDataError(f"{database}: {exc}") from None
    return read_sql_rows(rows, host, database)


# --- mapping onto dmuc ----------------------------------------------------------------------


def _bool(value: Any) -> bool:
    return value is not None and value is not False


def convert(room: ProsodyRoom, service: str, max_history: int | None = None) -> Converted:
    """dmuc's state (Room.to_state) for one Prosody room, moved to `service`; a history
    length is capped at `max_history` (the master's muc.max_history_length), as mod_muc
    caps it at max_history_messages. Each of mod_muc's settings keeps its meaning; what
    dmuc has no setting for is kept in `extra` and reported (one note each)."""
    node, host, resource = _split(room.jid)
    target = f"{node}@{service}" if node else ""
    if not node or resource:
        return Converted(room.jid, None, skipped=f"not a room JID: {room.jid!r}")
    data = room.data
    if _bool(data.get("destroyed")):
        return Converted(target, None, skipped="a destroyed room's tombstone")
    if not _bool(data.get("persistent")):
        return Converted(target, None, skipped="not persistent")
    notes: list[str] = []
    cfg = _settings(data, notes, max_history)
    subject = data.get("subject")
    subject_from = data.get("subject_from")
    subject_time = data.get("subject_time")
    state = {
        "config": cfg.to_dict(),
        "affiliations": _affiliations(room, notes),
        "reserved_nicks": _reserved_nicks(room, notes),
        "subject": subject if isinstance(subject, str) else "",
        # mod_muc keeps the occupant JID (room@host/nick); dmuc the nick
        "subject_from": _split(subject_from)[2] if isinstance(subject_from, str) else "",
        # when it was set: the delay a joiner gets the subject with, as on mod_muc
        "subject_time": float(subject_time) if isinstance(subject_time, (int, float))
        and subject_time == subject_time and subject_time > 0 else 0.0,
    }
    return Converted(target, state, notes=notes)


# mod_muc's _data key -> RoomConfig attribute, for the settings that are text
_TEXTS = {"name": "name", "description": "description", "language": "language",
          "password": "password"}
# mod_muc's _data key -> RoomConfig attribute, for the settings that are booleans (each
# absent key keeps mod_muc's default, which is dmuc's: off, but archiving on as
# mod_muc_mam's muc_log_by_default); `hidden` is the negation of dmuc's `public`
_BOOLEANS = {"members_only": "members_only", "moderated": "moderated",
             "changesubject": "change_subject", "allow_member_invites": "allow_member_invites",
             "archiving": "archiving",  # mod_muc_mam's enablearchiving field
             "logging": "logging"}  # mod_muc_log's enablelogging field
_KNOWN = {*_TEXTS, *_BOOLEANS, "hidden", "whois", "history_length",
          "default_history_messages", "presence_broadcast",
          "allowpm", "persistent", "destroyed", "subject", "subject_from"}


def _settings(data: dict[str, Any], notes: list[str], max_history: int | None) -> RoomConfig:
    cfg = RoomConfig(persistent=True)
    for key, attr in _TEXTS.items():
        if data.get(key) is not None:
            setattr(cfg, attr, str(data[key]))
    for key, attr in _BOOLEANS.items():
        if key in data:
            setattr(cfg, attr, _bool(data[key]))
    cfg.public = not _bool(data.get("hidden"))
    whois = data.get("whois", "moderators")
    if whois in WHOIS_VALUES:
        cfg.whois = whois
    else:
        notes.append(f"whois {whois!r} unknown, kept 'moderators'")
    _history_length(cfg, data.get("history_length", PROSODY_DEFAULT_HISTORY), notes,
                    max_history)
    default = data.get("default_history_messages", PROSODY_DEFAULT_HISTORY)
    if isinstance(default, (int, float)) and default >= 0 and default == default:
        cfg.default_history_messages = int(min(default, cfg.history_length))
    else:
        notes.append(f"default_history_messages {default!r} unusable, kept "
                     f"{cfg.default_history_messages}")
    allow_pm = data.get("allowpm")
    if allow_pm is not None:
        allow_pm = ALLOW_PM_LEGACY.get(str(allow_pm), str(allow_pm))
        if allow_pm in ALLOW_PM_VALUES:
            cfg.allow_pm = allow_pm
        else:
            notes.append(f"allowpm {data['allowpm']!r} unknown, kept {cfg.allow_pm!r}")
    broadcast = data.get("presence_broadcast")
    if broadcast is not None:
        roles = _lua_table(broadcast)
        cfg.presence_broadcast = [r for r in BROADCAST_ROLES if _bool(roles.get(r))]
    for key in sorted(k for k in data if k not in _KNOWN and k not in _NOT_SETTINGS):
        cfg.extra[EXTRA_PREFIX + str(key)] = _json_safe(data[key])
        notes.append(f"{key} = {_json_safe(data[key])!r}: dmuc has no such setting, "
                     "kept in extra (not applied)")
    return cfg


def _history_length(cfg: RoomConfig, length: Any, notes: list[str],
                    max_history: int | None) -> None:
    if isinstance(length, (int, float)) and length >= 0 and length == length:
        cfg.history_length = int(min(length, 1_000_000))
        if max_history is not None and cfg.history_length > max_history:
            notes.append(f"history length {cfg.history_length} capped at {max_history}")
            cfg.history_length = max_history
    else:
        notes.append(f"history_length {length!r} unusable, kept {cfg.history_length}")


def _affiliations(room: ProsodyRoom, notes: list[str]) -> dict[str, str]:
    affiliations: dict[str, str] = {}
    for user, affiliation in sorted(room.affiliations.items()):
        if affiliation not in AFFILIATIONS or affiliation == "none":
            notes.append(f"affiliation {affiliation!r} of {user} unknown, left out")
            continue
        prepared = _bare_jid(user)
        if prepared is None:
            notes.append(f"affiliation of {user!r}: not a JID, left out")
            continue
        affiliations[prepared] = affiliation
    return affiliations


def _reserved_nicks(room: ProsodyRoom, notes: list[str]) -> dict[str, str]:
    reserved: dict[str, str] = {}
    for user, info in sorted(room.affiliation_data.items()):
        nick = info.get("reserved_nickname")
        others = sorted(str(k) for k in info if k != "reserved_nickname")
        if others:
            notes.append(f"registration data {', '.join(others)} of {user} not kept")
        if isinstance(nick, str) and nick:
            reserved[_bare_jid(user) or user] = nick
    return reserved


def _bare_jid(text: str) -> str | None:
    """The prepared bare JID (or domain, for a domain ban), None if `text` is none."""
    parsed = jids.parse(text)
    if parsed is None or parsed.resource:
        return None
    return parsed.userhost()


def _split(jid: str) -> tuple[str, str, str]:
    bare, _, resource = jid.partition("/")
    node, at, host = bare.partition("@")
    return (node, host, resource) if at else ("", node, resource)


def _json_safe(value: Any) -> Any:
    """A Lua value as JSON (table keys as strings; non-finite numbers as strings)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return str(value)
    return value


def normal_state(state: dict[str, Any]) -> dict[str, Any]:
    """A stored state as the master would save it again (for comparing)."""
    return {
        "config": RoomConfig.from_dict(state.get("config", {})).to_dict(),
        "affiliations": dict(state.get("affiliations", {})),
        "reserved_nicks": dict(state.get("reserved_nicks", {})),
        "subject": state.get("subject", ""),
        "subject_from": state.get("subject_from", ""),
        "subject_time": float(state.get("subject_time", 0.0)),
    }


def rooms_location(*, data_path: str | None, sqlite: str | None, host: str) -> str:
    """Where read_rooms looks for the rooms of `host`, for the operator."""
    if data_path is not None:
        return os.path.join(data_path, path_encode(host), "config", "*.dat")
    return f"{sqlite} (table prosody, host {host!r}, store 'config')"


def read_rooms(*, data_path: str | None, sqlite: str | None, host: str) -> list[ProsodyRoom]:
    if (data_path is None) == (sqlite is None):
        raise AdminError("give exactly one of --data-path (storage = \"internal\") "
                         "and --sqlite (storage = \"sql\" with SQLite3)")
    if data_path is not None:
        return read_file_store(data_path, host)
    assert sqlite is not None
    return read_sqlite_store(sqlite, host)

"""TOML configuration of the daemons, checked key by key.

A bad file gives a ConfigError naming the file, the key and the reason; the twistd
plugin prints it as one line and exits non-zero.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from dmuc import jids
from dmuc.config_reference import COMMON, MASTER, SLAVE, keys_of, tables_of
from dmuc.errors import StorageError
from dmuc.master.features.limits import Limits
from dmuc.master.model import RoomConfig
from dmuc.master.service import ServiceSettings
from dmuc.protocol import keepalive
from dmuc.storage import open_storage

LOG_LEVELS = ("debug", "info", "warn", "error")


class ConfigError(Exception):
    """FILE: KEY: REASON, or FILE: REASON for the whole file (key None)."""

    def __init__(self, path: str, key: str | None, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if key is None else f"{path}: {key}: {reason}")
        self.path, self.key, self.reason = path, key, reason


@dataclass
class ComponentConfig:
    jid: str
    host: str
    port: int
    secret: str


@dataclass
class MasterConfig:
    path: str
    component: ComponentConfig
    storage_url: str
    log_level: str
    muc: ServiceSettings  # the [muc] table and the [[slaves]] allow list, as the core takes them
    plugins: list[str] = field(default_factory=list)
    metrics_listen: tuple[str, int] | None = None  # [metrics] listen; None: no endpoint


@dataclass
class SlaveConfig:
    path: str
    component: ComponentConfig
    storage_url: str
    log_level: str = "info"
    domains: list[str] = field(default_factory=list)
    masters: list[str] = field(default_factory=list)
    rooms: list[str] = field(default_factory=list)
    keepalive: int = 60
    history: int = 20
    metrics_listen: tuple[str, int] | None = None  # [metrics] listen; None: no endpoint


class _Reader:
    """Typed access to one TOML document that reports errors as file: key: reason."""

    def __init__(self, path: str, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    def error(self, key: str, reason: str) -> ConfigError:
        return ConfigError(self.path, key, reason)

    def table(self, name: str, required: bool = True) -> dict[str, Any]:
        value = self.data.get(name)
        if value is None:
            if required:
                raise self.error(name, "missing table")
            return {}
        if not isinstance(value, dict):
            raise self.error(name, "must be a table")
        return value

    def get(self, table: str, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        section = self.table(table, required=default is ...)
        full = f"{table}.{key}"
        if key not in section:
            if default is ...:
                raise self.error(full, "missing")
            return default
        value = section[key]
        if kind is int and isinstance(value, bool) or not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise self.error(full, f"must be {names}, not {type(value).__name__}")
        return value

    def check_unknown(self, table: str, known: set[str]) -> None:
        for key in self.table(table, required=False):
            if key not in known:
                raise self.error(f"{table}.{key}", "unknown key")


def read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(path, None, "file not found") from exc
    except PermissionError as exc:
        raise ConfigError(path, None, "permission denied") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, None, f"not valid TOML ({exc})") from exc
    except IsADirectoryError as exc:
        raise ConfigError(path, None, "is a directory") from exc


def _component(r: _Reader) -> ComponentConfig:
    jid = r.get("component", "jid", str)
    parsed = jids.parse(jid)
    if parsed is None or parsed.user is not None or parsed.resource is not None:
        raise r.error("component.jid", f"{jid!r} is not a domain JID")
    port = r.get("component", "port", int, 5347)
    if not 0 < port < 65536:
        raise r.error("component.port", f"{port} is not a TCP port")
    secret = r.get("component", "secret", str)
    if not secret:
        raise r.error("component.secret", "must not be empty")
    r.check_unknown("component", keys_of(COMMON, "component"))
    return ComponentConfig(jid=parsed.host, host=r.get("component", "host", str, "127.0.0.1"),
                           port=port, secret=secret)


def _storage_url(r: _Reader) -> str:
    url = r.get("storage", "url", str)
    r.check_unknown("storage", keys_of(COMMON, "storage"))
    try:
        open_storage(url).check()
    except StorageError as exc:
        raise r.error("storage.url", str(exc)) from exc
    return url


def _log_level(r: _Reader) -> str:
    level = r.get("log", "level", str, "info").lower()
    r.check_unknown("log", keys_of(COMMON, "log"))
    if level not in LOG_LEVELS:
        raise r.error("log.level", f"{level!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


def _metrics(r: _Reader) -> tuple[str, int] | None:
    """[metrics] listen = "127.0.0.1:9250" (or "[::1]:9250"): where the Prometheus endpoint
    listens; absent or "": no endpoint (the default)."""
    listen = r.get("metrics", "listen", str, "")
    r.check_unknown("metrics", keys_of(COMMON, "metrics"))
    if not listen:
        return None
    host, colon, port = listen.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        address = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        address = None
    if address is not None and (address.version == 6) != bracketed:
        address = None  # an IPv6 address goes in brackets, an IPv4 one does not
    if not colon or address is None or not port.isdigit() or not 0 < int(port) < 65536:
        raise r.error("metrics.listen",
                      f"{listen!r} is not ADDRESS:PORT (an IP address, e.g. 127.0.0.1:9250)")
    return str(address), int(port)


def restart_keys(old: MasterConfig | SlaveConfig, new: MasterConfig | SlaveConfig) -> list[str]:
    """The keys whose change a reload cannot apply (the component connection, storage,
    what is set up once at start): they wait for a restart."""
    keys = {"component.jid": (old.component.jid, new.component.jid),
            "component.host": (old.component.host, new.component.host),
            "component.port": (old.component.port, new.component.port),
            "component.secret": (old.component.secret, new.component.secret),
            "storage.url": (old.storage_url, new.storage_url)}
    if isinstance(old, MasterConfig) and isinstance(new, MasterConfig):
        keys["muc.limits"] = (old.muc.limits, new.muc.limits)
        keys["muc.plugins"] = (old.plugins, new.plugins)
    elif isinstance(old, SlaveConfig) and isinstance(new, SlaveConfig):
        keys["slave.domains"] = (old.domains, new.domains)
        keys["slave.masters"] = (old.masters, new.masters)
        keys["slave.rooms"] = (old.rooms, new.rooms)
    return [key for key, (was, now) in keys.items() if was != now]


def load_master_config(path: str) -> MasterConfig:
    r = _Reader(path, read_toml(path))
    for table in r.data:
        if table not in tables_of(MASTER):
            raise r.error(table, "unknown table")
    component = _component(r)
    storage_url, log_level = _storage_url(r), _log_level(r)
    r.check_unknown("muc", keys_of(MASTER, "muc"))
    admins = r.get("muc", "admins", list, [])
    for admin in admins:
        parsed = jids.parse(admin) if isinstance(admin, str) else None
        if parsed is None or parsed.user is None:
            raise r.error("muc.admins", f"{admin!r} is not a bare user JID")
    create = r.get("muc", "create_rooms", (str, list), "anyone")
    if isinstance(create, str) and create not in ("anyone", "admins"):
        raise r.error("muc.create_rooms", "must be \"anyone\", \"admins\" or a list of domains")
    max_history_length = r.get("muc", "max_history_length", int, 50)
    if max_history_length < 0:
        raise r.error("muc.max_history_length", "must not be negative")
    archive_window = r.get("muc", "archive_window", int, 10_000)
    if not 0 <= archive_window <= 10_000_000:
        raise r.error("muc.archive_window", "must be between 0 and 10000000")
    defaults = r.get("muc", "room_defaults", dict, {})
    fields = RoomConfig.__dataclass_fields__
    for key, value in defaults.items():
        if key not in fields:
            raise r.error(f"muc.room_defaults.{key}", "unknown room setting")
        expected = type(getattr(RoomConfig(), key))
        if type(value) is not expected:
            raise r.error(f"muc.room_defaults.{key}", f"must be {expected.__name__}")
    plugins = r.get("muc", "plugins", list, [])
    if not all(isinstance(p, str) for p in plugins):
        raise r.error("muc.plugins", "must be a list of module names")
    plugin_config = r.get("muc", "plugin_config", dict, {})
    for name, table in plugin_config.items():
        if not isinstance(table, dict):
            raise r.error(f"muc.plugin_config.{name}", "must be a table")
    settings = ServiceSettings(
        jid=component.jid,
        name=r.get("muc", "name", str, "Prosody Chatrooms"),
        admins=frozenset(jids.parse(a).userhost() for a in admins),  # type: ignore[union-attr]
        create_rooms=create,
        room_locking=r.get("muc", "room_locking", bool, True),
        max_history_length=max_history_length,
        archive_window=archive_window,
        enforce_reserved_nicks=r.get("muc", "enforce_reserved_nicks", bool, False),
        allow_unaffiliated_register=r.get("muc", "allow_unaffiliated_register", bool, False),
        affiliation_notify=r.get("muc", "affiliation_notify", bool, False),
        room_defaults=defaults,
        slaves={jid: frozenset(domains) for jid, domains in _slaves(r).items()},
        limits=_limits(r),
        archive_expires_after=_expires_after(r),
        archive_cleanup_interval=_bounded_int(r, "archive_cleanup_interval", 4 * 3600,
                                              1, 365 * 86_400),
        archive_max_results=_bounded_int(r, "archive_max_results", 50, 1, 10_000),
        plugin_config=plugin_config,
    )
    return MasterConfig(path=path, component=component, storage_url=storage_url,
                        log_level=log_level, muc=settings, plugins=plugins,
                        metrics_listen=_metrics(r))


# mod_muc_mam's muc_log_expires_after units: days, weeks, months (31 days), years
_EXPIRY_UNITS = {"": 1, "d": 86_400, "w": 7 * 86_400, "m": 31 * 86_400,
                 "y": 365.2425 * 86_400}


def _expires_after(r: _Reader) -> float | None:
    """muc.archive_expires_after: seconds, or "never", or as Prosody ("1w", "30d", "2m",
    "1y"); one week by default."""
    value = r.get("muc", "archive_expires_after", (int, str), "1w")
    key = "muc.archive_expires_after"
    if isinstance(value, int):
        if value <= 0:
            raise r.error(key, "must be a positive number of seconds")
        return float(value)
    if value.strip().lower() == "never":
        return None
    match = re.fullmatch(r"\s*(\d{1,9})\s*([dwmy]?)\s*", value.lower())
    if match is None or int(match.group(1)) == 0:
        raise r.error(key, f"{value!r} is not \"never\", seconds, or a number with d, w, m, y")
    return int(match.group(1)) * _EXPIRY_UNITS[match.group(2)]


def _bounded_int(r: _Reader, key: str, default: int, lowest: int, highest: int) -> int:
    value = r.get("muc", key, int, default)
    if not lowest <= value <= highest:
        raise r.error(f"muc.{key}", f"must be between {lowest} and {highest}")
    return value


# [muc.limits]: key -> (kinds, lowest, highest). Rates are stanzas a second (0: off).
_LIMIT_KEYS: dict[str, tuple[tuple[type, ...], float, float]] = {
    "rate": ((int, float), 0, 1_000_000),
    "burst": ((int,), 1, 1_000_000_000),
    "slave_rate": ((int, float), 0, 1_000_000),
    "slave_burst": ((int,), 1, 1_000_000_000),
    "max_nick_length": ((int,), 0, 1023),
    "max_char_count": ((int,), 0, 1_000_000_000),
}


def _limits(r: _Reader) -> Limits | None:
    """[muc.limits] (features/limits.py): on with Limits' defaults when absent; None when
    both rates are 0 and no length is bounded."""
    table = r.get("muc", "limits", dict, {})
    values: dict[str, float] = {}
    for key, value in table.items():
        where = f"muc.limits.{key}"
        if key not in _LIMIT_KEYS:
            raise r.error(where, "unknown key")
        kinds, lowest, highest = _LIMIT_KEYS[key]
        if isinstance(value, bool) or not isinstance(value, kinds):
            names = "/".join(k.__name__ for k in kinds)
            raise r.error(where, f"must be {names}, not {type(value).__name__}")
        if not lowest <= value <= highest:  # NaN fails this too
            raise r.error(where, f"must be between {lowest} and {highest}")
        values[key] = value
    limits = Limits(**values)  # type: ignore[arg-type]
    if not (limits.rate or limits.slave_rate or limits.max_nick_length
            or limits.max_char_count):
        return None
    return limits


def _domain_list(r: _Reader, key: str, values: Any) -> list[str]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise r.error(key, "must be a list of domains")
    domains = []
    for value in values:
        parsed = jids.parse(value)
        if parsed is None or parsed.user is not None or parsed.resource is not None:
            raise r.error(key, f"{value!r} is not a domain")
        domains.append(parsed.host)
    return domains


def _slaves(r: _Reader) -> dict[str, list[str]]:
    """[[slaves]] jid = "dmuc.vesa.yeggmaex.irc", domains = ["vesa.yeggmaex.irc"]"""
    entries = r.data.get("slaves", [])
    if not isinstance(entries, list):
        raise r.error("slaves", "must be an array of tables ([[slaves]])")
    slaves: dict[str, list[str]] = {}
    for n, entry in enumerate(entries):
        where = f"slaves[{n}]"
        if not isinstance(entry, dict):
            raise r.error(where, "must be a table")
        for key in entry:
            if key not in keys_of(MASTER, "slaves"):
                raise r.error(f"{where}.{key}", "unknown key")
        if "jid" not in entry or "domains" not in entry:
            raise r.error(where, "needs jid and domains")
        jid = _domain_list(r, f"{where}.jid", [entry["jid"]])[0]
        slaves[jid] = _domain_list(r, f"{where}.domains", entry["domains"])
        if not slaves[jid]:
            raise r.error(f"{where}.domains", "must not be empty")
    return slaves


def load_slave_config(path: str) -> SlaveConfig:
    r = _Reader(path, read_toml(path))
    for table in r.data:
        if table not in tables_of(SLAVE):
            raise r.error(table, "unknown table")
    cfg = SlaveConfig(path=path, component=_component(r), storage_url=_storage_url(r),
                      log_level=_log_level(r), metrics_listen=_metrics(r))
    r.table("slave")
    r.check_unknown("slave", keys_of(SLAVE, "slave"))
    cfg.domains = _domain_list(r, "slave.domains", r.get("slave", "domains", list))
    if not cfg.domains:
        raise r.error("slave.domains", "must name at least one user domain")
    cfg.masters = _domain_list(r, "slave.masters", r.get("slave", "masters", list))
    if not cfg.masters:
        raise r.error("slave.masters", "must name at least one MUC service")
    rooms = r.get("slave", "rooms", list, [])
    for room in rooms:
        parsed = jids.parse(room) if isinstance(room, str) else None
        if parsed is None or parsed.user is None or parsed.resource is not None:
            raise r.error("slave.rooms", f"{room!r} is not a room JID")
        if parsed.host not in cfg.masters:
            raise r.error("slave.rooms", f"{room!r} is not on a service in slave.masters")
        cfg.rooms.append(parsed.userhost())
    cfg.keepalive = r.get("slave", "keepalive", int, 60)
    if not keepalive.MIN_KEEPALIVE <= cfg.keepalive <= keepalive.MAX_KEEPALIVE:
        raise r.error("slave.keepalive", f"must be between {keepalive.MIN_KEEPALIVE} and "
                      f"{keepalive.MAX_KEEPALIVE} seconds")
    cfg.history = r.get("slave", "history", int, 20)
    if cfg.history < 0:
        raise r.error("slave.history", "must not be negative")
    return cfg

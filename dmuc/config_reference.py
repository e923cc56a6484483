"""The configuration reference: every key of the daemons' TOML files, with its type,
default, whether a reload (SIGHUP) applies it, and what it does.

One source for three readers: the loader (dmuc.config) accepts exactly these keys (any
other is "unknown key"), the man pages' CONFIGURATION sections are generated from it
(docs/man/build_man.py), and tests/unit/test_man_pages.py fails when the loader reads a
key that is not here. A leaf module: it imports nothing from dmuc.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Key:
    name: str  # TABLE.KEY as in an error line; "slaves[].jid" for an array of tables
    kind: str  # the TOML type, as the man page shows it
    default: str  # "required" when there is none
    reloads: bool  # a SIGHUP applies a change (else it waits for a restart)
    text: str

    @property
    def table(self) -> str:
        return self.name.rpartition(".")[0].replace("[]", "")

    @property
    def key(self) -> str:
        return self.name.rpartition(".")[2]


COMMON: tuple[Key, ...] = (
    Key("component.jid", "string", "required", False,
        "The component's domain JID; Prosody needs a Component block for it with the same "
        "secret."),
    Key("component.host", "string", '"127.0.0.1"', False,
        "Where Prosody listens for components."),
    Key("component.port", "integer", "5347", False, "Prosody's component_ports."),
    Key("component.secret", "string", "required", False,
        "The component_secret of that Component block."),
    Key("storage.url", "string", "required", False,
        "`sqlite:///var/lib/dmuc/NAME.db` (the directory must exist; the file is created "
        "0600) or `postgresql://USER@HOST/DB` (`%2Frun%2Fpostgresql` as HOST: the local "
        "Unix socket). The password never appears in log lines."),
    Key("log.level", "string", '"info"', True, "`debug`, `info`, `warn` or `error`."),
    Key("metrics.listen", "string", '"" (off)', True,
        "ADDRESS:PORT of a Prometheus endpoint (`127.0.0.1:9250`, `[::1]:9250`); a reload "
        "turns it on, off or moves it. It shows room and server names: keep it private."),
)

MASTER: tuple[Key, ...] = COMMON + (
    Key("muc.name", "string", '"Prosody Chatrooms"', True,
        "The service's name in disco#info (mod_muc's `name`)."),
    Key("muc.admins", "array of bare JIDs", "[]", True, "Users who own every room."),
    Key("muc.create_rooms", "string or array", '"anyone"', True,
        '"anyone", "admins", or a list of user domains whose users may create rooms.'),
    Key("muc.room_locking", "boolean", "true", True,
        "A new room stays locked (status 201) until its owner submits the configuration "
        "form."),
    Key("muc.max_history_length", "integer", "50", True,
        "The largest history length an owner may configure."),
    Key("muc.archive_window", "integer", "10000", True,
        "Messages per room kept in memory for a slave's netjoin (0 to 10000000)."),
    Key("muc.enforce_reserved_nicks", "boolean", "false", True,
        "Users must join with the nickname they registered in a room."),
    Key("muc.affiliation_notify", "boolean", "false", True,
        "Tell a user not in the room that its affiliation changed (status 101)."),
    Key("muc.allow_unaffiliated_register", "boolean", "false", True,
        "Users without an affiliation may register a nickname (and become members)."),
    Key("muc.room_defaults", "table", "{}", True,
        "Defaults of rooms created from then on: any room setting (e.g. `persistent`, "
        "`history_length`); `[muc.room_defaults.extra]` for plugins' settings."),
    Key("muc.plugins", "array of module names", "[]", False,
        "Python modules with `setup(hooks, service)`, loaded at start "
        "(e.g. `dmuc.plugins.slowmode`, `dmuc.plugins.blocklist`)."),
    Key("muc.plugin_config", "table of tables", "{}", True,
        "Each plugin's own settings, in a table named after it, e.g. "
        '`[muc.plugin_config.blocklist] file = "/etc/dmuc/blocklist"`.'),
    Key("muc.archive_expires_after", "integer or string", '"1w"', True,
        'Archived messages are deleted after this: seconds, "never", or "1w", "30d", '
        '"2m", "1y".'),
    Key("muc.archive_cleanup_interval", "integer", "14400", True,
        "Seconds between two deletions of expired archived messages."),
    Key("muc.archive_max_results", "integer", "50", True,
        "At most this many messages in one archive query page."),
    Key("muc.limits.rate", "number", "10", False,
        "Stanzas a second per user session and room (0: off), as mod_muc_limits."),
    Key("muc.limits.burst", "integer", "50", False,
        "Stanzas a user session may send at once."),
    Key("muc.limits.slave_rate", "number", "100", False,
        "Stanzas a second per allowed slave, for what it sends for itself (0: off)."),
    Key("muc.limits.slave_burst", "integer", "1000", False,
        "Stanzas a slave may send at once."),
    Key("muc.limits.max_nick_length", "integer", "0", False,
        "Longer nicknames are refused (0: no bound); muc_max_nick_length."),
    Key("muc.limits.max_char_count", "integer", "0", False,
        "Longer message bodies are refused (0: no bound); muc_max_char_count."),
    Key("slaves[].jid", "string", "required", True,
        "A slave allowed to mirror this service's rooms (`[[slaves]]`, one table each); "
        "one removed by a reload loses its links."),
    Key("slaves[].domains", "array of domains", "required", True,
        "The user domains that slave speaks for."),
)

SLAVE: tuple[Key, ...] = COMMON + (
    Key("slave.domains", "array of domains", "required", False,
        "The user domains whose users this slave serves (its Prosody's VirtualHosts)."),
    Key("slave.masters", "array of domains", "required", False,
        "The MUC services (masters) whose rooms it mirrors."),
    Key("slave.rooms", "array of room JIDs", "[]", False,
        "Rooms to register at start, before any local user joins."),
    Key("slave.keepalive", "integer", "60", True,
        "Seconds between keepalives proposed at registration (5 to 3600)."),
    Key("slave.history", "integer", "20", True,
        "History messages asked for at registration."),
)


def keys_of(reference: tuple[Key, ...], table: str) -> set[str]:
    """The keys the reference documents in one table (e.g. "muc.limits"), with the names
    of its subtables ("limits" in "muc")."""
    keys = {k.key for k in reference if k.table == table}
    prefix = table + "."
    return keys | {k.table[len(prefix):].split(".")[0] for k in reference
                   if k.table.startswith(prefix)}


def tables_of(reference: tuple[Key, ...]) -> set[str]:
    """The top-level tables of a file."""
    return {k.name.split(".")[0].replace("[]", "") for k in reference}

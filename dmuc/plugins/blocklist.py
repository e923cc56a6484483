"""Block list: JIDs or whole domains refused by the service, at join and at message time.

The list is a text file, one entry a line: a bare JID (`troll@example.org`) or a domain
(`spam.example`, for all its users); `#` starts a comment. Its path is
`[muc.plugin_config.blocklist] file = "/etc/dmuc/blocklist"`. It is read at start and
again on every configuration reload (SIGHUP, `systemctl reload dmuc-master`); a file that
cannot be read keeps the list in force, with one log line. A blocked user is refused
auth/forbidden when joining a room and when sending a groupchat message (one log line
each); being blocked after joining, they can still leave. Enable with
`muc.plugins = ["dmuc.plugins.blocklist"]`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.words.xish.domish import Element

from dmuc import jids
from dmuc.errors import Refusal
from dmuc.hooks import Hooks
from dmuc.master.model import Occupant
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas

if TYPE_CHECKING:
    from dmuc.master.room import Room

NAME = "blocklist"  # its table in [muc.plugin_config]
BLOCKED = "You are blocked from this service"


def parse(text: str) -> tuple[frozenset[str], list[str]]:
    """The entries of a block list file, and the lines that are neither a bare JID nor a
    domain (ignored, and named in the log)."""
    entries: set[str] = set()
    bad: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        parsed = jids.parse(entry)
        if parsed is None or parsed.resource is not None:
            bad.append(f"line {number}: {entry!r}")
            continue
        entries.add(parsed.userhost())
    return frozenset(entries), bad


class BlockList:
    def __init__(self, service: Any) -> None:
        self.service = service
        self.entries: frozenset[str] = frozenset()
        self.startup_log: list[tuple[str, str]] = []

    def path(self) -> str | None:
        settings = self.service.settings.plugin_config.get(NAME, {})
        path = settings.get("file") if isinstance(settings, dict) else None
        return path if isinstance(path, str) and path else None

    def load(self, out: Outbox) -> None:
        path = self.path()
        if path is None:
            out.warn("block list: no [muc.plugin_config.blocklist] file: nobody is blocked")
            self.entries = frozenset()
            return
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            out.warn(f"block list: cannot read {path}: {exc}; keeping the "
                      f"{len(self.entries)} entries in force")
            return
        self.entries, bad = parse(text)
        out.info(f"block list: {len(self.entries)} entries from {path}")
        if bad:
            out.warn(stanzas.one_line(f"block list: {path}: ignored {len(bad)} lines that "
                                      f"are not a bare JID or a domain: {', '.join(bad)}", 300))

    def blocked(self, sender: str) -> bool:
        return jids.bare(sender) in self.entries or jids.domain(sender) in self.entries

    def pre_join(self, room: Room, stanza: Element, nick: str, sender: str) -> Refusal | None:
        if self.blocked(sender):
            return Refusal("auth", "forbidden", BLOCKED)
        return None

    def groupchat(self, room: Room, occupant: Occupant, stanza: Element,
                  out: Outbox) -> bool | None:
        if not self.blocked(stanza.getAttribute("from") or occupant.bare_jid):
            return None
        stanzas.refuse(out, stanza, "auth", "forbidden", BLOCKED,
                       what=f"a message to {room.jid} (block list)", by=room.jid)
        return True

    def reloaded(self, service: Any, out: Outbox) -> None:
        self.load(out)

    def tick(self, now: float, out: Outbox) -> None:
        """The lines of the load at start go out with the first tick (setup has no
        Outbox)."""
        out.log.extend(self.startup_log)
        self.startup_log.clear()


def setup(hooks: Hooks, service: Any) -> BlockList:
    feature = BlockList(service)
    # before the other plugins and the settings' own checks: a blocked user learns nothing
    # about the room (password, members-only)
    hooks.add("occupant-pre-join", feature.pre_join, priority=100)
    hooks.add("occupant-groupchat", feature.groupchat, priority=100)
    hooks.add("config-reloaded", feature.reloaded)
    hooks.add("tick", feature.tick)
    out = Outbox(0.0)
    feature.load(out)
    feature.startup_log = out.log
    return feature

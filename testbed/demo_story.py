"""``make demo``: the seed's network, the seed's story on it, what it cost, then yours.

Brings up what ``make run`` brings up (:mod:`testbed.demo_network`: five Prosody servers
with real s2s, dmuc-master, three dmuc-slaves), plus Prosody's own mod_muc as
``conference.avalon.irc`` on the master's server, for comparison. Then, with real clients
(slixmpp):

1. the seed's §5: the seven characters (and Jarkko, of efnet.irc, a server without a
   slave) enter wallops@channel.avalon.irc and talk;
2. a netsplit: the link between avalon.irc and killrc.oulubox.irc is cut while people talk
   on both sides; then it is healed, and the netjoin brings each side what it missed;
3. the same joins, the same split and the same messages in wallops@conference.avalon.irc
   (plain XEP-0045 on Prosody's mod_muc, which has no netsplit mode: what is said across
   the cut link is lost, and its users behind it may be kicked out by the bounces);
4. what every user received in each room: of the lines said, expected, got, lost and
   duplicated, side by side;
5. per s2s link, the stanzas and bytes that crossed it (counted by the proxy on the link)
   for dmuc and for mod_muc, and the split/netjoin events with their timings.

Then the network stays up for a person to join with any client until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import slixmpp

from testbed.demo import interruptible, watch
from testbed.demo_network import ACCOUNTS, _describe
from testbed.faults import DmucDaemons, LogWatcher
from testbed.network import MASTER_DOMAIN, MUC_SERVICE, DmucNetwork
from testbed.prosody import ComponentSpec, TestbedError

MOD_MUC = f"conference.{MASTER_DOMAIN}"
ROOM = "wallops"
SPLIT_SERVER = "killrc.oulubox.irc"
KEEPALIVE = 5  # seconds: a split is noticed within two of them
SPLIT_WAIT = 3.0  # s each listener is given for a line said around the split

# §5 and Listing 15 of the seed, said by its characters
STORY = [
    ("Wumpus", "Honest! He did!!"),
    ("WiZ", "Was that absolutely necessary?????????"),
    ("Troy", "SUUUUUUUURE he did"),
    ("Valdis", "He did. really truly he did."),
    ("BigCheese", "Phaedrus, we're all having a truly rotten time."),
    ("Phaedrus", "Tell me about it."),
    ("Efchen", "Is it the Wumpus again?"),
    ("Jarkko", "Terve from efnet, no slave here."),
]
# said while killrc.oulubox.irc is split from avalon.irc
DURING_SPLIT = [
    ("Wumpus", "Hello? Anyone still out there?"),
    ("Valdis", "Only us killrc people, it seems."),
    ("BigCheese", "Where did the killrc crowd go?"),
    ("WiZ", "Netsplit. They will be back."),
]
AFTER = [("Phaedrus", "We are back. What did we miss?")]


def _ssl() -> ssl.SSLContext:
    return ssl.create_default_context()  # never used: plain TCP


class Person:
    """A slixmpp client for one character."""

    def __init__(self, nick: str, jid: str, ip: str, port: int) -> None:
        self.nick, self.jid, self.ip, self.port = nick, jid, ip, port
        self.xmpp = slixmpp.ClientXMPP(
            f"{jid}/demo", "pw", ssl_context=_ssl(),
            plugin_config={"feature_mechanisms": {"unencrypted_plain": True}})
        self.xmpp.enable_starttls = False
        self.xmpp.enable_direct_tls = False
        self.xmpp.enable_plaintext = True
        self.xmpp.register_plugin("xep_0045")
        caps = self.xmpp.plugin["xep_0115"]
        caps.broadcast = False
        self.xmpp.del_event_handler("entity_caps", caps._process_caps)
        self.heard: dict[str, list[str]] = {}  # room -> bodies, in order
        self.changed = asyncio.Event()
        self.xmpp.add_event_handler("groupchat_message", self._message)

    def _message(self, msg: Any) -> None:
        if msg["body"]:
            self.heard.setdefault(msg["from"].bare, []).append(msg["body"])
            self.changed.set()

    async def connect(self) -> None:
        started = asyncio.get_running_loop().create_future()
        self.xmpp.add_event_handler("session_start",
                                    lambda _: started.done() or started.set_result(None),
                                    disposable=True)
        self.xmpp.connect(self.ip, self.port)
        await asyncio.wait_for(started, 20)
        self.xmpp.send_presence()

    async def join(self, room: str) -> float:
        began = time.monotonic()
        await self.xmpp.plugin["xep_0045"].join_muc_wait(room, self.nick, maxstanzas=0,
                                                         timeout=20)
        return time.monotonic() - began

    def say(self, room: str, text: str) -> None:
        self.xmpp.send_message(mto=room, mbody=text, mtype="groupchat")

    async def hears(self, room: str, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while text not in self.heard.get(room, []):
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                pass
        return True

    async def leave(self) -> None:
        try:
            await asyncio.wait_for(self.xmpp.disconnect(wait=2), 3)
        except TimeoutError:
            self.xmpp.abort()


class Story:
    def __init__(self, network: DmucNetwork, logs: LogWatcher) -> None:
        self.network = network
        self.logs = logs
        self.people: dict[str, Person] = {}
        self.began = time.monotonic()

    async def connect_all(self) -> None:
        """The cast logs in (slixmpp clients belong to the running loop: made here)."""
        self.people = {}
        for nick, jid in ACCOUNTS:
            server = self.network.server(jid)
            self.people[nick] = Person(nick, jid, server.ip, server.c2s_port)
        await asyncio.gather(*(p.connect() for p in self.people.values()))

    def say(self, text: str) -> None:
        print(f"  [{time.monotonic() - self.began:6.2f}s] {text}", flush=True)

    async def talk(self, room: str, lines: Sequence[tuple[str, str]],
                   audience: Sequence[str] | None = None, timeout: float = 10.0) -> None:
        """Each line said, then awaited at every listener (everyone by default)."""
        listeners = [self.people[n] for n in (audience or self.people)]
        for nick, text in lines:
            sent = time.monotonic()
            self.people[nick].say(room, text)
            got = await asyncio.gather(*(p.hears(room, text, timeout) for p in listeners))
            took = (time.monotonic() - sent) * 1000
            self.say(f"<{nick}> {text}   (heard by {sum(got)}/{len(listeners)} "
                     f"in {took:.0f} ms)")

    async def enter(self, room: str) -> None:
        for person in self.people.values():
            took = await person.join(room)
            via = self.network.server(person.jid)
            how = f"via dmuc.{via.domain}" if via.role == "slave" and room.endswith(
                MUC_SERVICE) else "over s2s"
            self.say(f"{person.nick} ({person.jid}) enters {room} {how} "
                     f"({took * 1000:.0f} ms)")

    def links(self) -> dict[tuple[str, str], tuple[int, int, int]]:
        """(stanzas, bytes, messages) per link direction to or from the master's server."""
        out = {}
        for a in self.network.servers:
            for b in self.network.servers:
                if a != b and MASTER_DOMAIN in (a, b):
                    counts = self.network.s2s_counts(b, a)
                    out[(a, b)] = (sum(counts.values()), self.network.s2s_bytes(b, a),
                                   counts["message"])
        return out

    async def split_act(self, room: str, events: dict[str, float | None],
                        daemons: bool) -> None:
        """Cut killrc from avalon while both sides talk, heal, wait for what should come.
        ``daemons``: dmuc's (log their split and netjoin, timed into ``events``)."""
        split_side = [n for n, p in self.people.items() if p.jid.endswith(SPLIT_SERVER)]
        other_side = [n for n in self.people if n not in split_side]
        cut_at = time.monotonic()
        self.network.cut(SPLIT_SERVER)
        self.say(f"link {MASTER_DOMAIN} <-> {SPLIT_SERVER} cut")
        for source in ("master", SPLIT_SERVER) if daemons else ():
            found = self.logs.wait_for("netsplit", 4 * KEEPALIVE, [source], after=cut_at)
            events[f"split seen by {source}"] = found.at - cut_at if found else None
            self.say(f"{source}: " + (f"netsplit noticed after {found.at - cut_at:.1f} s"
                                      if found else "no netsplit logged"))
        # each side listens to itself only: the other side cannot hear it now
        await self.talk(room, DURING_SPLIT[:2], audience=split_side, timeout=SPLIT_WAIT)
        await self.talk(room, DURING_SPLIT[2:], audience=other_side, timeout=SPLIT_WAIT)
        healed_at = time.monotonic()
        self.network.heal(SPLIT_SERVER)
        self.say(f"link {MASTER_DOMAIN} <-> {SPLIT_SERVER} healed")
        for source in ("master", SPLIT_SERVER) if daemons else ():
            found = self.logs.wait_for("netjoin", 6 * KEEPALIVE, [source], after=healed_at)
            events[f"netjoin at {source}"] = found.at - healed_at if found else None
            self.say(f"{source}: " + (f"netjoin after {found.at - healed_at:.1f} s"
                                      if found else "no netjoin logged"))
        # every line awaited at everyone at once (a line that never comes costs the wait
        # once): a netjoin comes within a keepalive or two
        people = list(self.people.values())
        heard = await asyncio.gather(*(p.hears(room, text, 3 * KEEPALIVE)
                                       for _, text in DURING_SPLIT for p in people))
        for i, (nick, text) in enumerate(DURING_SPLIT):
            row = heard[i * len(people):(i + 1) * len(people)]
            self.say(f"after the heal, <{nick}> {text!r} is with {sum(row)}/{len(people)}")

    async def act(self, room: str, title: str, daemons: bool) -> dict[str, Any]:
        """The story, the split, the heal, a last line: in ``room``."""
        print(f"\n== {title}: the seed's §5 in {room}")
        self.network.reset_counts()
        await self.enter(room)
        await self.talk(room, STORY)
        print(f"\n   Netsplit in {room}: {SPLIT_SERVER} loses its link to {MASTER_DOMAIN}")
        events: dict[str, float | None] = {}
        await self.split_act(room, events, daemons)
        await self.talk(room, AFTER, timeout=SPLIT_WAIT)
        return {"links": self.links(), "events": events, "received": self.received(room)}

    def received(self, room: str) -> dict[str, tuple[int, int, int, int]]:
        """Per character: (expected, got, lost, duplicated) of every line said in ``room``
        (each should reach everyone once, its sayer included)."""
        said = [text for _, text in (*STORY, *DURING_SPLIT, *AFTER)]
        out = {}
        for nick, person in self.people.items():
            heard = person.heard.get(room, [])
            got = sum(1 for text in said if text in heard)
            extra = sum(max(heard.count(text) - 1, 0) for text in said)
            out[nick] = (len(said), got, len(said) - got, extra)
        return out

    async def run(self) -> tuple[dict[str, Any], dict[str, Any]]:
        await self.connect_all()
        dmuc = await self.act(f"{ROOM}@{MUC_SERVICE}", "1-2. dmuc", daemons=True)
        # out of the dmuc room before the mod_muc act, so its counts are its own
        await asyncio.gather(*(p.leave() for p in self.people.values()))
        await self.connect_all()
        plain = await self.act(f"{ROOM}@{MOD_MUC}", "3. Prosody's mod_muc", daemons=False)
        await asyncio.gather(*(p.leave() for p in self.people.values()))
        return dmuc, plain


def report(dmuc: dict[str, Any], plain: dict[str, Any]) -> None:
    print("\n== 4. What every user received, of the lines said in the room (the split "
          "included)")
    print(f"  {'user':10} {'dmuc: expected got lost dup':>30}   "
          f"{'mod_muc: expected got lost dup':>33}")
    totals = [0] * 8
    for nick in dmuc["received"]:
        d, p = dmuc["received"][nick], plain["received"].get(nick, (0, 0, 0, 0))
        totals = [t + v for t, v in zip(totals, (*d, *p))]
        print(f"  {nick:10} {d[0]:>17} {d[1]:>3} {d[2]:>4} {d[3]:>3}   "
              f"{p[0]:>20} {p[1]:>3} {p[2]:>4} {p[3]:>3}")
    print(f"  {'everyone':10} {totals[0]:>17} {totals[1]:>3} {totals[2]:>4} {totals[3]:>3}"
          f"   {totals[4]:>20} {totals[5]:>3} {totals[6]:>4} {totals[7]:>3}")
    print("\n== 5. What crossed each s2s link (counted on the link): stanzas / bytes "
          "(of which messages)")
    print(f"  {'link':38} {'dmuc':>22} {'plain MUC':>22}")
    total = [0] * 6
    for link in sorted(set(dmuc["links"]) | set(plain["links"])):
        d, p = dmuc["links"].get(link, (0, 0, 0)), plain["links"].get(link, (0, 0, 0))
        if not (d[0] or p[0]):
            continue
        total = [t + v for t, v in zip(total, (*d, *p))]
        print(f"  {link[0] + ' -> ' + link[1]:38} {d[0]:5} / {d[1]:7} ({d[2]:3} msg)"
              f" {p[0]:5} / {p[1]:7} ({p[2]:3} msg)")
    print(f"  {'all links':38} {total[0]:5} / {total[1]:7} ({total[2]:3} msg)"
          f" {total[3]:5} / {total[4]:7} ({total[5]:3} msg)")
    print("  (both include the split and the heal; dmuc's its keepalives and the netjoin's "
          "resync)")
    print("\n  dmuc's split / netjoin events (seconds after the cut / the heal):")
    for what, at in dmuc["events"].items():
        print(f"    {what:40} {'-' if at is None else f'{at:.1f} s'}")


def main() -> int:
    state = Path("run").resolve()
    state.mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="dmuc-demo-"))
    if os.geteuid() == 0:
        workdir.chmod(0o755)
    muc = ComponentSpec(MOD_MUC, "", plugin="muc", options={"muc_room_locking": False})
    network = DmucNetwork(workdir, c2s_port=5222, log_level="info",
                          extra_components={MASTER_DOMAIN: [muc]})
    daemons: DmucDaemons | None = None
    stop = interruptible()
    try:
        network.start()
        daemons = DmucDaemons(network, state / "demo", keepalive=KEEPALIVE).start()
        print(f"dmuc is running: {len(network.servers)} Prosody servers linked by s2s, "
              f"dmuc-master as {MUC_SERVICE}, Prosody's mod_muc as {MOD_MUC}.")
        with LogWatcher.for_network(network, daemons) as logs:
            dmuc, plain = asyncio.run(Story(network, logs).run())
        report(dmuc, plain)
        print("\nServers (c2s address; any password works):")
        for server in network.servers.values():
            print(f"  {_describe(server)}")
        print(f"\nJoin {ROOM}@{MUC_SERVICE} with any client (Gajim, poezio, ...), e.g. as")
        for nick, jid in ACCOUNTS[:3]:
            server = network.server(jid)
            print(f"  {jid} at {server.ip}:{server.c2s_port} (nick {nick})")
        print(f"Daemon logs: {state}/demo/; Prosody logs: {workdir}/<domain>/prosody.log.\n"
              "Press Ctrl-C to stop.", flush=True)
        return watch(stop, [*daemons.all, *(s.prosody for s in network.servers.values())])
    except (TestbedError, TimeoutError) as exc:
        print(f"dmuc demo: {exc}", file=sys.stderr)
        return 1
    finally:
        if daemons is not None:
            daemons.stop()
        network.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        print("stopped.")


if __name__ == "__main__":
    sys.exit(main())

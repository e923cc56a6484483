"""Faults that look like a netsplit but lose nothing on the way (docs/protocol.md §4.11.4):
a link that stalls and then delivers everything it queued, a slave or the master stopped
(SIGSTOP) and resumed, a long split. Whatever the order in which the queued stanzas, the
resubmissions and the snapshot arrive, every user gets every message exactly once, in
each sender's order, and no rate limit refuses a replay."""

from __future__ import annotations

from collections import Counter

import pytest

from dmuc import xmlns
from dmuc.master.features.limits import Limits
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas
from dmuc.slave.link import LinkState
from tests.unit.dmuc_net import Net
from tests.unit.muc_helpers import BIGCHEESE, ROOM, VALDIS, WIZ, WUMPUS

KILLRC = "killrc.oulubox.irc"
DIRECT = "ludwig@efnet.irc/vt100"  # no slave on efnet.irc: a direct occupant
TALKERS = {WUMPUS: "Wumpus", VALDIS: "Valdis", WIZ: "WiZ", BIGCHEESE: "BigCheese",
           DIRECT: "Ludwig"}
KEEPALIVE = 5


class Traffic:
    """Every talker says one numbered line every `step` seconds; what each one received
    is kept (the room's groupchat bodies, in the order they arrived)."""

    def __init__(self, net: Net) -> None:
        self.net = net
        self.sent: list[str] = []
        self.got: dict[str, list[str]] = {who: [] for who in TALKERS}
        self.delayed: dict[str, set[str]] = {who: set() for who in TALKERS}
        self.said: dict[str, float] = {}  # body -> when its sender said it
        self.bad_stamps: list[str] = []  # delayed copies not stamped when said
        self.errors: list[str] = []
        self.count = 0

    def talk(self, seconds: float, step: float = 0.5) -> None:
        for _ in range(round(seconds / step)):
            self.count += 1
            for who, nick in TALKERS.items():
                body = f"{nick} {self.count}"
                self.sent.append(body)
                self.said[body] = self.net.now
                self.net.user_sends(f"<message from='{who}' to='{ROOM}' type='groupchat' "
                                    f"id='{nick}-{self.count}'><body>{body}</body></message>")
            self.net.tick(step)
            self.collect()

    def collect(self) -> None:
        for who in TALKERS:
            for stanza in self.net.take(who):
                if stanza.getAttribute("type") == "error":
                    self.errors.append(stanza.toXml())
                body = stanzas.child(stanza, "body")
                if stanza.name == "message" and body is not None \
                        and stanza.getAttribute("type") == "groupchat":
                    self.got[who].append(str(body))
                    delay = stanzas.child(stanza, "delay", xmlns.DELAY)
                    if delay is not None:
                        self.delayed[who].add(str(body))
                        self._check_stamp(who, str(body), delay)

    def _check_stamp(self, who: str, body: str, delay: stanzas.Element) -> None:
        """A copy delivered late says when it was said (whole seconds)."""
        stamp, said = stanzas.parse_stamp(delay.getAttribute("stamp", "")), self.said.get(body)
        if said is not None and (stamp is None or not said - 1 < stamp <= said + 0.5):
            self.bad_stamps.append(f"{body} at {who}: {delay.getAttribute('stamp')}")

    def settle(self) -> None:
        """Time passes without traffic until every link is LIVE again."""
        for _ in range(12):
            self.net.tick(KEEPALIVE)
            self.collect()
        for slave in self.net.slaves.values():
            assert {link.state for link in slave.links.values()} <= {LinkState.LIVE}

    def assert_exactly_once_in_order(self) -> None:
        """Every line once everywhere; each sender's lines delivered live in the order
        said, and those delivered late (a delay) stamped with when they were said."""
        assert self.errors == []
        assert self.bad_stamps == []
        for who in TALKERS:
            counts = Counter(self.got[who])
            lost = [b for b in self.sent if counts[b] == 0]
            twice = sorted(b for b, n in counts.items() if n > 1)
            assert (who, lost, twice) == (who, [], [])
            for nick in TALKERS.values():
                own = [int(b.split()[1]) for b in self.got[who]
                       if b.split()[0] == nick and b not in self.delayed[who]]
                assert own == sorted(own), (who, nick)


def talking_net(**settings: object) -> tuple[Net, Traffic]:
    net = Net(limits=Limits(), **settings)
    for slave in net.slaves.values():
        slave.settings.keepalive = KEEPALIVE
        slave.link_config = slave.link_config.__class__(
            slave.link_config.slave_jid, KEEPALIVE, slave.link_config.history,
            slave.link_config.new_id, slave.link_config.observer)
    for who, nick in TALKERS.items():
        net.join(who, nick, ROOM)
    traffic = Traffic(net)
    for who in TALKERS:
        net.take(who)
    traffic.talk(2)
    return net, traffic


@pytest.mark.parametrize("seconds", [6, 20, 70])
def test_a_stalled_link_that_resumes_delivers_everything_once(seconds):
    net, traffic = talking_net()
    net.stall(KILLRC)
    traffic.talk(seconds)
    net.resume_link(KILLRC)
    traffic.talk(3)
    traffic.settle()
    traffic.assert_exactly_once_in_order()


@pytest.mark.parametrize("seconds", [20, 70])
def test_a_cut_link_loses_nothing(seconds):
    net, traffic = talking_net()
    net.down.add(KILLRC)
    traffic.talk(seconds)
    net.down.clear()
    traffic.talk(3)
    traffic.settle()
    traffic.assert_exactly_once_in_order()


@pytest.mark.parametrize("seconds", [6, 30])
def test_a_link_blackholed_towards_the_slave_only_loses_nothing(seconds):
    """What avalon writes to killrc is lost, what killrc writes passes: the master's
    broadcasts go missing (the numbers show the gap) and its keepalives go unanswered."""
    net, traffic = talking_net()
    net.one_way.add(("avalon.irc", KILLRC))
    traffic.talk(seconds)
    net.one_way.clear()
    traffic.talk(3)
    traffic.settle()
    traffic.assert_exactly_once_in_order()


@pytest.mark.parametrize("seconds", [0.5, 2, 4])
def test_a_link_blackholed_towards_the_master_only_briefly_loses_nothing(seconds):
    """Shorter than the detection bound: no split is found, but the slave's numbers on
    what it forwards show the master the gap, and the slave sends the lost ones again
    (held, with their time: said before what came through after them)."""
    net, traffic = talking_net()
    net.one_way.add((KILLRC, "avalon.irc"))
    traffic.talk(seconds)
    net.one_way.clear()
    traffic.talk(3)
    traffic.settle()
    traffic.assert_exactly_once_in_order()
    assert net.slaves[KILLRC].links[ROOM].machine.state is LinkState.LIVE


def test_a_link_blackholed_towards_the_master_only_past_the_bound_loses_nothing():
    """What killrc writes to avalon is lost, what avalon writes passes: the slave keeps
    hearing the master, so only the master finds the split, and its pings say so; the
    slave holds from then on, with what it had in flight in front."""
    net, traffic = talking_net()
    net.one_way.add((KILLRC, "avalon.irc"))
    traffic.talk(30)
    assert net.slaves[KILLRC].links[ROOM].state is not LinkState.LIVE
    net.one_way.clear()
    traffic.talk(3)
    traffic.settle()
    traffic.assert_exactly_once_in_order()


@pytest.mark.parametrize("timers_first", [False, True])
@pytest.mark.parametrize("seconds", [6, 20, 70])
def test_a_paused_slave_that_resumes_loses_nothing(seconds, timers_first):
    net, traffic = talking_net()
    net.pause(KILLRC)
    traffic.talk(seconds)
    net.resume(KILLRC, timers_first=timers_first)
    traffic.talk(3)
    traffic.settle()
    traffic.assert_exactly_once_in_order()
    # what waited while it was stopped goes on with the time it was said (a delay the
    # traffic checks against when it was said), never the time the slave resumed
    assert {b for b in traffic.delayed[WIZ] if b.startswith(("Wumpus", "Valdis"))}


@pytest.mark.parametrize("timers_first", [False, True])
@pytest.mark.parametrize("seconds", [6, 20, 70])
def test_a_paused_master_that_resumes_duplicates_nothing(seconds, timers_first):
    net, traffic = talking_net()
    net.pause("avalon.irc")
    traffic.talk(seconds)
    net.resume("avalon.irc", timers_first=timers_first)
    traffic.talk(3)
    traffic.settle()
    traffic.assert_exactly_once_in_order()


def _sent_by_vesa(net: Net, xml: str) -> list[str]:
    """What the master got: the ids of Efchen's messages WiZ received."""
    net.user_sends(xml)
    return [m.getAttribute("id") for m in net.take(WIZ) if m.name == "message"]


def test_a_client_cannot_pass_for_a_replay_or_claim_a_time():
    """The held prefix and the held marker are the slave's alone: a client's are taken
    off before its message goes anywhere (a held message is not rate-limited, and keeps
    the time it claims). The resubmission prefix is mod_dmuc_slave's too (its replay
    after a crash of the slave): it stays, and costs the sender as any message unless
    the room drops it as a second copy."""
    net, traffic = talking_net()
    got = _sent_by_vesa(net, f"<message from='{BIGCHEESE}' to='{ROOM}' type='groupchat' "
                             "id='dmuc-split-dmuc-split-f1'><body>forged</body>"
                             "<x xmlns='urn:xmpp:tmp:dmuc:0'><held stamp='2000-01-01T00:00:00Z'/>"
                             "</x></message>")
    assert got == ["f1"]
    [entry] = [e for e in net.master.rooms[ROOM].history
               if str(stanzas.child(e.stanza, "body")) == "forged"]
    assert entry.stamp > 1_000_000


def test_replays_are_charged_to_the_slave_and_never_refused():
    """A long split holds far more than a user's burst: at the netjoin every held message
    goes through (the user spent its tokens when it typed them); a direct user's id that
    merely looks like a replay is charged as any other."""
    net, traffic = talking_net()
    net.down.add(KILLRC)
    for n in range(120):  # 2.4 bursts, said over 60 s
        net.user_sends(f"<message from='{WUMPUS}' to='{ROOM}' type='groupchat' id='b{n}'>"
                       f"<body>b{n}</body></message>")
        net.tick(0.5)
    net.down.clear()
    traffic.settle()
    assert [b for b in traffic.got[WIZ] if b.startswith("b")] == [f"b{n}" for n in range(120)]
    assert traffic.errors == []
    for _ in range(6):
        net.tick(1)  # the master's ticks, every second (a longer silence is a stop)
    for n in range(60):
        net.user_sends(f"<message from='{DIRECT}' to='{ROOM}' type='groupchat' "
                       f"id='dmuc-split-d{n}'><body>d{n}</body></message>")
    refused = [m for m in net.take(DIRECT) if m.getAttribute("type") == "error"]
    assert 5 <= len(refused) <= 10  # burst 50 (and the Net's clock moves a little)


def test_a_stopped_master_does_not_hold_its_senders_backlog_against_them():
    """SIGSTOP of the master for 30 s: a direct user's 60 messages said meanwhile arrive
    at once when it resumes; none is refused (more than a burst), and a flood after that
    is limited again."""
    net, traffic = talking_net()
    net.pause("avalon.irc")
    for n in range(60):
        net.user_sends(f"<message from='{DIRECT}' to='{ROOM}' type='groupchat' id='s{n}'>"
                       f"<body>s{n}</body></message>")
        net.tick(0.5)
    net.resume("avalon.irc")
    assert [m for m in net.take(DIRECT) if m.getAttribute("type") == "error"] == []
    for _ in range(6):
        net.tick(1)
    for n in range(60):
        net.user_sends(f"<message from='{DIRECT}' to='{ROOM}' type='groupchat' id='f{n}'>"
                       f"<body>f{n}</body></message>")
    refused = [m for m in net.take(DIRECT) if m.getAttribute("type") == "error"]
    assert 5 <= len(refused) <= 10  # burst 50 (and the Net's clock moves a little)


def test_a_slow_first_registration_gets_one_snapshot():
    """The first s2s connection can take longer than the slave waits for an answer to
    <register/> (keepalive/4): it sends it again, and both arrive. The retry keeps its
    id, so the master answers it without a second snapshot (issue 16: 9 message stanzas
    on that link instead of 5)."""
    net = Net(limits=Limits())
    net.join(DIRECT, "Ludwig", ROOM)
    killrc = net.slaves[KILLRC]
    snapshots = []
    start = killrc.fanout.resync_start
    killrc.fanout.resync_start = lambda room, out: (snapshots.append(room.jid),
                                                   start(room, out))
    net.stall(KILLRC)  # the s2s connection is being set up
    net.join(WUMPUS, "Wumpus", ROOM)
    net.tick(killrc.settings.keepalive / 4)
    net.tick(killrc.settings.keepalive / 4)
    net.resume_link(KILLRC)
    net.tick(1)
    assert snapshots == [ROOM]
    assert killrc.links[ROOM].state is LinkState.LIVE
    assert "Wumpus" in net.master.rooms[ROOM].occupants
    assert [s["from"] for s in net.take(WUMPUS) if s.name == "presence"][-1] == f"{ROOM}/Wumpus"


@pytest.mark.parametrize(("first", "second", "dropped"), [
    ("m1", "m1", False),  # a client may reuse an id: two plain copies are two messages
    ("m1", "dmuc-split-m1", True),  # held after a split, but the first copy had arrived
    ("m1", "dmuc-resent-m1", True),  # resubmitted after a restart, likewise
    ("dmuc-split-m1", "m1", True),  # the first copy, late on a slow link, after the replay
    ("dmuc-resent-m1", "m1", True),
    ("dmuc-split-m1", "dmuc-resent-dmuc-split-m1", True),  # replayed twice
    ("m1", "m2", False),
])
def test_which_second_copy_the_master_drops(first, second, dropped):
    net = Net()
    net.join(BIGCHEESE, "BigCheese", ROOM)
    room, distribution = net.master.rooms[ROOM], net.master.distribution
    out = Outbox(net.now)
    assert distribution._resubmitted(room, BIGCHEESE, first, out) is False
    assert distribution._resubmitted(room, DIRECT, second, out) is False  # another sender
    assert distribution._resubmitted(room, BIGCHEESE, second, out) is dropped
    assert out.deliveries == []  # never answered: not the user's error


def test_mod_dmuc_slave_replay_after_a_slave_crash_is_dropped_not_shown_twice():
    """mod_dmuc_slave hands a restarted slave the last seconds of groupchat again, with
    the resubmission prefix: the slave keeps it, the master drops what it had, and a
    client that merely uses the prefix gains nothing against its rate limit."""
    net, traffic = talking_net()
    net.user_sends(f"<message from='{BIGCHEESE}' to='{ROOM}' type='groupchat' id='k1'>"
                   "<body>before the crash</body></message>")
    net.user_sends(f"<message from='{BIGCHEESE}' to='{ROOM}' type='groupchat' "
                   "id='dmuc-resent-k1'><body>before the crash</body></message>")
    traffic.collect()
    assert traffic.got[WIZ].count("before the crash") == 1
    for _ in range(6):
        net.tick(1)
    for n in range(60):
        net.user_sends(f"<message from='{BIGCHEESE}' to='{ROOM}' type='groupchat' "
                       f"id='dmuc-resent-r{n}'><body>r{n}</body></message>")
    refused = [m for m in net.take(BIGCHEESE) if m.getAttribute("type") == "error"]
    assert 5 <= len(refused) <= 10  # burst 50

"""The JID-visibility rule as a property (issue 8 point 5), on the in-memory network of the
master and three slaves (dmuc_net.Net) plus direct users of efnet.irc.

For random rooms (whois anyone or moderators, moderated or not) and random sequences of
joins, leaves, role and affiliation changes by an owner (muc#admin), nick changes,
presence updates, whois changes (the owner's form) and groupchat messages:

* no occupant that is not a moderator ever receives a presence carrying another user's
  real JID (<item jid=...> in muc#user) while the room is semi-anonymous;
* no slave without a local moderator ever receives the real JID of a user it does not
  serve, while the room is semi-anonymous.

Each copy is judged against the master's state at the moment it leaves its sender (the
master, or the slave fanning a copy out), which is when the rule has to hold.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.words.xish.domish import Element

from dmuc import jids, xmlns
from dmuc.master.distribution import RegistrationState
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas
from tests.unit.dmuc_net import SLAVE_DOMAINS, Net, slave_jid
from tests.unit.muc_helpers import ROOM, SERVICE

DIRECT_DOMAIN = "efnet.irc"
# Two users on each slave's server (the first with a second session) and two direct ones.
USERS = [f"{name}@{domain}/{res}" for domain in SLAVE_DOMAINS
         for name, res in (("a", "laptop"), ("a", "phone"), ("b", "desk"))]
USERS += [f"{name}@{DIRECT_DOMAIN}/{res}" for name, res in (("ludwig", "vt100"),
                                                            ("ludwig", "phone"),
                                                            ("olaf", "vt100"))]
NICKS = ["n1", "n2", "n3", "n4", "n5"]
ROLES = ["moderator", "participant", "visitor", "none"]
AFFILIATIONS = ["admin", "member", "none", "owner"]
SLAVES = {slave_jid(d): d for d in SLAVE_DOMAINS}


@dataclass
class Leak:
    to: str
    shown: str
    stanza: str
    why: str


def real_jids(stanza: Element) -> list[str]:
    """Every <item jid=...> of a muc#user payload in `stanza` (at any depth)."""
    found = []
    stack = [stanza]
    while stack:
        el = stack.pop()
        for child in el.elements():
            if child.uri == xmlns.MUC_USER and child.name == "x":
                found += [i["jid"] for i in child.elements()
                          if i.name == "item" and i.getAttribute("jid")]
            stack.append(child)
    return found


class WatchedNet(Net):
    """A Net that judges every copy as it is sent (to a user's inbox, or to a slave)."""

    def __init__(self) -> None:
        self.leaks: list[Leak] = []
        super().__init__()

    def _route(self, out: Outbox, source: str) -> None:
        room = self.master.rooms.get(ROOM)
        for delivery in out.deliveries:
            self._own_jid_shown(delivery.stanza, delivery.recipients or
                                [delivery.stanza.getAttribute("to", "")], source)
        if room is not None and room.is_anonymous():
            for delivery in out.deliveries:
                shown = real_jids(delivery.stanza)
                if not shown:
                    continue
                for to in delivery.recipients or [delivery.stanza["to"]]:
                    self._judge(room, to, shown, delivery.stanza, source)
        super()._route(out, source)

    def _own_jid_shown(self, stanza: Element, recipients: list[str], source: str) -> None:
        """The other half of the rule: a user's own presence (status 110) always shows
        the user its own real JID, directly or through a slave (as mod_muc)."""
        if stanza.name != "presence" or not stanzas.has_status(stanza, "110") \
                or stanzas.muc_item(stanza) is None:
            return
        for to in recipients:
            if "@" in to and not any(jids.bare(j) == jids.bare(to) for j in real_jids(stanza)):
                self.leaks.append(Leak(to, "", stanza.toXml(),
                                       f"own presence without its real JID (from {source})"))

    def _judge(self, room, to: str, shown: list[str], stanza: Element, source: str) -> None:
        host = jids.bare(to).split("@")[-1]
        if to in SLAVES and source == SERVICE:
            served = SLAVES[to]
            moderators = [o.nick for o in room.occupants.values() if o.role == "moderator"
                          and any(jids.bare(s).split("@")[-1] == served for s in o.sessions)]
            if moderators:
                return
            for jid in shown:
                if jids.bare(jid).split("@")[-1] != served:
                    self.leaks.append(Leak(to, jid, stanza.toXml(),
                                           f"slave without a local moderator (from {source})"))
            return
        if "@" not in to or host == SERVICE:
            return
        occupant = room.occupant_by_session(to)
        role = occupant.role if occupant is not None else "none"
        if role == "moderator":
            return
        for jid in shown:
            if jids.bare(jid) == jids.bare(to):
                continue
            self.leaks.append(Leak(to, jid, stanza.toXml(), f"{role} (sent by {source})"))


@dataclass
class Scenario:
    net: WatchedNet
    events: list[str] = field(default_factory=list)

    def room(self):
        return self.net.master.rooms.get(ROOM)

    def nick_of(self, session: str) -> str | None:
        room = self.room()
        return room.nick_of.get(session) if room is not None else None

    def owner_session(self) -> str | None:
        room = self.room()
        if room is None:
            return None
        owners = {bare for bare, aff in room.affiliations.items() if aff == "owner"}
        joined = [s for s in USERS if jids.bare(s) in owners and s in room.nick_of]
        return (joined or [s for s in USERS if jids.bare(s) in owners] or [None])[0]

    def send(self, description: str, xml: str) -> None:
        self.events.append(description)
        self.net.user_sends(xml)


def owner_form(owner: str, **fields: str) -> str:
    values = "".join(f"<field var='muc#roomconfig_{k}'><value>{v}</value></field>"
                     for k, v in fields.items())
    return (f"<iq type='set' id='cfg' from='{owner}' to='{ROOM}'>"
            f"<query xmlns='{xmlns.MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'>"
            f"{values}</x></query></iq>")


def admin_item(owner: str, item: str) -> str:
    return (f"<iq type='set' id='adm' from='{owner}' to='{ROOM}'>"
            f"<query xmlns='{xmlns.MUC_ADMIN}'>{item}</query></iq>")


# Two leaks this property found, fixed since (each keeps its own regression test below):
# a session behind a slave moving to a nick of its own was told directly, not through the
# slave (now: LEAVE and ENTER through the slave); a whois change did not reach a STALE
# slave (now: every snapshot carries whois). Set to True to leave those events out again.
SKIP_SLAVE_SESSION_MOVES = False
SKIP_WHOIS_CHANGES_WITH_STALE_SLAVES = False
# A third, found after those: a session behind a slave moving into its user's other
# occupant kept its old role in the slave's moderator count (now recounted at the move).
SKIP_ROLE_CHANGING_MOVES_BEHIND_A_SLAVE = False


def changes_role_behind_a_slave(s: Scenario, who: str, new: str) -> bool:
    room = s.room()
    nick = s.nick_of(who)
    if room is None or nick is None or new == nick:
        return False
    holder = room.occupants.get(new)
    return (holder is not None and holder.role != room.occupants[nick].role
            and room.service.distribution.slave_of(room, who) is not None)


def a_slave_is_stale(s: Scenario) -> bool:
    links = s.net.master.distribution.links.get(ROOM, {})
    return any(link.state is RegistrationState.STALE for link in links.values())


def moves_a_session_behind_a_slave(s: Scenario, who: str, new: str) -> bool:
    room = s.room()
    nick = s.nick_of(who)
    if room is None or nick is None or new == nick:
        return False
    occupant, holder = room.occupants[nick], room.occupants.get(new)
    moves = len(occupant.sessions) > 1 or (holder is not None and holder is not occupant)
    return moves and room.service.distribution.slave_of(room, who) is not None


def step(s: Scenario, data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(["join", "join", "leave", "role", "affiliation", "nick",
                                      "update", "whois", "say"]))
    who = data.draw(st.sampled_from(USERS))
    nick = s.nick_of(who)
    new = data.draw(st.sampled_from(NICKS)) if kind in ("join", "nick") or nick is None else ""
    if SKIP_SLAVE_SESSION_MOVES and kind in ("join", "nick") \
            and moves_a_session_behind_a_slave(s, who, new):
        return
    if SKIP_ROLE_CHANGING_MOVES_BEHIND_A_SLAVE and kind in ("join", "nick") \
            and changes_role_behind_a_slave(s, who, new):
        return
    if kind == "join" or (nick is None and kind in ("leave", "nick", "update", "say")):
        s.send(f"{who} joins as {new}",
               f"<presence from='{who}' to='{ROOM}/{new}'><x xmlns='{xmlns.MUC}'>"
               "<history maxstanzas='0'/></x></presence>")
    elif kind == "leave":
        s.send(f"{who} ({nick}) leaves",
               f"<presence type='unavailable' from='{who}' to='{ROOM}/{nick}'/>")
    elif kind == "nick":
        s.send(f"{who} ({nick}) changes nick to {new}",
               f"<presence from='{who}' to='{ROOM}/{new}'/>")
    elif kind == "update":
        show = data.draw(st.sampled_from(["away", "dnd", "xa", "chat"]))
        s.send(f"{who} ({nick}) shows {show}",
               f"<presence from='{who}' to='{ROOM}/{nick}'><show>{show}</show></presence>")
    elif kind == "say":
        s.send(f"{who} ({nick}) says hi",
               f"<message from='{who}' to='{ROOM}' type='groupchat'><body>hi</body></message>")
    else:
        owner = s.owner_session()
        if owner is None:
            return
        room = s.room()
        if kind == "whois":
            whois = data.draw(st.sampled_from(["moderators", "anyone"]))
            if SKIP_WHOIS_CHANGES_WITH_STALE_SLAVES and a_slave_is_stale(s):
                return
            s.send(f"owner {owner} sets whois={whois}", owner_form(owner, whois=whois))
        elif kind == "role" and room is not None and room.occupants:
            target = data.draw(st.sampled_from(sorted(room.occupants)))
            role = data.draw(st.sampled_from(ROLES))
            s.send(f"owner {owner} sets role {role} on {target}",
                   admin_item(owner, f"<item nick='{target}' role='{role}'/>"))
        elif kind == "affiliation":
            target = jids.bare(data.draw(st.sampled_from(USERS)))
            affiliation = data.draw(st.sampled_from(AFFILIATIONS))
            s.send(f"owner {owner} sets affiliation {affiliation} on {target}",
                   admin_item(owner, f"<item jid='{target}' affiliation='{affiliation}'/>"))


# CI runs the same 100 examples every time (derandomized: a failure is a change, not luck);
# DMUC_PROPERTY_EXAMPLES=4000 explores afresh (random) for as many (about 70 ms each).
EXPLORE = int(os.environ.get("DMUC_PROPERTY_EXAMPLES", "0"))


@settings(max_examples=EXPLORE or 100, derandomize=not EXPLORE, database=None,
          deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), whois=st.sampled_from(["moderators", "anyone"]),
       moderated=st.booleans(), steps=st.integers(min_value=1, max_value=30))
def test_no_real_jid_reaches_anyone_who_may_not_see_it(data: st.DataObject, whois: str,
                                                       moderated: bool, steps: int) -> None:
    s = Scenario(WatchedNet())
    creator = data.draw(st.sampled_from(USERS))
    s.send(f"{creator} creates the room as n0",
           f"<presence from='{creator}' to='{ROOM}/n0'><x xmlns='{xmlns.MUC}'/></presence>")
    s.send(f"{creator} configures whois={whois} moderated={moderated}",
           owner_form(creator, whois=whois, moderatedroom="1" if moderated else "0"))
    for _ in range(steps):
        step(s, data)
        assert not s.net.leaks, _report(s)


def _report(s: Scenario) -> str:
    leak = s.net.leaks[0]
    return (f"{leak.to} ({leak.why}) was shown {leak.shown}:\n{leak.stanza}\nafter:\n  "
            + "\n  ".join(s.events))


def test_a_session_moving_nick_behind_a_slave_is_not_shown_real_jids() -> None:
    """Found by the property above (with SKIP_SLAVE_SESSION_MOVES off). One of two
    sessions of an occupant behind a slave moves to a nick of its own: the master tells
    that session directly, not through the slave, which still takes it for its old
    occupant. When another user takes the old nick, the slave fans that user's own
    presence (status 110, real JID) out to the moved session, a participant."""
    owner, laptop, phone = ("b@killrc.oulubox.irc/desk", "a@killrc.oulubox.irc/laptop",
                            "a@killrc.oulubox.irc/phone")
    s = Scenario(WatchedNet())

    def presence(who: str, nick: str, join: bool = True) -> None:
        x = f"<x xmlns='{xmlns.MUC}'/>" if join else ""
        s.send(f"{who} to {nick}", f"<presence from='{who}' to='{ROOM}/{nick}'>{x}</presence>")

    presence(owner, "n0")
    s.send("whois=moderators", owner_form(owner, whois="moderators"))
    presence(laptop, "n1")
    presence(phone, "n1")
    presence(laptop, "n2", join=False)  # laptop alone moves to n2
    assert s.room().nick_of[laptop] == "n2"
    slave_view = s.net.slaves["killrc.oulubox.irc"].rooms[ROOM].local[laptop]
    s.send("phone leaves", f"<presence type='unavailable' from='{phone}' to='{ROOM}/n1'/>")
    presence(owner, "n1", join=False)  # the owner takes the nick n1
    assert not s.net.leaks, _report(s)
    assert slave_view == "n2", "the slave still takes the moved session for n1"


def test_a_whois_change_reaches_a_slave_whose_users_were_kicked() -> None:
    """Found by the property above (with SKIP_WHOIS_CHANGES_WITH_STALE_SLAVES off). Vesa's
    only user is kicked: its slave stays registered, the master's link goes STALE. The
    room becomes semi-anonymous: only LIVE slaves are told. Two vesa users enter (the
    link is refreshed by a snapshot, without whois) and one is made moderator: the master
    now sends vesa real JIDs, and vesa's slave, still on whois=anyone, shows them to the
    other one, a participant."""
    owner, a, b = ("a@killrc.oulubox.irc/phone", "a@vesa.yeggmaex.irc/laptop",
                   "b@vesa.yeggmaex.irc/desk")
    s = Scenario(WatchedNet())

    def join(who: str, nick: str) -> None:
        s.send(f"{who} joins as {nick}",
               f"<presence from='{who}' to='{ROOM}/{nick}'><x xmlns='{xmlns.MUC}'/></presence>")

    join(owner, "owner")
    s.send("whois=anyone", owner_form(owner, whois="anyone"))
    join(a, "v1")
    s.send("v1 is kicked", admin_item(owner, "<item nick='v1' role='none'/>"))
    s.send("whois=moderators", owner_form(owner, whois="moderators"))
    join(a, "v1")
    join(b, "v2")
    s.send("v1 becomes a moderator", admin_item(owner, "<item nick='v1' role='moderator'/>"))
    assert not s.net.leaks, _report(s)


def test_a_moderator_moving_into_a_participant_leaves_no_moderator_behind_its_slave() -> None:
    """Found by the property above after the two fixes. Vesa's only moderator (a@vesa's
    phone, n2) moves into the nick of its user's other occupant (n3, a participant): the
    master still counts the phone as vesa's moderator, so the next presence goes to vesa
    with a real JID although no one there may see it."""
    owner, phone, laptop = ("a@killrc.oulubox.irc/phone", "a@vesa.yeggmaex.irc/phone",
                            "a@vesa.yeggmaex.irc/laptop")
    s = Scenario(WatchedNet())

    def join(who: str, nick: str) -> None:
        s.send(f"{who} joins as {nick}",
               f"<presence from='{who}' to='{ROOM}/{nick}'><x xmlns='{xmlns.MUC}'/></presence>")

    join(owner, "n0")
    s.send("whois=moderators", owner_form(owner, whois="moderators"))
    join(phone, "n2")
    s.send("n2 becomes a moderator", admin_item(owner, "<item nick='n2' role='moderator'/>"))
    join(laptop, "n3")
    join(phone, "n3")  # the phone moves into its user's other occupant, a participant
    s.send("the owner shows away",
           f"<presence from='{owner}' to='{ROOM}/n0'><show>away</show></presence>")
    assert not s.net.leaks, _report(s)

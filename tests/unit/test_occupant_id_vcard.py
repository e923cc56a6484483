"""XEP-0421 occupant-id and the room's vCard / avatar (XEP-0486), core to core: directly,
through slaves, across a netsplit and a master restart (as Prosody 0.12 / 13)."""

from __future__ import annotations

import base64
import hashlib

from dmuc import xmlns
from dmuc.master.features import disco, occupant_id, vcard
from dmuc.master.service import MUCService
from dmuc.protocol import occupant_id as oid
from dmuc.protocol import stanzas
from dmuc.records import RoomRecord
from dmuc.slave.link import LinkState
from tests.unit.dmuc_net import Net, slave_jid
from tests.unit.muc_helpers import (
    BIGCHEESE,
    EFCHEN,
    ROOM,
    TROY,
    WIZ,
    WUMPUS,
    Harness,
    error_condition,
)
from tests.unit.muc_steps import field_values, groupchat, iq, one, payload, private

DIRECT = "ludwig@efnet.irc/vt100"  # a user whose server has no slave
OTHER_ROOM = "other@channel.avalon.irc"
PHOTO = b"\x89PNG\r\n\x1a\n not really a png"
PHOTO_B64 = base64.b64encode(PHOTO).decode()
PHOTO_SHA1 = hashlib.sha1(PHOTO).hexdigest()  # noqa: S324
VCARD = (f"<vCard xmlns='vcard-temp'><FN>Wallops</FN><PHOTO><TYPE>image/png</TYPE>"
         f"<BINVAL>{PHOTO_B64[:10]}\n{PHOTO_B64[10:]}</BINVAL></PHOTO></vCard>")


def ids_in(stanza) -> list[str]:
    return [el["id"] for el in stanza.elements() if el.uri == xmlns.OCCUPANT_ID]


def from_nick(got, nick: str, kind: str = "presence", room: str = ROOM):
    return [s for s in got if s.name == kind and s.getAttribute("from") == f"{room}/{nick}"]


def test_the_id_is_prosodys_hmac_of_the_bare_jid_keyed_by_the_room_salt():
    # Computed with Prosody 0.12.3's own util.hashes / util.encodings:
    # b64encode(hmac_sha256("alice@example.org", "1b3e-salt"))
    assert occupant_id.compute("alice@example.org", "1b3e-salt") == \
        "jH2dLkYLGrcNC9+jqWTXbo4CGIv8Eci6RpL7imLuC5k="


def test_direct_presence_messages_and_pms_carry_the_senders_id_and_strip_forgeries():
    h = Harness(room_locking=False)
    h.join(WUMPUS, "Wumpus")
    out = h.send(f"<presence from='{TROY}' to='{ROOM}/Troy'>"
                 "<x xmlns='http://jabber.org/protocol/muc'/>"
                 "<occupant-id xmlns='urn:xmpp:occupant-id:0' id='forged'/></presence>")
    room = h.service.rooms[ROOM]
    troy_id = occupant_id.occupant_id(room, room.occupants["Troy"])
    wumpus_id = occupant_id.occupant_id(room, room.occupants["Wumpus"])
    assert troy_id != wumpus_id
    for delivery in out.deliveries:
        stanza = delivery.stanza
        if stanza.name == "presence" and stanza["from"] == f"{ROOM}/Troy":
            assert ids_in(stanza) == [troy_id]
            # after the user's payload, before the room's muc#user x (as Prosody)
            names = [el.uri for el in stanza.elements()]
            assert names.index(xmlns.OCCUPANT_ID) == names.index(xmlns.MUC_USER) - 1
        if stanza.name == "presence" and stanza["from"] == f"{ROOM}/Wumpus":
            assert ids_in(stanza) == [wumpus_id]  # the occupant list
    out = groupchat(h, TROY, extra="<occupant-id xmlns='urn:xmpp:occupant-id:0' id='x'/>")
    msg = out.deliveries[0].stanza
    assert ids_in(msg) == [troy_id]
    names = [el.uri for el in msg.elements()]
    assert names.index(xmlns.OCCUPANT_ID) == names.index(xmlns.STANZA_ID) - 1
    assert ids_in(room.history[-1].stanza) == [troy_id]  # history on join too
    out = private(h, TROY, "Wumpus")
    assert ids_in(one([d.stanza for d in out.deliveries])) == [troy_id]
    # a nick change (303 unavailable and the new presence) and the leave
    out = h.send(f"<presence from='{TROY}' to='{ROOM}/Troy2'/>")
    assert {tuple(ids_in(d.stanza)) for d in out.deliveries} == {(troy_id,)}
    out = h.send(f"<presence from='{TROY}' to='{ROOM}/Troy2' type='unavailable'/>")
    assert {tuple(ids_in(d.stanza)) for d in out.deliveries} == {(troy_id,)}
    # a subject change carries none (Prosody handles it before occupant_id)
    out = h.send(f"<message from='{WUMPUS}' to='{ROOM}' type='groupchat'>"
                 "<subject>s</subject></message>")
    assert all(ids_in(d.stanza) == [] for d in out.deliveries)


def test_id_is_stable_across_rejoin_and_restart_and_differs_across_rooms():
    h = Harness(room_locking=False)
    h.join(TROY, "Troy")
    h.join(WUMPUS, "Wumpus")
    h.create_instant(TROY, "Troy", OTHER_ROOM, persistentroom="1")
    h.create_instant(WUMPUS, "W", persistentroom="1")
    room = h.service.rooms[ROOM]
    first = occupant_id.occupant_id(room, room.occupants["Troy"])
    other = h.service.rooms[OTHER_ROOM]
    assert occupant_id.occupant_id(other, other.occupants["Troy"]) != first
    h.send(f"<presence from='{TROY}' to='{ROOM}/Troy' type='unavailable'/>")
    out = h.join(TROY.replace("screwdriver", "other"), "Troy-again")
    again = [d.stanza for d in out.deliveries if d.stanza["from"] == f"{ROOM}/Troy-again"]
    assert ids_in(again[0]) == [first]  # another session, another nick: the same id
    restored = MUCService(h.service.settings)
    restored.restore_room(RoomRecord(ROOM, room.to_state()), [])
    restored.receive(stanzas.parse_stanza(
        f"<presence from='{TROY}' to='{ROOM}/T'><x xmlns='http://jabber.org/protocol/muc'/>"
        "</presence>"), h.now + 1)
    room2 = restored.rooms[ROOM]
    assert occupant_id.occupant_id(room2, room2.occupants["T"]) == first


def test_disco_advertises_occupant_id_and_vcard():
    h = Harness(room_locking=False)
    h.join(WUMPUS, "Wumpus")
    assert xmlns.OCCUPANT_ID in disco.features(h.service.rooms[ROOM])
    assert xmlns.VCARD in disco.features(h.service.rooms[ROOM])
    assert xmlns.OCCUPANT_ID in [f["var"] for f in h.service.disco_info().elements()
                                 if f.name == "feature"]


def occupied_net() -> Net:
    net = Net()
    for who, nick in ((WUMPUS, "Wumpus"), (WIZ, "WiZ"), (EFCHEN, "Efchen"),
                      (DIRECT, "Ludwig")):
        net.join(who, nick, ROOM)
    for who in (WUMPUS, WIZ, EFCHEN, DIRECT):
        net.take(who)
    return net


def test_users_behind_every_slave_see_the_masters_ids():
    net = occupied_net()
    room = net.master.rooms[ROOM]
    expected = {nick: occupant_id.occupant_id(room, o) for nick, o in room.occupants.items()}
    net.join(BIGCHEESE, "BigCheese", ROOM)
    roster = net.take(BIGCHEESE)  # entered through the vesa slave: its roster, own presence
    for nick in ("Wumpus", "WiZ", "Efchen", "Ludwig"):
        assert ids_in(from_nick(roster, nick)[0]) == [expected[nick]]
    big = occupant_id.occupant_id(room, room.occupants["BigCheese"])
    assert ids_in(from_nick(roster, "BigCheese")[0]) == [big]
    for who in (WUMPUS, WIZ, DIRECT):  # killrc, eris slaves; direct
        assert [ids_in(p) for p in from_nick(net.take(who), "BigCheese")] == [[big]]
    net.user_sends(f"<message from='{BIGCHEESE}' to='{ROOM}' type='groupchat' id='m1'>"
                   "<body>hi</body><occupant-id xmlns='urn:xmpp:occupant-id:0' id='f'/>"
                   "</message>")
    for who in (WUMPUS, WIZ, DIRECT, BIGCHEESE):
        assert [ids_in(m) for m in from_nick(net.take(who), "BigCheese", "message")] == [[big]]
    # the slave's stored history keeps the master's id
    slave_room = net.slaves["vesa.yeggmaex.irc"].rooms[ROOM]
    assert ids_in(slave_room.history[-1].stanza) == [big]


def test_a_local_echo_during_a_netsplit_carries_the_masters_id():
    net = occupied_net()
    room = net.master.rooms[ROOM]
    efchen = occupant_id.occupant_id(room, room.occupants["Efchen"])
    link = net.master.distribution.link(ROOM, slave_jid("vesa.yeggmaex.irc"))
    net.down.add("vesa.yeggmaex.irc")
    net.tick(link.keepalive)
    net.tick(link.keepalive)
    assert net.slaves["vesa.yeggmaex.irc"].links[ROOM].state is LinkState.SPLIT
    net.user_sends(f"<message from='{EFCHEN}' to='{ROOM}' type='groupchat' id='s1'>"
                   "<body>alone</body><occupant-id xmlns='urn:xmpp:occupant-id:0' id='f'/>"
                   "</message>")
    [echo] = from_nick(net.take(EFCHEN), "Efchen", "message")
    assert ids_in(echo) == [efchen]
    assert oid.of(echo) == efchen


def test_destroy_through_a_slave_gives_each_local_occupant_its_own_id():
    net = occupied_net()
    net.join(BIGCHEESE, "BigCheese", ROOM)
    room = net.master.rooms[ROOM]
    ids = {n: occupant_id.occupant_id(room, o) for n, o in room.occupants.items()}
    for who in (WUMPUS, EFCHEN, BIGCHEESE):
        net.take(who)
    net.user_sends(f"<iq type='set' id='d' from='{WUMPUS}' to='{ROOM}'>"
                   "<query xmlns='http://jabber.org/protocol/muc#owner'><destroy/></query></iq>")
    for who, nick in ((EFCHEN, "Efchen"), (BIGCHEESE, "BigCheese"), (WUMPUS, "Wumpus")):
        [gone] = from_nick(net.take(who), nick)
        assert ids_in(gone) == [ids[nick]]


# --- the room's vCard -----------------------------------------------------------------


def set_vcard(h: Harness, who: str, body: str = VCARD):
    return iq(h, who, ROOM, "set", body, "v1")


def test_owner_sets_the_vcard_everyone_reads_it_and_the_hash_is_announced():
    h = Harness(room_locking=False)
    h.join(WUMPUS, "Wumpus")
    out = h.join(TROY, "Troy")
    assert not [d for d in out.deliveries if d.stanza["from"] == ROOM
                and d.stanza.name == "presence"]  # no avatar yet: no avatar presence
    out = iq(h, DIRECT, ROOM, "get", "<vCard xmlns='vcard-temp'/>")
    assert error_condition(out.deliveries[0].stanza) == "item-not-found"
    out = set_vcard(h, TROY)
    assert error_condition(out.deliveries[0].stanza) == "forbidden"
    out = set_vcard(h, WUMPUS)
    got = [d.stanza for d in out.deliveries]
    assert got[0]["type"] == "result"
    [presence] = [s for s in got if s.name == "presence"]
    assert presence["from"] == ROOM
    assert str(stanzas.child(stanzas.child(presence, "x", xmlns.VCARD_UPDATE),
                             "photo")) == PHOTO_SHA1
    [status] = [s for s in got if s.name == "message"]
    assert stanzas.child(stanzas.child(status, "x", xmlns.MUC_USER), "status")["code"] == "104"
    out = iq(h, DIRECT, ROOM, "get", "<vCard xmlns='vcard-temp'/>")
    card = payload(out.deliveries[0].stanza)
    assert card.name == "vCard" and card.uri == xmlns.VCARD
    binval = stanzas.child(stanzas.child(card, "PHOTO"), "BINVAL")
    assert base64.b64decode("".join(str(binval).split())) == PHOTO
    out = iq(h, DIRECT, ROOM, "get", f"<query xmlns='{xmlns.DISCO_INFO}'/>")
    form = stanzas.child(payload(out.deliveries[0].stanza), "x", xmlns.DATA_FORMS)
    assert field_values(form, "muc#roominfo_avatarhash") == [PHOTO_SHA1]
    out = h.join(DIRECT, "Ludwig")  # a newcomer gets the hash after the subject
    hello = [d.stanza for d in out.deliveries if d.stanza["from"] == ROOM][-1]
    assert hello.name == "presence" and str(stanzas.child(
        stanzas.child(hello, "x", xmlns.VCARD_UPDATE), "photo")) == PHOTO_SHA1


def test_a_vcard_over_the_limit_or_with_a_bad_photo_is_refused():
    h = Harness(room_locking=False)
    h.join(WUMPUS, "Wumpus")
    big = "A" * (vcard.MAX_VCARD_CHARS + 4)
    out = set_vcard(h, WUMPUS, f"<vCard xmlns='vcard-temp'><PHOTO><BINVAL>{big}</BINVAL>"
                               "</PHOTO></vCard>")
    assert error_condition(out.deliveries[0].stanza) == "not-acceptable"
    out = set_vcard(h, WUMPUS, "<vCard xmlns='vcard-temp'><PHOTO><BINVAL>*not base64*"
                               "</BINVAL></PHOTO></vCard>")
    assert error_condition(out.deliveries[0].stanza) == "bad-request"
    assert vcard.stored_vcard(h.service.rooms[ROOM]) is None


def test_the_vcard_survives_a_restart():
    h = Harness(room_locking=False)
    h.create_instant(WUMPUS, "Wumpus", persistentroom="1")
    set_vcard(h, WUMPUS)
    restored = MUCService(h.service.settings)
    room = restored.restore_room(RoomRecord(ROOM, h.service.rooms[ROOM].to_state()), [])
    assert vcard.avatar_hash(room) == PHOTO_SHA1
    assert stanzas.child(vcard.stored_vcard(room), "FN") is not None


def test_users_behind_slaves_get_the_avatar_hash_and_read_the_vcard():
    net = occupied_net()
    net.user_sends(f"<iq type='set' id='v' from='{WUMPUS}' to='{ROOM}'>{VCARD}</iq>")
    got = net.take(WUMPUS)
    assert [s["type"] for s in got if s.name == "iq"] == ["result"]
    for who in (WUMPUS, WIZ, EFCHEN, DIRECT):  # killrc, eris, vesa slaves; direct
        seen = got if who == WUMPUS else net.take(who)
        [hashes] = [s for s in seen if s.name == "presence" and s["from"] == ROOM]
        photo = stanzas.child(stanzas.child(hashes, "x", xmlns.VCARD_UPDATE), "photo")
        assert str(photo) == PHOTO_SHA1
        assert any(s.name == "message" and s["from"] == ROOM for s in seen)  # 104
    # a newcomer behind a slave gets it in its ENTER sequence
    net.join(BIGCHEESE, "BigCheese", ROOM)
    seen = net.take(BIGCHEESE)
    [hashes] = [s for s in seen if s.name == "presence" and s["from"] == ROOM]
    assert str(stanzas.child(stanzas.child(hashes, "x", xmlns.VCARD_UPDATE),
                             "photo")) == PHOTO_SHA1
    net.user_sends(f"<iq type='get' id='g' from='{BIGCHEESE}' to='{ROOM}'>"
                   "<vCard xmlns='vcard-temp'/></iq>")
    [answer] = [s for s in net.take(BIGCHEESE) if s.name == "iq"]
    assert answer["type"] == "result" and payload(answer).name == "vCard"


def split_vesa(net: Net) -> None:
    link = net.master.distribution.link(ROOM, slave_jid("vesa.yeggmaex.irc"))
    net.down.add("vesa.yeggmaex.irc")
    net.tick(link.keepalive)
    net.tick(link.keepalive)
    assert net.slaves["vesa.yeggmaex.irc"].links[ROOM].state is LinkState.SPLIT


def heal(net: Net) -> None:
    net.down.clear()
    for _ in range(4):
        net.tick(15)
    assert net.slaves["vesa.yeggmaex.irc"].links[ROOM].state is LinkState.LIVE


def test_what_changed_during_a_netsplit_reaches_the_split_side_with_the_masters_ids():
    """The vCard set and a user who left while vesa was split: at the netjoin the
    snapshot brings the new avatar hash and the departure, with the leaver's id."""
    net = occupied_net()
    room = net.master.rooms[ROOM]
    wiz = occupant_id.occupant_id(room, room.occupants["WiZ"])
    split_vesa(net)
    net.user_sends(f"<iq type='set' id='v' from='{WUMPUS}' to='{ROOM}'>{VCARD}</iq>")
    net.user_sends(f"<presence from='{WIZ}' to='{ROOM}/WiZ' type='unavailable'/>")
    net.take(EFCHEN)
    heal(net)
    got = net.take(EFCHEN)
    [hashes] = [s for s in got if s.name == "presence" and s["from"] == ROOM]
    assert str(stanzas.child(stanzas.child(hashes, "x", xmlns.VCARD_UPDATE),
                             "photo")) == PHOTO_SHA1
    [gone] = [s for s in from_nick(got, "WiZ") if s.getAttribute("type") == "unavailable"]
    assert ids_in(gone) == [wiz]


def test_the_slave_keeps_the_avatar_across_its_restart():
    net = occupied_net()
    net.user_sends(f"<iq type='set' id='v' from='{WUMPUS}' to='{ROOM}'>{VCARD}</iq>")
    slave_room = net.slaves["vesa.yeggmaex.irc"].rooms[ROOM]
    restored = type(slave_room).from_state(ROOM, slave_room.to_state(),
                                           slave_room.all_entries())
    assert restored.avatar is not None and restored.avatar.toXml() == slave_room.avatar.toXml()


def test_each_occupants_id_is_computed_once_however_many_copies(monkeypatch):
    calls = []
    real = occupant_id.compute
    monkeypatch.setattr(occupant_id, "compute",
                        lambda bare, salt: calls.append(bare) or real(bare, salt))
    net = occupied_net()  # 4 occupants, 3 slaves, one direct user: many copies each
    for n in range(5):
        net.user_sends(f"<message from='{WIZ}' to='{ROOM}' type='groupchat'><body>{n}</body>"
                       "</message>")
        net.user_sends(f"<presence from='{WIZ}' to='{ROOM}/WiZ'><status>{n}</status>"
                       "</presence>")
    assert sorted(calls) == sorted(b.split("/")[0] for b in (WUMPUS, WIZ, EFCHEN, DIRECT))

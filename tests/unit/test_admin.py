"""muc#admin: roles and affiliations (XEP-0045 §8, §9), with Prosody mod_muc's permissions."""

from __future__ import annotations

from dmuc import xmlns
from dmuc.outbox import SaveRoom
from dmuc.protocol import stanzas
from tests.unit.muc_helpers import (
    BIGCHEESE,
    EFCHEN,
    PHAEDRUS,
    ROOM,
    TROY,
    VALDIS,
    WIZ,
    WUMPUS,
    Harness,
    codes,
    error_condition,
    item,
)
from tests.unit.muc_steps import (
    admin_get,
    admin_set,
    groupchat,
    leave,
    one,
    owner_submit,
    payload,
    presence_from,
    presences,
)

TROY_BARE = "troy@eris.dclxvii.irc"
WUMPUS_BARE = "argl@killrc.oulubox.irc"
VALDIS_BARE = "valdis@killrc.oulubox.irc"
BIGCHEESE_BARE = "rubenro@vesa.yeggmaex.irc"


def _room(**config: str) -> Harness:
    h = Harness()
    h.create_instant(WIZ, "wiz", **config)
    h.join(TROY, "troy")
    h.join(WUMPUS, "wumpus")
    return h


def _result(out, who):
    reply = one([s for s in out.stanzas_for(who) if s.name == "iq"])
    assert reply["type"] == "result", reply.toXml()
    return reply


def _error(out, who):
    reply = one([s for s in out.stanzas_for(who) if s.name == "iq"])
    assert reply["type"] == "error", reply.toXml()
    return error_condition(reply)


def _actor(pres):
    x = stanzas.child(pres, "x", xmlns.MUC_USER)
    it = stanzas.child(x, "item")
    actor = stanzas.child(it, "actor")
    reason = stanzas.child(it, "reason")
    return (actor.getAttribute("nick") if actor is not None else None,
            str(reason) if reason is not None else None)


def _listed(out, who):
    return {(i.getAttribute("jid"), i.getAttribute("nick"))
            for i in stanzas.children(payload(_result(out, who)), "item")}


# --- kicking -------------------------------------------------------------------------------


def test_moderator_kicks_participant_with_307_actor_and_reason():
    h = _room()
    out = admin_set(h, WIZ, "<item nick='troy' role='none'><reason>Avaunt ye</reason></item>")
    _result(out, WIZ)
    own = one(presences(out, TROY))
    assert own["type"] == "unavailable"
    assert {"307", "110"} <= codes(own)
    assert item(own)["role"] == "none"
    assert _actor(own) == ("wiz", "Avaunt ye")
    for other in (WIZ, WUMPUS):
        seen = one(presence_from(out, other, "troy"))
        assert seen["type"] == "unavailable"
        assert "307" in codes(seen) and "110" not in codes(seen)
        assert _actor(seen) == ("wiz", "Avaunt ye")
    assert "troy" not in h.service.rooms[ROOM].occupants
    # A kick is not a ban.
    assert "110" in codes(one(presence_from(h.join(TROY, "troy"), TROY, "troy")))


def test_kick_removes_every_session():
    h = _room()
    hammer = "troy@eris.dclxvii.irc/hammer"
    h.join(hammer, "troy")
    out = admin_set(h, WIZ, "<item nick='troy' role='none'/>")
    for session in (TROY, hammer):
        assert {"307", "110"} <= codes(one(presences(out, session)))
    assert not h.service.rooms[ROOM].occupants_of(TROY_BARE)


def test_kick_of_unknown_nick_fails():
    h = _room()
    assert _error(admin_set(h, WIZ, "<item nick='nobody' role='none'/>"), WIZ) == \
        "item-not-found"


def test_participant_may_not_kick():
    h = _room()
    out = admin_set(h, TROY, "<item nick='wumpus' role='none'/>")
    assert _error(out, TROY) == "forbidden"
    assert out.stanzas_for(WUMPUS) == []
    assert "wumpus" in h.service.rooms[ROOM].occupants


def test_nobody_kicks_an_owner_or_admin():
    h = _room()
    admin_set(h, WIZ, f"<item affiliation='admin' jid='{TROY_BARE}'/>")
    # An admin cannot kick the owner.
    assert _error(admin_set(h, TROY, "<item nick='wiz' role='none'/>"), TROY) == "not-allowed"
    # Nor can a moderator by role kick an admin.
    admin_set(h, WIZ, "<item nick='wumpus' role='moderator'/>")
    assert h.service.rooms[ROOM].occupants["wumpus"].role == "moderator"
    out = admin_set(h, WUMPUS, "<item nick='troy' role='none'/>")
    assert _error(out, WUMPUS) == "not-allowed"
    assert "troy" in h.service.rooms[ROOM].occupants


def test_moderator_by_role_cannot_touch_other_moderators():
    h = _room()
    h.join(VALDIS, "valdis")
    admin_set(h, WIZ, "<item nick='wumpus' role='moderator'/>")
    admin_set(h, WIZ, "<item nick='valdis' role='moderator'/>")
    assert _error(admin_set(h, WUMPUS, "<item nick='valdis' role='none'/>"), WUMPUS) == \
        "not-allowed"
    assert _error(admin_set(h, WUMPUS, "<item nick='valdis' role='participant'/>"), WUMPUS) == \
        "not-allowed"
    # But it may kick a participant.
    _result(admin_set(h, WUMPUS, "<item nick='troy' role='none'/>"), WUMPUS)
    assert "troy" not in h.service.rooms[ROOM].occupants


# --- voice and moderation ------------------------------------------------------------------------


def test_voice_grant_and_revoke_in_moderated_room():
    h = _room(moderatedroom="1")
    room = h.service.rooms[ROOM]
    assert room.occupants["troy"].role == "visitor"
    out = admin_set(h, WIZ, "<item nick='troy' role='participant'><reason>Speak</reason></item>")
    _result(out, WIZ)
    for who in (WIZ, TROY, WUMPUS):
        pres = one(presence_from(out, who, "troy"))
        assert pres.getAttribute("type") is None
        assert item(pres)["role"] == "participant"
    assert "110" in codes(one(presence_from(out, TROY, "troy")))
    assert _actor(one(presence_from(out, TROY, "troy"))) == ("wiz", "Speak")
    assert room.occupants["troy"].role == "participant"
    assert groupchat(h, TROY, "I can speak").stanzas_for(WUMPUS)
    out = admin_set(h, WIZ, "<item nick='troy' role='visitor'/>")
    assert item(one(presence_from(out, WUMPUS, "troy")))["role"] == "visitor"
    assert error_condition(one(groupchat(h, TROY).stanzas_for(TROY))) == "forbidden"


def test_moderator_grant_only_by_admin_or_owner():
    h = _room()
    out = admin_set(h, WIZ, "<item nick='troy' role='moderator'/>")
    _result(out, WIZ)
    assert item(one(presence_from(out, WUMPUS, "troy")))["role"] == "moderator"
    # Troy moderates now but is no admin: may not make more moderators.
    out = admin_set(h, TROY, "<item nick='wumpus' role='moderator'/>")
    assert _error(out, TROY) == "not-allowed"
    assert h.service.rooms[ROOM].occupants["wumpus"].role == "participant"
    # An admin may revoke moderation.
    _result(admin_set(h, WIZ, "<item nick='troy' role='participant'/>"), WIZ)
    assert h.service.rooms[ROOM].occupants["troy"].role == "participant"


def test_role_list_for_moderators_only():
    h = _room(moderatedroom="1")
    out = admin_get(h, WIZ, "role='visitor'")
    assert {n for _, n in _listed(out, WIZ)} == {"troy", "wumpus"}
    out = admin_get(h, WIZ, "role='moderator'")
    assert _listed(out, WIZ) == {(WIZ, "wiz")}
    assert _error(admin_get(h, TROY, "role='moderator'"), TROY) == "forbidden"


def test_unknown_role_or_affiliation_is_bad_request():
    h = _room()
    assert _error(admin_set(h, WIZ, "<item nick='troy' role='king'/>"), WIZ) == "bad-request"
    assert _error(admin_set(h, WIZ, f"<item jid='{TROY_BARE}' affiliation='king'/>"), WIZ) == \
        "bad-request"
    assert _error(admin_set(h, WIZ, ""), WIZ) == "bad-request"


# --- affiliations ---------------------------------------------------------------------------------


def test_ban_with_301_and_outcast_list():
    h = _room()
    out = admin_set(h, WIZ, f"<item affiliation='outcast' jid='{TROY_BARE}'>"
                            "<reason>Treason</reason></item>")
    _result(out, WIZ)
    own = one(presences(out, TROY))
    assert own["type"] == "unavailable"
    assert {"301", "110"} <= codes(own)
    assert item(own)["affiliation"] == "outcast" and item(own)["role"] == "none"
    assert _actor(own) == ("wiz", "Treason")
    seen = one(presence_from(out, WUMPUS, "troy"))
    assert "301" in codes(seen) and "jid" not in item(seen)
    assert _listed(admin_get(h, WIZ, "affiliation='outcast'"), WIZ) == {(TROY_BARE, None)}
    assert error_condition(one(h.join(TROY, "troy").stanzas_for(TROY))) == "forbidden"
    # Lifting the ban.
    _result(admin_set(h, WIZ, f"<item affiliation='none' jid='{TROY_BARE}'/>"), WIZ)
    assert _listed(admin_get(h, WIZ, "affiliation='outcast'"), WIZ) == set()
    assert "110" in codes(one(presence_from(h.join(TROY, "troy"), TROY, "troy")))


def test_ban_by_nick():
    h = _room()
    _result(admin_set(h, WIZ, "<item affiliation='outcast' nick='wumpus'/>"), WIZ)
    assert h.service.rooms[ROOM].affiliations[WUMPUS_BARE] == "outcast"
    assert "wumpus" not in h.service.rooms[ROOM].occupants


def test_ban_of_someone_not_in_the_room():
    h = _room()
    out = admin_set(h, WIZ, f"<item affiliation='outcast' jid='{BIGCHEESE_BARE}'/>")
    _result(out, WIZ)
    assert presences(out, TROY) == []
    assert error_condition(one(h.join(BIGCHEESE, "cheese").stanzas_for(BIGCHEESE))) == \
        "forbidden"


def test_participant_may_not_ban():
    h = _room()
    assert _error(admin_set(h, TROY, f"<item affiliation='outcast' jid='{WUMPUS_BARE}'/>"),
                  TROY) == "forbidden"
    assert WUMPUS_BARE not in h.service.rooms[ROOM].affiliations


def test_admin_may_not_ban_or_demote_owner_or_create_admins():
    h = _room()
    admin_set(h, WIZ, f"<item affiliation='admin' jid='{TROY_BARE}'/>")
    wiz_bare = "squit@eris.dclxvii.irc"
    assert _error(admin_set(h, TROY, f"<item affiliation='outcast' jid='{wiz_bare}'/>"),
                  TROY) == "not-allowed"
    assert _error(admin_set(h, TROY, f"<item affiliation='admin' jid='{WUMPUS_BARE}'/>"),
                  TROY) == "not-allowed"
    assert _error(admin_set(h, TROY, f"<item affiliation='owner' jid='{TROY_BARE}'/>"),
                  TROY) == "not-allowed"
    # But an admin manages members and outcasts.
    _result(admin_set(h, TROY, f"<item affiliation='member' jid='{WUMPUS_BARE}'/>"), TROY)
    assert h.service.rooms[ROOM].affiliations[WUMPUS_BARE] == "member"


def test_member_list_editing():
    h = _room()
    out = admin_set(h, WIZ, f"<item affiliation='member' jid='{TROY_BARE}'/>"
                            f"<item affiliation='member' jid='{BIGCHEESE_BARE}'/>")
    _result(out, WIZ)
    assert _listed(admin_get(h, WIZ, "affiliation='member'"), WIZ) == {
        (TROY_BARE, None), (BIGCHEESE_BARE, None)}
    _result(admin_set(h, WIZ, f"<item affiliation='none' jid='{BIGCHEESE_BARE}'/>"), WIZ)
    assert _listed(admin_get(h, WIZ, "affiliation='member'"), WIZ) == {(TROY_BARE, None)}
    # Unaffiliated occupants cannot read the list of an open room.
    assert _error(admin_get(h, WUMPUS, "affiliation='member'"), WUMPUS) == "forbidden"


def test_members_see_lists_of_non_anonymous_members_only_room():
    # Prosody 0.12 (after CVE-2021-37601): members read the lists only where JIDs are
    # public anyway.
    h = Harness()
    h.create_instant(WIZ, "wiz", membersonly="1", whois="anyone")
    admin_set(h, WIZ, f"<item affiliation='member' jid='{TROY_BARE}'/>")
    h.join(TROY, "troy")
    assert _listed(admin_get(h, TROY, "affiliation='member'"), TROY) == {(TROY_BARE, None)}
    assert _listed(admin_get(h, TROY, "affiliation='owner'"), TROY) == {
        ("squit@eris.dclxvii.irc", None)}


def test_members_may_not_read_lists_of_semi_anonymous_room():
    h = Harness()
    h.create_instant(WIZ, "wiz", membersonly="1")
    admin_set(h, WIZ, f"<item affiliation='member' jid='{TROY_BARE}'/>"
                      f"<item affiliation='member' jid='{VALDIS_BARE}'/>")
    h.join(TROY, "troy")
    assert _error(admin_get(h, TROY, "affiliation='member'"), TROY) == "forbidden"
    assert _error(admin_get(h, TROY, "affiliation='owner'"), TROY) == "forbidden"


def test_affiliation_change_is_broadcast():
    h = _room()
    out = admin_set(h, WIZ, f"<item affiliation='member' jid='{TROY_BARE}'/>")
    for who in (WIZ, TROY, WUMPUS):
        pres = one(presence_from(out, who, "troy"))
        assert pres.getAttribute("type") is None
        assert item(pres)["affiliation"] == "member"
        assert item(pres)["role"] == "participant"
    assert "110" in codes(one(presence_from(out, TROY, "troy")))
    out = admin_set(h, WIZ, f"<item affiliation='admin' jid='{TROY_BARE}'/>")
    assert item(one(presence_from(out, WUMPUS, "troy"))) == {"affiliation": "admin",
                                                            "role": "moderator"}


def test_membership_gives_voice_in_moderated_room():
    h = _room(moderatedroom="1")
    out = admin_set(h, WIZ, f"<item affiliation='member' jid='{TROY_BARE}'/>")
    assert item(one(presence_from(out, WUMPUS, "troy")))["role"] == "participant"


def test_demoted_admin_loses_moderation():
    h = _room()
    admin_set(h, WIZ, f"<item affiliation='admin' jid='{TROY_BARE}'/>")
    out = admin_set(h, WIZ, f"<item affiliation='member' jid='{TROY_BARE}'/>")
    assert item(one(presence_from(out, WUMPUS, "troy")))["role"] == "participant"


def test_membership_does_not_take_away_a_granted_moderator_role():
    # Prosody's set_affiliation only changes the role on a downgrade or when the new
    # default role is higher.
    h = _room()
    admin_set(h, WIZ, "<item nick='troy' role='moderator'/>")
    out = admin_set(h, WIZ, f"<item affiliation='member' jid='{TROY_BARE}'/>")
    pres = one(presence_from(out, WUMPUS, "troy"))
    assert item(pres)["affiliation"] == "member"
    assert item(pres)["role"] == "moderator"


def test_last_owner_cannot_drop_ownership():
    h = _room()
    wiz_bare = "squit@eris.dclxvii.irc"
    for aff in ("admin", "member", "none", "outcast"):
        out = admin_set(h, WIZ, f"<item affiliation='{aff}' jid='{wiz_bare}'/>")
        assert _error(out, WIZ) == "conflict"
    assert h.service.rooms[ROOM].affiliations[wiz_bare] == "owner"
    # With a second owner it can.
    _result(admin_set(h, WIZ, f"<item affiliation='owner' jid='{TROY_BARE}'/>"), WIZ)
    out = admin_set(h, WIZ, f"<item affiliation='admin' jid='{wiz_bare}'/>")
    _result(out, WIZ)
    assert h.service.rooms[ROOM].affiliations[wiz_bare] == "admin"
    assert _listed(admin_get(h, TROY, "affiliation='owner'"), TROY) == {(TROY_BARE, None)}


def test_members_only_removal_gives_321():
    h = Harness()
    h.create_instant(WIZ, "wiz", membersonly="1")
    admin_set(h, WIZ, f"<item affiliation='member' jid='{TROY_BARE}'/>")
    h.join(TROY, "troy")
    out = admin_set(h, WIZ, f"<item affiliation='none' jid='{TROY_BARE}'/>")
    _result(out, WIZ)
    own = one(presences(out, TROY))
    assert own["type"] == "unavailable"
    assert {"321", "110"} <= codes(own)
    assert item(own)["affiliation"] == "none" and item(own)["role"] == "none"
    assert "321" in codes(one(presence_from(out, WIZ, "troy")))
    assert "troy" not in h.service.rooms[ROOM].occupants


def test_the_actors_real_jid_goes_only_to_whom_may_see_real_jids():
    """As mod_muc 0.12.3: <actor nick jid/> to the moderators of a semi-anonymous room,
    <actor nick/> to the participants and to the removed member itself."""
    h = Harness()
    h.create_instant(WIZ, "wiz", membersonly="1")
    for bare in (TROY_BARE, VALDIS_BARE):
        admin_set(h, WIZ, f"<item affiliation='member' jid='{bare}'/>")
    h.join(TROY, "troy")
    h.join(VALDIS, "valdis")
    out = admin_set(h, WIZ, f"<item affiliation='none' jid='{TROY_BARE}'/>")
    for viewer, actor_jid in ((WIZ, WIZ), (VALDIS, None), (TROY, None)):
        seen = one(presence_from(out, viewer, "troy"))
        actor = stanzas.child(stanzas.muc_item(seen), "actor")
        assert "321" in codes(seen) and actor["nick"] == "wiz"
        assert actor.getAttribute("jid") == actor_jid, (viewer, seen.toXml())


def test_an_affiliation_item_with_a_nick_reserves_it():
    """As mod_muc 0.12: <item affiliation jid nick/> reserves the nick for the JID (the
    member list shows it, a probe of it names the member); someone else holding it is
    kicked ("This nickname is reserved"); taking the affiliation away drops it."""
    h = _room()
    out = admin_set(h, WIZ, f"<item affiliation='member' jid='{BIGCHEESE_BARE}' nick='troy'/>")
    _result(out, WIZ)
    kicked = one(presence_from(out, TROY, "troy"))
    assert {"307", "110"} <= codes(kicked) and _actor(kicked) == (None,
                                                                  "This nickname is reserved")
    room = h.service.rooms[ROOM]
    assert room.reserved_nicks[BIGCHEESE_BARE] == "troy" and "troy" not in room.occupants
    assert _listed(admin_get(h, WIZ, "affiliation='member'"), WIZ) == {(BIGCHEESE_BARE, "troy")}
    # the holder's own nick is no conflict; a later item without a nick keeps it
    _result(admin_set(h, WIZ, f"<item affiliation='admin' jid='{BIGCHEESE_BARE}'/>"), WIZ)
    assert room.reserved_nicks[BIGCHEESE_BARE] == "troy"
    _result(admin_set(h, WIZ, f"<item affiliation='none' jid='{BIGCHEESE_BARE}'/>"), WIZ)
    assert BIGCHEESE_BARE not in room.reserved_nicks


def test_removing_membership_in_open_room_keeps_occupant():
    h = _room()
    admin_set(h, WIZ, f"<item affiliation='member' jid='{TROY_BARE}'/>")
    out = admin_set(h, WIZ, f"<item affiliation='none' jid='{TROY_BARE}'/>")
    pres = one(presence_from(out, WUMPUS, "troy"))
    assert pres.getAttribute("type") is None
    assert item(pres) == {"affiliation": "none", "role": "participant"}


def test_invalid_item_applies_nothing():
    h = _room()
    out = admin_set(h, WIZ, f"<item affiliation='member' jid='{TROY_BARE}'/>"
                            "<item nick='nobody' role='none'/>")
    assert _error(out, WIZ) == "item-not-found"
    assert TROY_BARE not in h.service.rooms[ROOM].affiliations
    assert presences(out, TROY) == []


def test_affiliation_change_of_persistent_room_is_saved():
    h = _room(persistentroom="1")
    out = admin_set(h, WIZ, f"<item affiliation='member' jid='{EFCHEN.split('/')[0]}'/>")
    saved = [op for op in out.storage if isinstance(op, SaveRoom)]
    assert saved and saved[-1].state["affiliations"]["msa@vesa.yeggmaex.irc"] == "member"


def test_service_admin_is_owner_everywhere():
    h = Harness(admins=frozenset({BIGCHEESE_BARE}))
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    out = h.join(BIGCHEESE, "cheese")
    assert item(one(presence_from(out, BIGCHEESE, "cheese")))["affiliation"] == "owner"
    _result(admin_set(h, BIGCHEESE, "<item nick='troy' role='none'/>"), BIGCHEESE)


# --- semi-anonymity ----------------------------------------------------------------------------


REAL_JIDS = (WIZ, TROY, WUMPUS, VALDIS, PHAEDRUS, "troy@eris.dclxvii.irc/hammer")


def _leaks(out, viewer: str) -> list[str]:
    """Presences `viewer` got that show another user's real JID."""
    viewer_bare = viewer.split("/")[0]
    found = []
    for pres in presences(out, viewer):
        for x in stanzas.children(pres, "x", xmlns.MUC_USER):
            for it in stanzas.children(x, "item"):
                jid = it.getAttribute("jid")
                if jid is not None and jid.split("/")[0] != viewer_bare:
                    found.append(pres.toXml())
        if any(j.split("/")[0] in pres.toXml() for j in REAL_JIDS
               if j.split("/")[0] != viewer_bare):
            found.append(pres.toXml())
    return found


def test_semi_anonymous_room_never_shows_jids_to_participants():
    h = Harness()
    seen: list = []

    def step(out):
        seen.extend(_leaks(out, TROY))
        return out

    h.create_instant(WIZ, "wiz")
    step(h.join(TROY, "troy"))
    step(h.join(WUMPUS, "wumpus"))
    step(h.join(VALDIS, "valdis"))
    step(h.join("troy@eris.dclxvii.irc/hammer", "troy"))
    step(h.send(f"<presence from='{WUMPUS}' to='{ROOM}/wumpus'><show>away</show></presence>"))
    step(h.send(f"<presence from='{WUMPUS}' to='{ROOM}/argl'/>"))
    step(h.send(f"<presence type='probe' from='{TROY}' to='{ROOM}/argl'/>"))
    step(admin_set(h, WIZ, f"<item affiliation='member' jid='{VALDIS_BARE}'/>"))
    step(admin_set(h, WIZ, "<item nick='valdis' role='visitor'/>"))
    step(admin_set(h, WIZ, "<item nick='argl' role='none'><reason>out</reason></item>"))
    step(h.join(PHAEDRUS, "phaedrus"))
    step(admin_set(h, WIZ, "<item affiliation='outcast' nick='phaedrus'/>"))
    step(owner_submit(h, WIZ, {"muc#roomconfig_roomname": "Wallops"}))
    step(leave(h, VALDIS, "valdis"))
    step(h.send(f"<presence type='error' from='{WIZ}' to='{ROOM}/wiz'/>"))
    step(leave(h, "troy@eris.dclxvii.irc/hammer", "troy"))
    assert seen == []


def test_new_moderator_in_semi_anonymous_room_learns_the_jids():
    h = _room()
    out = admin_set(h, WIZ, "<item nick='troy' role='moderator'/>")
    about_wumpus = presence_from(out, TROY, "wumpus")
    assert about_wumpus, "Troy should be sent the occupants again, now with their JIDs"
    assert item(about_wumpus[-1])["jid"] == WUMPUS


def test_new_admin_in_semi_anonymous_room_learns_the_jids():
    h = _room()
    out = admin_set(h, WIZ, f"<item affiliation='admin' jid='{TROY_BARE}'/>")
    about_wumpus = presence_from(out, TROY, "wumpus")
    assert about_wumpus and item(about_wumpus[-1])["jid"] == WUMPUS
    about_wiz = presence_from(out, TROY, "wiz")
    assert about_wiz and item(about_wiz[-1])["jid"] == WIZ


def test_kicked_user_gets_no_further_stanzas():
    h = _room()
    admin_set(h, WIZ, "<item nick='troy' role='none'/>")
    out = groupchat(h, WUMPUS, "is he gone")
    assert out.stanzas_for(TROY) == []


def test_admin_may_not_read_the_owner_list():
    # Prosody 0.12: an admin reads the lists up to its own rank, not the owners'.
    h = _room()
    admin_set(h, WIZ, f"<item affiliation='admin' jid='{TROY_BARE}'/>")
    assert _error(admin_get(h, TROY, "affiliation='owner'"), TROY) == "forbidden"
    assert _listed(admin_get(h, TROY, "affiliation='admin'"), TROY) == {(TROY_BARE, None)}
    _result(admin_get(h, TROY, "affiliation='member'"), TROY)
    _result(admin_get(h, TROY, "affiliation='outcast'"), TROY)
    assert _listed(admin_get(h, WIZ, "affiliation='admin'"), WIZ) == {(TROY_BARE, None)}


def test_banning_a_domain_bans_its_users():
    # Prosody's get_affiliation: an outcast host bans every user of that host.
    h = _room()
    out = admin_set(h, WIZ, "<item affiliation='outcast' jid='killrc.oulubox.irc'/>")
    _result(out, WIZ)
    assert error_condition(one(h.join(VALDIS, "valdis").stanzas_for(VALDIS))) == "forbidden"
    assert error_condition(one(h.join(PHAEDRUS, "phaedrus").stanzas_for(PHAEDRUS))) == \
        "forbidden"
    # Users of other domains are unaffected; so is an explicit affiliation.
    assert "110" in codes(one(presence_from(h.join(EFCHEN, "efchen"), EFCHEN, "efchen")))
    admin_set(h, WIZ, f"<item affiliation='member' jid='{VALDIS_BARE}'/>")
    assert "110" in codes(one(presence_from(h.join(VALDIS, "valdis"), VALDIS, "valdis")))


def test_kicking_the_last_occupant_ends_a_temporary_room():
    h = _room()
    leave(h, WUMPUS, "wumpus")
    leave(h, WIZ, "wiz")
    # The owner, no longer inside, still administers the room.
    out = admin_set(h, WIZ, "<item nick='troy' role='none'/>")
    _result(out, WIZ)
    assert "307" in codes(one(presences(out, TROY)))
    assert ROOM not in h.service.rooms


def test_a_user_outside_the_room_is_told_of_a_new_affiliation_with_status_101_if_asked():
    from tests.unit.muc_helpers import ROOM, WUMPUS, Harness, codes

    h = Harness(room_locking=False, affiliation_notify=True)
    h.join(WUMPUS, "Wumpus")
    out = h.send(f"<iq type='set' id='m' from='{WUMPUS}' to='{ROOM}'>"
                 "<query xmlns='http://jabber.org/protocol/muc#admin'>"
                 "<item affiliation='member' jid='rubenro@vesa.yeggmaex.irc'/></query></iq>")
    [notice] = out.stanzas_for("rubenro@vesa.yeggmaex.irc")
    assert notice["from"] == ROOM and notice["type"] == "headline"
    assert codes(notice) == {"101"}
    assert "member" in str(notice.firstChildElement())


def test_no_out_of_room_notice_for_an_occupant():
    from tests.unit.muc_helpers import ROOM, VALDIS, WUMPUS, Harness

    h = Harness(room_locking=False)
    h.join(WUMPUS, "Wumpus")
    h.join(VALDIS, "Valdis")
    out = h.send(f"<iq type='set' id='m' from='{WUMPUS}' to='{ROOM}'>"
                 "<query xmlns='http://jabber.org/protocol/muc#admin'>"
                 "<item affiliation='member' jid='valdis@killrc.oulubox.irc'/></query></iq>")
    assert not out.stanzas_for("valdis@killrc.oulubox.irc")
    assert [p.name for p in out.stanzas_for(VALDIS)] == ["presence"]


def test_an_absent_users_affiliation_change_is_announced_to_the_room_as_mod_muc():
    """XEP-0045 example 195: moderators only in a semi-anonymous room; no 101 notice to the
    user unless configured."""
    from tests.unit.muc_helpers import ROOM, VALDIS, WUMPUS, Harness

    h = Harness(room_locking=False)
    h.join(WUMPUS, "Wumpus")  # owner, moderator
    h.join(VALDIS, "Valdis")  # participant
    out = h.send(f"<iq type='set' id='m' from='{WUMPUS}' to='{ROOM}'>"
                 "<query xmlns='http://jabber.org/protocol/muc#admin'>"
                 "<item affiliation='member' jid='rubenro@vesa.yeggmaex.irc'>"
                 "<reason>welcome</reason></item></query></iq>")
    assert not out.stanzas_for("rubenro@vesa.yeggmaex.irc")
    assert not [s for s in out.stanzas_for(VALDIS) if s.name == "message"]
    [notice] = [s for s in out.stanzas_for(WUMPUS) if s.name == "message"]
    assert notice["from"] == ROOM and notice.getAttribute("type") is None
    assert item(notice) == {"affiliation": "member", "jid": "rubenro@vesa.yeggmaex.irc"}
    assert "welcome" in notice.toXml()
    # a non-anonymous room tells everyone; a ban carries 301
    h.send(f"<iq type='set' id='c' from='{WUMPUS}' to='{ROOM}'>"
           "<query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' "
           "type='submit'><field var='muc#roomconfig_whois'><value>anyone</value></field>"
           "</x></query></iq>")
    out = h.send(f"<iq type='set' id='b' from='{WUMPUS}' to='{ROOM}'>"
                 "<query xmlns='http://jabber.org/protocol/muc#admin'>"
                 "<item affiliation='outcast' jid='troll@evil.example'/></query></iq>")
    [seen] = [s for s in out.stanzas_for(VALDIS) if s.name == "message"]
    assert codes(seen) == {"301"} and item(seen)["jid"] == "troll@evil.example"

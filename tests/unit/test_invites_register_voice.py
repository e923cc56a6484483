"""Mediated invitations (§7.8.2-3), registration (§7.10) and voice requests (§7.13, §8.6)."""

from __future__ import annotations

from dmuc import xmlns
from dmuc.protocol import stanzas
from tests.unit.muc_helpers import (
    BIGCHEESE,
    EFCHEN,
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
    admin_set,
    field_values,
    groupchat,
    iq,
    messages,
    one,
    payload,
    presence_from,
)

TROY_BARE = "troy@eris.dclxvii.irc"
WUMPUS_BARE = "argl@killrc.oulubox.irc"
BIGCHEESE_BARE = "rubenro@vesa.yeggmaex.irc"


def _room(**config: str) -> Harness:
    h = Harness()
    h.create_instant(WIZ, "wiz", **config)
    h.join(TROY, "troy")
    return h


# --- invitations --------------------------------------------------------------------------------


def _invite(h: Harness, who: str, to: str, reason: str | None = "Join us"):
    inner = f"<reason>{reason}</reason>" if reason else ""
    return h.send(f"<message from='{who}' to='{ROOM}' id='inv'>"
                  "<x xmlns='http://jabber.org/protocol/muc#user'>"
                  f"<invite to='{to}'>{inner}</invite></x></message>")


def _decline(h: Harness, who: str, to: str, reason: str | None = "Busy"):
    inner = f"<reason>{reason}</reason>" if reason else ""
    return h.send(f"<message from='{who}' to='{ROOM}'>"
                  "<x xmlns='http://jabber.org/protocol/muc#user'>"
                  f"<decline to='{to}'>{inner}</decline></x></message>")


def test_invitation_is_forwarded_from_the_room():
    h = _room()
    out = _invite(h, TROY, BIGCHEESE_BARE)
    msg = one(out.stanzas_for(BIGCHEESE_BARE))
    assert msg.name == "message"
    assert msg["from"] == ROOM
    x = stanzas.child(msg, "x", xmlns.MUC_USER)
    invite = stanzas.child(x, "invite")
    # as mod_muc 0.12: the inviting stanza's id; the inviter by occupant JID in a
    # semi-anonymous room; the reason; the body naming the inviter the same way
    assert msg["id"] == "inv"
    assert invite["from"] == f"{ROOM}/troy"
    assert invite.getAttribute("to") is None
    assert str(stanzas.child(invite, "reason")) == "Join us"
    assert stanzas.child(x, "password") is None
    conference = stanzas.child(msg, "x", xmlns.CONFERENCE)
    assert conference["jid"] == ROOM and str(conference) == "Join us"
    assert str(stanzas.child(msg, "body")) == \
        f"{ROOM}/troy invited you to the room {ROOM} (Join us)"
    # Nothing goes to the room's occupants.
    assert out.stanzas_for(WIZ) == [] and out.stanzas_for(TROY) == []


def test_invitation_to_password_room_carries_the_password():
    h = Harness()
    h.create_instant(WIZ, "wiz", passwordprotectedroom="1", roomsecret="cauldronburn")
    out = _invite(h, WIZ, TROY_BARE, reason=None)
    x = stanzas.child(one(out.stanzas_for(TROY_BARE)), "x", xmlns.MUC_USER)
    assert str(stanzas.child(x, "password")) == "cauldronburn"
    # no reason given: an empty one, as mod_muc
    assert str(stanzas.child(stanzas.child(x, "invite"), "reason")) == ""


def test_invitation_names_the_real_jid_where_the_invitee_may_see_it():
    h = _room(whois="anyone")
    x = stanzas.child(one(_invite(h, TROY, BIGCHEESE_BARE).stanzas_for(BIGCHEESE_BARE)),
                      "x", xmlns.MUC_USER)
    assert stanzas.child(x, "invite")["from"] == TROY
    h = _room()  # semi-anonymous, but the invitee is an admin: it will see real JIDs
    admin_set(h, WIZ, f"<item affiliation='admin' jid='{BIGCHEESE_BARE}'/>")
    x = stanzas.child(one(_invite(h, TROY, BIGCHEESE_BARE).stanzas_for(BIGCHEESE_BARE)),
                      "x", xmlns.MUC_USER)
    assert stanzas.child(x, "invite")["from"] == TROY


def test_invitation_keeps_the_inviters_own_body():
    h = _room()
    out = h.send(f"<message from='{TROY}' to='{ROOM}' id='b1'><body>come!</body>"
                 "<x xmlns='http://jabber.org/protocol/muc#user'>"
                 f"<invite to='{BIGCHEESE_BARE}'/></x></message>")
    msg = one(out.stanzas_for(BIGCHEESE_BARE))
    assert [str(b) for b in stanzas.children(msg, "body")] == ["come!"]


def test_invitation_from_non_occupant_is_refused():
    h = _room()
    out = _invite(h, VALDIS, BIGCHEESE_BARE)
    assert error_condition(one(out.stanzas_for(VALDIS))) == "not-acceptable"
    assert out.stanzas_for(BIGCHEESE_BARE) == []


def test_members_only_invitation_by_non_admin_is_forbidden():
    h = Harness()
    h.create_instant(WIZ, "wiz", membersonly="1")
    admin_set(h, WIZ, f"<item affiliation='member' jid='{TROY_BARE}'/>")
    h.join(TROY, "troy")
    out = _invite(h, TROY, BIGCHEESE_BARE)
    reply = one(out.stanzas_for(TROY))
    assert error_condition(reply) == "forbidden"
    assert out.stanzas_for(BIGCHEESE_BARE) == []
    assert BIGCHEESE_BARE not in h.service.rooms[ROOM].affiliations


def test_members_only_invitation_makes_the_invitee_a_member():
    h = Harness()
    h.create_instant(WIZ, "wiz", membersonly="1")
    out = _invite(h, WIZ, BIGCHEESE)
    assert one(messages(out, BIGCHEESE))["from"] == ROOM
    assert h.service.rooms[ROOM].affiliations[BIGCHEESE_BARE] == "member"
    out = h.join(BIGCHEESE, "cheese")
    assert item(one(presence_from(out, BIGCHEESE, "cheese")))["affiliation"] == "member"


def test_members_may_invite_when_the_room_allows_it():
    h = Harness()
    h.create_instant(WIZ, "wiz", membersonly="1", allowinvites="1")
    admin_set(h, WIZ, f"<item affiliation='member' jid='{TROY_BARE}'/>")
    h.join(TROY, "troy")
    out = _invite(h, TROY, BIGCHEESE_BARE)
    # the invitation (as mod_muc, no out-of-room 101 notice unless affiliation_notify)
    [invitation] = out.stanzas_for(BIGCHEESE_BARE)
    assert invitation["from"] == ROOM
    assert h.service.rooms[ROOM].affiliations[BIGCHEESE_BARE] == "member"


def test_invitation_in_open_room_grants_no_membership():
    h = _room()
    _invite(h, TROY, BIGCHEESE_BARE)
    assert BIGCHEESE_BARE not in h.service.rooms[ROOM].affiliations


def test_invitation_with_bad_jid_is_refused():
    h = _room()
    out = _invite(h, TROY, "@@@")
    assert error_condition(one(out.stanzas_for(TROY))) == "jid-malformed"


def test_decline_is_forwarded_to_the_inviter():
    h = _room()
    out = _decline(h, BIGCHEESE, TROY)
    msg = one(out.stanzas_for(TROY))
    assert msg["from"] == ROOM
    decline = stanzas.child(stanzas.child(msg, "x", xmlns.MUC_USER), "decline")
    assert decline["from"] == BIGCHEESE
    assert str(stanzas.child(decline, "reason")) == "Busy"
    assert out.stanzas_for(BIGCHEESE) == []


# --- registration -------------------------------------------------------------------------------


def _reg_get(h: Harness, who: str):
    return iq(h, who, ROOM, "get", "<query xmlns='jabber:iq:register'/>", "rg")


def _reg_set(h: Harness, who: str, nick: str):
    return iq(h, who, ROOM, "set",
              "<query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'>"
              "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#register</value>"
              f"</field><field var='muc#register_roomnick'><value>{nick}</value></field>"
              "</x></query>", "rs")


def _reserved_nick(h: Harness, who: str) -> str | None:
    out = iq(h, who, ROOM, "get",
             "<query xmlns='http://jabber.org/protocol/disco#info' node='x-roomuser-item'/>")
    reply = one(out.stanzas_for(who))
    assert reply["type"] == "result"
    query = payload(reply)
    assert query["node"] == "x-roomuser-item"
    identity = stanzas.child(query, "identity")
    if identity is None:
        return None
    assert identity["category"] == "conference" and identity["type"] == "text"
    return identity["name"]


def test_unaffiliated_users_may_not_register_by_default():
    h = _room()
    reply = one(_reg_get(h, TROY).stanzas_for(TROY))
    assert reply["type"] == "error" and error_condition(reply) == "registration-required"
    reply = one(_reg_set(h, TROY, "Troy").stanzas_for(TROY))
    assert error_condition(reply) == "registration-required"
    assert TROY_BARE not in h.service.rooms[ROOM].reserved_nicks


def test_registration_form_and_submission():
    h = Harness(allow_unaffiliated_register=True)
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    reply = one(_reg_get(h, TROY).stanzas_for(TROY))
    assert reply["type"] == "result"
    form = stanzas.child(payload(reply), "x", xmlns.DATA_FORMS)
    assert stanzas.form_type(form) == xmlns.MUC_REGISTER
    assert field_values(form, "muc#register_roomnick") == []
    [nick_field] = [f for f in form.elements() if f.getAttribute("var") == "muc#register_roomnick"]
    assert stanzas.child(nick_field, "required") is not None  # as mod_muc's register.lib
    out = _reg_set(h, TROY, "Troy")
    assert one([s for s in out.stanzas_for(TROY) if s.name == "iq"])["type"] == "result"
    room = h.service.rooms[ROOM]
    assert room.affiliations[TROY_BARE] == "member"
    assert room.reserved_nicks[TROY_BARE] == "Troy"
    # The new membership is announced.
    assert item(one(presence_from(out, WIZ, "troy")))["affiliation"] == "member"
    # Registered: the get now says so.
    query = payload(one(_reg_get(h, TROY).stanzas_for(TROY)))
    assert stanzas.child(query, "registered") is not None
    assert str(stanzas.child(query, "username")) == "Troy"
    assert _reserved_nick(h, TROY) == "Troy"
    assert _reserved_nick(h, WUMPUS) is None


def test_members_may_register_a_nick():
    h = _room()
    admin_set(h, WIZ, f"<item affiliation='member' jid='{TROY_BARE}'/>")
    out = _reg_set(h, TROY, "Troy")
    assert one([s for s in out.stanzas_for(TROY) if s.name == "iq"])["type"] == "result"
    assert h.service.rooms[ROOM].reserved_nicks[TROY_BARE] == "Troy"
    # It shows in the member list.
    out = iq(h, WIZ, ROOM, "get", "<query xmlns='http://jabber.org/protocol/muc#admin'>"
                                  "<item affiliation='member'/></query>")
    listed = stanzas.child(payload(one(out.stanzas_for(WIZ))), "item")
    assert listed["jid"] == TROY_BARE and listed["nick"] == "Troy"


def test_outcasts_may_not_register():
    h = Harness(allow_unaffiliated_register=True)
    h.create_instant(WIZ, "wiz")
    admin_set(h, WIZ, f"<item affiliation='outcast' jid='{TROY_BARE}'/>")
    assert error_condition(one(_reg_get(h, TROY).stanzas_for(TROY))) == "forbidden"


def test_registering_someone_elses_nick_is_a_conflict():
    h = Harness(allow_unaffiliated_register=True)
    h.create_instant(WIZ, "wiz")
    _reg_set(h, TROY, "Troy")
    reply = one(_reg_set(h, WUMPUS, "Troy").stanzas_for(WUMPUS))
    assert reply["type"] == "error" and error_condition(reply) == "conflict"
    assert WUMPUS_BARE not in h.service.rooms[ROOM].reserved_nicks
    # The nick of a present occupant cannot be registered by someone else either.
    reply = one(_reg_set(h, WUMPUS, "wiz").stanzas_for(WUMPUS))
    assert error_condition(reply) == "conflict"


def test_reserved_nick_blocks_others_from_joining_with_it():
    h = Harness(allow_unaffiliated_register=True)
    h.create_instant(WIZ, "wiz")
    _reg_set(h, TROY, "Troy")
    reply = one(h.join(WUMPUS, "Troy").stanzas_for(WUMPUS))
    assert reply["type"] == "error"
    assert error_condition(reply) == "conflict"
    assert stanzas.child(reply, "error")["code"] == "409"
    # Nor change nick to it.
    h.join(WUMPUS, "wumpus")
    reply = one(h.send(f"<presence from='{WUMPUS}' to='{ROOM}/Troy'/>").stanzas_for(WUMPUS))
    assert error_condition(reply) == "conflict"
    # The owner of the registration may use it.
    out = h.join(TROY, "Troy")
    assert "110" in codes(one(presence_from(out, TROY, "Troy")))


def test_unregistering_drops_membership_and_nick():
    h = Harness(allow_unaffiliated_register=True)
    h.create_instant(WIZ, "wiz")
    _reg_set(h, TROY, "Troy")
    out = iq(h, TROY, ROOM, "set", "<query xmlns='jabber:iq:register'><remove/></query>")
    assert one(out.stanzas_for(TROY))["type"] == "result"
    room = h.service.rooms[ROOM]
    assert TROY_BARE not in room.affiliations
    assert TROY_BARE not in room.reserved_nicks


def test_registration_without_form_is_bad_request():
    h = Harness(allow_unaffiliated_register=True)
    h.create_instant(WIZ, "wiz")
    out = iq(h, TROY, ROOM, "set", "<query xmlns='jabber:iq:register'/>")
    assert error_condition(one(out.stanzas_for(TROY))) == "bad-request"


def test_ban_drops_the_reserved_nick():
    h = Harness(allow_unaffiliated_register=True)
    h.create_instant(WIZ, "wiz")
    _reg_set(h, TROY, "Troy")
    admin_set(h, WIZ, f"<item affiliation='outcast' jid='{TROY_BARE}'/>")
    assert TROY_BARE not in h.service.rooms[ROOM].reserved_nicks
    assert "110" in codes(one(presence_from(h.join(WUMPUS, "Troy"), WUMPUS, "Troy")))


# --- voice requests -----------------------------------------------------------------------------


def _voice_request(h: Harness, who: str):
    return h.send(f"<message from='{who}' to='{ROOM}'>"
                  "<x xmlns='jabber:x:data' type='submit'>"
                  "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#request</value>"
                  "</field><field var='muc#role' type='list-single'>"
                  "<value>participant</value></field></x></message>")


def _voice_answer(h: Harness, who: str, form):
    fields = "".join(
        f"<field var='{var}'><value>{value}</value></field>"
        for var, value in form.items()
    )
    return h.send(f"<message from='{who}' to='{ROOM}'><x xmlns='jabber:x:data' type='submit'>"
                  "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#request</value>"
                  f"</field>{fields}</x></message>")


def _moderated() -> Harness:
    h = Harness()
    h.create_instant(WIZ, "wiz", moderatedroom="1")
    admin_set(h, WIZ, "<item affiliation='admin' jid='valdis@killrc.oulubox.irc'/>")
    h.join(VALDIS, "valdis")
    h.join(TROY, "troy")
    h.join(EFCHEN, "efchen")
    return h


def test_voice_request_goes_to_moderators_only():
    h = _moderated()
    out = _voice_request(h, TROY)
    for moderator in (WIZ, VALDIS):
        msg = one(messages(out, moderator))
        assert msg["from"] == ROOM
        form = stanzas.child(msg, "x", xmlns.DATA_FORMS)
        assert stanzas.form_type(form) == xmlns.MUC_REQUEST
        assert field_values(form, "muc#jid") == [TROY]
        assert field_values(form, "muc#roomnick") == ["troy"]
        assert field_values(form, "muc#role") == ["participant"]
        assert field_values(form, "muc#request_allow") == ["0"]
    assert out.stanzas_for(TROY) == []
    assert out.stanzas_for(EFCHEN) == []


def test_voice_request_from_someone_with_voice_is_ignored():
    h = _moderated()
    admin_set(h, WIZ, "<item nick='troy' role='participant'/>")
    out = _voice_request(h, TROY)
    assert messages(out, WIZ) == []


def test_voice_request_from_non_occupant_is_not_acceptable():
    h = _moderated()
    out = _voice_request(h, WUMPUS)
    assert error_condition(one(out.stanzas_for(WUMPUS))) == "not-acceptable"


def test_moderator_approval_grants_voice():
    h = _moderated()
    _voice_request(h, TROY)
    out = _voice_answer(h, WIZ, {"muc#jid": TROY, "muc#roomnick": "troy",
                                 "muc#request_allow": "true"})
    pres = one(presence_from(out, EFCHEN, "troy"))
    assert item(pres)["role"] == "participant"
    assert h.service.rooms[ROOM].occupants["troy"].role == "participant"
    assert messages(groupchat(h, TROY, "thanks"), EFCHEN)


def test_moderator_refusal_changes_nothing():
    h = _moderated()
    out = _voice_answer(h, WIZ, {"muc#jid": TROY, "muc#roomnick": "troy",
                                 "muc#request_allow": "false"})
    assert out.stanzas_for(EFCHEN) == []
    assert h.service.rooms[ROOM].occupants["troy"].role == "visitor"


def test_visitor_cannot_approve_itself():
    h = _moderated()
    out = _voice_answer(h, TROY, {"muc#jid": TROY, "muc#roomnick": "troy",
                                  "muc#request_allow": "true"})
    assert h.service.rooms[ROOM].occupants["troy"].role == "visitor"
    # It is treated as a request and forwarded to the moderators instead.
    assert messages(out, WIZ)

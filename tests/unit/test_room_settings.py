"""Room settings hook room events, one module each (as Prosody's plugins/muc/*.lib.lua):
the forms they build together, an operator's plugin joining in through the same events,
and each setting's vars written in one module only."""

from __future__ import annotations

import os
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.words.xish.domish import Element

from dmuc import xmlns
from dmuc.errors import Refusal
from dmuc.hooks import Hooks, load_plugins
from dmuc.master.features import BUILTIN_FEATURES
from dmuc.master.features.roomconfig import Field, Values
from dmuc.master.model import RoomConfig
from dmuc.master.room import Room
from dmuc.master.service import MUCService
from dmuc.protocol import stanzas
from tests.unit.muc_helpers import ROOM, TROY, VALDIS, WIZ, Harness, codes, error_condition
from tests.unit.muc_steps import (
    field_values,
    form_field,
    iq,
    messages,
    one,
    owner_get,
    owner_submit,
    payload,
    presence_from,
)

PACKAGE = Path(__file__).resolve().parents[2] / "dmuc"
FEATURES = PACKAGE / "master" / "features"
TROY_BARE = "troy@eris.dclxvii.irc"
VALDIS_BARE = "valdis@killrc.oulubox.irc"


def _fields(form: Element) -> list[Element]:
    """The settings' fields (not FORM_TYPE, nor the section headers)."""
    return [f for f in stanzas.children(form, "field")
            if f.getAttribute("var") not in ("FORM_TYPE", None)]


def _layout(form: Element) -> list[tuple[str, str, str]]:
    """(var, type, label) of every field, a section header as ("", "fixed", its title)."""
    return [(f.getAttribute("var", ""), f["type"], f.getAttribute("label")
             or str(stanzas.child(f, "value")))
            for f in stanzas.children(form, "field") if f.getAttribute("var") != "FORM_TYPE"]


def _config_form(h: Harness) -> Element:
    reply = one(owner_get(h, WIZ).stanzas_for(WIZ))
    assert reply["type"] == "result", reply.toXml()
    form = stanzas.child(payload(reply), "x", xmlns.DATA_FORMS)
    assert form is not None
    return form


def _roominfo(h: Harness, who: str = TROY) -> Element:
    reply = one(iq(h, who, ROOM, "get", f"<query xmlns='{xmlns.DISCO_INFO}'/>").stanzas_for(who))
    form = stanzas.child(payload(reply), "x", xmlns.DATA_FORMS)
    assert form is not None
    return form


def _iq_reply(out, who: str) -> Element:
    return one([s for s in out.stanzas_for(who) if s.name == "iq"])


# --- the built-in settings together: the forms as they always were ----------------------------


def test_the_config_form_has_every_setting_in_its_order_with_its_label_and_options():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    form = _config_form(h)
    # in mod_muc 0.12.3's sections and order (config_form_sections.lib and each setting's
    # priority); ours adds the password switch, maxusers, allowpm, logging and archiving
    assert _layout(form) == [
        ("", "fixed", "Room information"),
        ("muc#roomconfig_roomname", "text-single", "Title"),
        ("muc#roomconfig_roomdesc", "text-single", "Description"),
        ("muc#roomconfig_lang", "text-single", "Language tag"),
        ("muc#roomconfig_persistentroom", "boolean",
         "Persistent (room should remain even when it is empty)"),
        ("muc#roomconfig_publicroom", "boolean", "Include room information in public lists"),
        ("", "fixed", "Access to the room"),
        ("muc#roomconfig_passwordprotectedroom", "boolean", "Password protected"),
        ("muc#roomconfig_roomsecret", "text-private", "Password"),
        ("muc#roomconfig_membersonly", "boolean", "Only allow members to join"),
        ("{http://prosody.im/protocol/muc}roomconfig_allowmemberinvites", "boolean",
         "Allow members to invite new members"),
        ("muc#roomconfig_maxusers", "list-single", "Maximum number of occupants"),
        ("", "fixed", "Permissions in the room"),
        ("muc#roomconfig_changesubject", "boolean", "Allow anyone to set the room's subject"),
        ("muc#roomconfig_moderatedroom", "boolean",
         "Moderated (only participants with voice may speak)"),
        ("muc#roomconfig_whois", "list-single",
         "Addresses (JIDs) of room occupants may be viewed by"),
        ("muc#roomconfig_allowpm", "list-single", "Allow private messages from"),
        ("", "fixed", "Other options"),
        ("muc#roomconfig_historylength", "text-single",
         "Maximum number of history messages returned by room"),
        ("muc#roomconfig_defaulthistorymessages", "text-single",
         "Default number of history messages returned by room"),
        ("muc#roomconfig_presencebroadcast", "list-multi",
         "Roles for which presence is broadcast"),
        ("muc#roomconfig_enablelogging", "boolean",
         "Store and show the room's history to new occupants (logged)"),
        ("muc#roomconfig_enablearchiving", "boolean", "Archive chat on server"),
    ]

    def options(var: str) -> list[tuple[str, str]]:
        return [(o["label"], str(stanzas.child(o, "value")))
                for o in stanzas.children(form_field(form, var), "option")]

    # no option with an empty value (profanity 0.13 crashes on one)
    assert all(value for var in ("muc#roomconfig_maxusers", "muc#roomconfig_allowpm",
                                 "muc#roomconfig_presencebroadcast", "muc#roomconfig_whois")
               for _, value in options(var))
    assert options("muc#roomconfig_maxusers") == [("No limit", "none")] + [
        (n, n) for n in ("5", "10", "20", "30", "50", "100", "150", "200", "500", "1000")]
    assert options("muc#roomconfig_allowpm") == [
        ("Everyone", "visitor"), ("Participants", "participant"), ("Moderators", "moderator"),
        ("Members", "affiliated"), ("No one", "none")]
    assert options("muc#roomconfig_presencebroadcast") == [
        ("None", "none"), ("Moderator", "moderator"), ("Participant", "participant"),
        ("Visitor", "visitor")]
    assert options("muc#roomconfig_whois") == [("Moderators only", "moderators"),
                                               ("Anyone", "anyone")]
    assert field_values(form, "muc#roomconfig_maxusers") == ["none"]
    assert field_values(form, "muc#roomconfig_roomsecret") == [""]


def test_a_limit_outside_the_options_is_offered_too():
    h = Harness()
    h.create_instant(WIZ, "wiz", maxusers="37")
    field = form_field(_config_form(h), "muc#roomconfig_maxusers")
    assert [str(stanzas.child(o, "value")) for o in stanzas.children(field, "option")][-1] == "37"
    assert field_values(_config_form(h), "muc#roomconfig_maxusers") == ["37"]


def test_the_roominfo_form_has_its_fields_in_order():
    h = Harness()
    h.create_instant(WIZ, "wiz", roomname="W", roomdesc="D", lang="fi", historylength="7",
                     allowpm="moderators", changesubject="1", allowinvites="1")
    h.join(TROY, "troy")
    form = _roominfo(h)
    assert [(f["var"], f.getAttribute("type"), f.getAttribute("label"),
             field_values(form, f["var"]))
            for f in _fields(form)] == [
        ("muc#roominfo_description", "text-single", "Description", ["D"]),
        ("muc#roominfo_occupants", "text-single", "Number of occupants", ["2"]),
        ("muc#roomconfig_roomname", "text-single", "Title", ["W"]),
        # never the subject (mod_muc 0.12.3 does not tell it to strangers)
        ("muc#roomconfig_changesubject", "boolean", None, ["1"]),
        ("{http://prosody.im/protocol/muc}roomconfig_allowmemberinvites", "boolean",
         "Allow members to invite new members", ["1"]),
        ("muc#roomconfig_allowinvites", "boolean", "Allow users to invite other users", ["1"]),
        ("muc#roominfo_lang", "text-single", None, ["fi"]),
        ("muc#roominfo_avatarhash", "text-multi", None, []),  # as Prosody 13: no label
    ]


def test_the_first_bad_value_in_the_order_of_submission_is_the_answer():
    """Booleans are read before the password and the list/number fields, as apply_form
    always did: with two bad values, the answer names the one read first."""
    h = Harness()
    h.create_instant(WIZ, "wiz")
    out = owner_submit(h, WIZ, {"muc#roomconfig_whois": "everybody",
                                "muc#roomconfig_enablelogging": "perhaps"})
    reply = _iq_reply(out, WIZ)
    assert error_condition(reply) == "bad-request"
    assert str(stanzas.child(stanzas.child(reply, "error"), "text")) == (
        "muc#roomconfig_enablelogging: not a boolean")


def test_the_core_refuses_before_the_settings_and_the_settings_in_their_order():
    h = Harness()
    h.create_instant(WIZ, "wiz", membersonly="1", passwordprotectedroom="1", roomsecret="s",
                     maxusers="1")
    room = h.service.rooms[ROOM]

    def refused(who: str, nick: str, extra: str = "") -> str | None:
        return error_condition(one(h.join(who, nick, extra=extra).stanzas_for(who)))

    room.affiliations[TROY_BARE] = "outcast"
    # banned before the nickname in use; in a members-only room, as any non-member (as
    # mod_muc, whose members-only check comes before its ban check)
    assert refused(TROY, "wiz") == "registration-required"
    room.affiliations.pop(TROY_BARE)
    assert refused(TROY, "wiz") == "conflict"  # the nickname before members-only
    assert refused(TROY, "troy") == "registration-required"
    room.affiliations[TROY_BARE] = "member"
    assert refused(TROY, "troy") == "not-authorized"
    assert refused(TROY, "troy", "<password>s</password>") == "service-unavailable"


# --- an operator's plugin: its own setting through the same events ----------------------------

PREFIX = "x-irc#roomconfig_nickprefix"


def _prefix_plugin() -> types.ModuleType:
    """A plugin as an operator writes one: nicknames in a room must start with a prefix
    that the owner sets in the configuration form; kept in RoomConfig.extra."""
    plugin = types.ModuleType("dmuc_test_nickprefix")

    def form(room: Room, fields: list[Field]) -> None:
        fields.append({"var": PREFIX, "type": "text-single",
                       "label": "Nicknames must start with",
                       "value": room.config.extra.get("nick_prefix", "")})

    def submitted(room: Room, values: Values, new: RoomConfig) -> None:
        given = values.get(PREFIX)
        if given is None:
            return
        prefix = given[0] if given else ""
        if len(prefix) > 8:
            raise Refusal("modify", "bad-request", f"{PREFIX}: at most 8 characters")
        new.extra["nick_prefix"] = prefix

    def pre_join(room: Room, stanza: Element, nick: str, sender: str) -> Refusal | None:
        prefix = room.config.extra.get("nick_prefix", "")
        if prefix and not nick.startswith(prefix):
            return Refusal("modify", "not-acceptable", f"Nicknames here start with {prefix}")
        return None

    def setup(hooks: Hooks, service: MUCService) -> None:
        hooks.add("room-config-form", form)
        hooks.add("room-config-submitted", submitted)
        hooks.add("occupant-pre-join", pre_join)

    plugin.setup = setup  # type: ignore[attr-defined]
    return plugin


@pytest.fixture
def with_plugin() -> Iterator[Harness]:
    sys.modules["dmuc_test_nickprefix"] = _prefix_plugin()
    try:
        h = Harness()
        load_plugins(["dmuc_test_nickprefix"], h.service.hooks, h.service)
        yield h
    finally:
        del sys.modules["dmuc_test_nickprefix"]


def test_a_plugin_field_comes_after_the_built_in_settings(with_plugin):
    h = with_plugin
    h.create_instant(WIZ, "wiz")
    fields = _fields(_config_form(h))
    assert [f["var"] for f in fields[-2:]] == ["muc#roomconfig_enablearchiving", PREFIX]
    assert fields[-1]["label"] == "Nicknames must start with"
    assert field_values(_config_form(h), PREFIX) == [""]


def test_a_plugin_setting_is_submitted_stored_and_refuses_joins(with_plugin):
    h = with_plugin
    h.create_instant(WIZ, "wiz")
    h.join(VALDIS, "valdis")
    out = owner_submit(h, WIZ, {PREFIX: "oper-", "muc#roomconfig_persistentroom": "1"})
    assert _iq_reply(out, WIZ)["type"] == "result"
    room = h.service.rooms[ROOM]
    assert room.config.extra == {"nick_prefix": "oper-"}
    assert "104" in codes(one([m for m in messages(out, VALDIS)
                               if m.getAttribute("from") == ROOM]))
    assert field_values(_config_form(h), PREFIX) == ["oper-"]
    # stored with the room, and read back after a restart
    restored = Room.from_state(h.service, ROOM, room.to_state())
    assert restored.config.extra == {"nick_prefix": "oper-"}
    # the join check runs after the built-in ones, through occupant-pre-join
    reply = one(h.join(TROY, "troy").stanzas_for(TROY))
    assert reply["type"] == "error" and error_condition(reply) == "not-acceptable"
    assert "troy" not in room.occupants
    assert "110" in codes(one(presence_from(h.join(TROY, "oper-troy"), TROY, "oper-troy")))


def test_a_bad_plugin_value_refuses_the_whole_submission(with_plugin):
    h = with_plugin
    h.create_instant(WIZ, "wiz")
    before = h.service.rooms[ROOM].config.to_dict()
    out = owner_submit(h, WIZ, {"muc#roomconfig_roomname": "Changed",
                                PREFIX: "much-too-long-"})
    reply = _iq_reply(out, WIZ)
    assert error_condition(reply) == "bad-request"
    assert str(stanzas.child(stanzas.child(reply, "error"), "text")) == (
        f"{PREFIX}: at most 8 characters")
    assert h.service.rooms[ROOM].config.to_dict() == before


def test_a_plugin_field_can_sit_among_the_built_in_ones_by_priority():
    h = Harness()
    h.service.hooks.add("room-config-form", lambda room, fields: fields.append(
        {"var": "x-irc#roomconfig_topic", "type": "text-single", "label": "Topic"}),
        priority=87)  # after members-only (87, added earlier), before member invites (86)
    h.create_instant(WIZ, "wiz")
    names = [f["var"] for f in _fields(_config_form(h))]
    at = names.index("x-irc#roomconfig_topic")
    assert names[at - 1:at + 2] == [
        "muc#roomconfig_membersonly", "x-irc#roomconfig_topic",
        "{http://prosody.im/protocol/muc}roomconfig_allowmemberinvites"]


def test_room_defaults_give_a_plugin_setting_to_new_rooms_without_sharing_it():
    h = Harness(room_defaults={"extra": {"nick_prefix": "oper-"}})
    h.create_instant(WIZ, "oper-wiz")
    h.create_instant(WIZ, "oper-wiz", room="other@channel.avalon.irc")
    first = h.service.rooms[ROOM].config.extra
    second = h.service.rooms["other@channel.avalon.irc"].config.extra
    assert first == second == {"nick_prefix": "oper-"}
    first["nick_prefix"] = "changed"
    assert second == {"nick_prefix": "oper-"}


# --- one setting, one module -------------------------------------------------------------------

# Each var of the configuration and roominfo forms, and each disco feature of a setting, is
# written in exactly one module: the setting's. Where muc#roominfo repeats a muc#roomconfig
# var (roomname, changesubject, allowinvites), the setting's module adds both
# fields, as Prosody's name.lib inserts the same field into both forms: no exception.
HOMES = {
    "muc#roomconfig_roomname": "roominfo.py",
    "muc#roomconfig_roomdesc": "roominfo.py",
    "muc#roomconfig_lang": "roominfo.py",
    "muc#roominfo_description": "roominfo.py",
    "muc#roominfo_lang": "roominfo.py",
    "muc#roomconfig_persistentroom": "persistent.py",
    "muc_persistent": "persistent.py",
    "muc_temporary": "persistent.py",
    "muc#roomconfig_publicroom": "public.py",
    "muc_public": "public.py",
    "muc_hidden": "public.py",
    "muc#roomconfig_membersonly": "members_only.py",
    "muc_membersonly": "members_only.py",
    "muc_open": "members_only.py",
    "muc#roomconfig_moderatedroom": "moderated.py",
    "muc_moderated": "moderated.py",
    "muc_unmoderated": "moderated.py",
    "muc#roomconfig_passwordprotectedroom": "password.py",
    "muc#roomconfig_roomsecret": "password.py",
    "muc_passwordprotected": "password.py",
    "muc_unsecured": "password.py",
    "muc#roomconfig_whois": "whois.py",
    "muc_nonanonymous": "whois.py",
    "muc_semianonymous": "whois.py",
    "muc#roomconfig_maxusers": "max_users.py",
    "muc#roomconfig_historylength": "history.py",
    "muc#roomconfig_defaulthistorymessages": "history.py",
    "muc#roomconfig_allowpm": "allow_pm.py",
    "muc#roomconfig_changesubject": "subject.py",
    "muc#roomconfig_presencebroadcast": "presence_broadcast.py",
    "muc#roomconfig_allowinvites": "invites.py",
    "muc#roomconfig_enablelogging": "room_logging.py",
    "muc#roomconfig_enablearchiving": "mam.py",
    # the one value a slave fills in itself (§4.18): in the rule master and slaves share
    "muc#roominfo_occupants": "../../protocol/roominfo.py",
    "muc#roominfo_avatarhash": "vcard.py",
}
FEATURE_NAMES = sorted(name for name in HOMES if name.startswith("muc_"))
NAME = re.compile(r"muc#room(?:config|info)_\w+|muc#maxhistoryfetch|\b(?:"
                  + "|".join(FEATURE_NAMES) + r")\b")


def _sources() -> dict[str, str]:
    return {str(p.relative_to(PACKAGE)): p.read_text() for p in sorted(PACKAGE.rglob("*.py"))}


def test_each_setting_var_and_feature_is_written_in_one_module_only():
    found: dict[str, set[str]] = {}
    for path, text in _sources().items():
        for name in NAME.findall(text):
            found.setdefault(name, set()).add(path)
    assert {name: sorted(paths) for name, paths in found.items()} == {
        name: [os.path.normpath(f"master/features/{home}")] for name, home in HOMES.items()}


def test_the_protocol_modules_name_no_setting():
    for module in ("owner.py", "disco.py", "__init__.py"):
        text = (FEATURES / module).read_text()
        assert not re.search(r"muc#roomconfig_", text), module
    assert not NAME.search((PACKAGE / "master" / "room.py").read_text())


def test_every_built_in_feature_has_a_setup_and_the_service_runs_each_once():
    assert all(callable(getattr(f, "setup", None)) for f in BUILTIN_FEATURES)
    assert len(set(BUILTIN_FEATURES)) == len(BUILTIN_FEATURES)
    h = Harness()
    h.create_instant(WIZ, "wiz")
    names = [f["var"] for f in _fields(_config_form(h))]
    assert len(names) == len(set(names))

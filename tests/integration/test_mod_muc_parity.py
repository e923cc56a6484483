"""Parity with Prosody 0.12's mod_muc, by experiment: one Prosody holds our master
(``channel.avalon.irc``) next to a real mod_muc (``conference.avalon.irc``); the same real
clients run the SAME steps against a room on each, and every stanza each client receives
is compared, step by step, after normalising what is expected to differ (generated ids,
the service's name, timestamps, and the differences docs/mod_muc-parity.md lists as
deliberate). A difference found here is a difference a client sees.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from testbed import ComponentSpec, ProsodyInstance, TwistdDaemon
from tests.integration.conftest import (
    TEST_DOMAINS,
    keep_testbed,
    make_tempdir,
    running,
    write_master_config,
)
from tests.integration.xmpp_client import (
    NS_CLIENT,
    NS_DATA,
    NS_MUC,
    NS_MUC_ADMIN,
    NS_MUC_OWNER,
    NS_MUC_USER,
    Client,
    local,
    run,
)

pytestmark = pytest.mark.integration

OURS = "channel.avalon.irc"
MOD_MUC = "conference.avalon.irc"
MOD_MUC_MAM = "archive.avalon.irc"  # a mod_muc with mod_muc_mam: for the question matrix

OWNER = "squit@eris.dclxvii.irc/jupiter"
PETE = "troy@eris.dclxvii.irc/screwdriver"
QUINN = "argl@killrc.oulubox.irc/laptop"
GUEST = "rubenro@vesa.yeggmaex.irc/shaver"  # invited, never joins

NS_SID = "urn:xmpp:sid:0"
NS_OCCUPANT_ID = "urn:xmpp:occupant-id:0"
NS_DELAY = "urn:xmpp:delay"
NS_ROOMCONFIG = "http://jabber.org/protocol/muc#roomconfig"


@pytest.fixture(scope="module")
def twin() -> Iterator[ProsodyInstance]:
    """A Prosody with our master's component and a mod_muc component side by side."""
    workdir = make_tempdir("dmuc-parity-")
    # a Component line in the global part opens its own section (the VirtualHosts follow)
    # rooms public by default on both (ours: room_defaults; mod_muc 0.12: hidden)
    mod_muc = (f'Component "{MOD_MUC}" "muc"\n    muc_room_locking = true\n'
               '    muc_room_default_public = true\n'
               f'Component "{MOD_MUC_MAM}" "muc"\n    muc_room_locking = true\n'
               '    muc_room_default_public = true\n    modules_enabled = { "muc_mam" }\n')
    yield from running(ProsodyInstance(
        workdir, virtualhosts=TEST_DOMAINS, extra_config=mod_muc,
        components=[ComponentSpec(OURS, secrets.token_hex(16))]), workdir)


@pytest.fixture(scope="module")
def our_master(twin: ProsodyInstance) -> Iterator[TwistdDaemon]:
    workdir = make_tempdir("dmuc-parity-master-")
    config = write_master_config(workdir / "master.toml", twin, workdir / "master.db",
                                 component=OURS)
    daemon = TwistdDaemon("dmuc-master", config, workdir)
    daemon.start(wait_for="component connected")
    try:
        yield daemon
    finally:
        daemon.stop()
        if not keep_testbed():
            shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class Cast:
    service: str
    clients: dict[str, Client]

    @property
    def room(self) -> str:
        return f"parity@{self.service}"


def connected_casts(twin: ProsodyInstance, theirs: str,
                    names: dict[str, str]) -> Iterator[list[Cast]]:
    """The same users twice, ours and on mod_muc's service `theirs` (one set per service,
    so neither sees the other's room); disconnected when done."""
    result = []
    for service, resource in ((OURS, "ours"), (theirs, "modmuc")):
        clients = {n: Client(f"{jid.split('/')[0]}/{resource}", host=twin.ip,
                             port=twin.c2s_port) for n, jid in names.items()}
        result.append(Cast(service, clients))
    every = [c for cast in result for c in cast.clients.values()]
    run(asyncio.gather(*(c.connect() for c in every)))
    try:
        yield result
    finally:
        run(asyncio.gather(*(c.disconnect() for c in every), return_exceptions=True))


@pytest.fixture
def casts(twin: ProsodyInstance, our_master: TwistdDaemon) -> Iterator[list[Cast]]:
    yield from connected_casts(twin, MOD_MUC, {"owner": OWNER, "pete": PETE, "quinn": QUINN,
                                               "guest": GUEST})


@pytest.fixture
def archive_casts(twin: ProsodyInstance, our_master: TwistdDaemon) -> Iterator[list[Cast]]:
    """Owner, member and stranger, ours and on the mod_muc with mod_muc_mam."""
    yield from connected_casts(twin, MOD_MUC_MAM, {"owner": OWNER, "pete": PETE,
                                                   "guest": GUEST})


# --- normalisation ------------------------------------------------------------------------

_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

# What is left out before comparing: each a deliberate difference (docs/mod_muc-parity.md)
# or an artefact of the transport, never something a test step is about.
DROPPED = {
    f"{{{NS_SID}}}stanza-id",        # ours stamps XEP-0359 ids on every groupchat message
    f"{{{NS_OCCUPANT_ID}}}occupant-id",  # XEP-0421: mod_muc 0.12 adds it only with a module
}
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
# disco#info features of protocols ours serves on the room itself, which mod_muc 0.12 has
# only with other modules (mod_muc_mam, mod_muc_moderation, mod_vcard_muc) or not at all
# (docs/mod_muc-parity.md)
OUR_EXTRA_FEATURES = {
    NS_DISCO_INFO, "http://jabber.org/protocol/disco#items", "urn:xmpp:ping",
    "urn:xmpp:mam:2", "urn:xmpp:mam:2#extended", NS_SID, "urn:xmpp:message-moderate:0",
    "urn:xmpp:message-moderate:1", "vcard-temp",
}
OUR_EXTRA_ROOMINFO = {"muc#roominfo_avatarhash"}  # mod_vcard_muc's
# settings of ours mod_muc 0.12.3 has not (docs/mod_muc-parity.md); their labels and
# descriptions differ on purpose too (ours say what the value does)
OUR_EXTRA_CONFIG = {"muc#roomconfig_passwordprotectedroom", "muc#roomconfig_maxusers",
                    "muc#roomconfig_allowpm", "muc#roomconfig_enablelogging",
                    "muc#roomconfig_enablearchiving"}
# the human-readable text ours adds to errors where mod_muc gives the condition alone
OUR_EXTRA_ERROR_TEXTS = {"That nickname is already in use", "You have been banned from this room",
                         "Only members may register a nickname in this room",
                         "You are not allowed to read this room's archive"}


def _deliberate(e: ET.Element, stanza: ET.Element) -> bool:
    """Whether child `e` of `stanza` is one of the documented deliberate differences."""
    kind = stanza.get("type")
    if e.tag == f"{{{NS_STANZAS}}}text" and (e.text or "") in OUR_EXTRA_ERROR_TEXTS:
        return True
    if kind == "error" and e.tag == f"{{{NS_MUC}}}x":
        return True  # ours returns the join's <x/> with its error, as XEP-0045's examples
    if e.tag == f"{{{NS_DISCO_INFO}}}feature" and e.get("var") in OUR_EXTRA_FEATURES:
        return True
    if stanza.find(f"{{{NS_MUC_OWNER}}}query") is not None and e.tag == "{jabber:x:data}desc":
        return True
    return e.tag == "{jabber:x:data}field" and e.get("var") in (OUR_EXTRA_ROOMINFO
                                                                | OUR_EXTRA_CONFIG)


def _false_value(value: ET.Element, field: ET.Element) -> bool:
    """A boolean field's 0: mod_muc leaves the value out where a setting was never set
    (persistent, moderated, changesubject), ours always writes 0 (XEP-0004: a boolean
    without a value is false, so both say the same)."""
    return field.get("type") == "boolean" and value.tag == "{jabber:x:data}value" \
        and (value.text or "").strip() == "0"


def _is_destroy_notice(stanza: ET.Element) -> bool:
    x = stanza.find(f"{{{NS_MUC_USER}}}x")
    return x is not None and x.find(f"{{{NS_MUC_USER}}}destroy") is not None


def normalise(elem: ET.Element, service: str, resource: str) -> str:
    """One received stanza as comparable text: the service's domain and our clients'
    resources named alike, generated ids and stamps blanked, children in a fixed order."""
    def text(value: str) -> str:
        value = value.replace(service, "SERVICE").replace(f"/{resource}", "/RES")
        return _STAMP.sub("STAMP", value)

    destroy_notice = _is_destroy_notice(elem)
    subject = elem.find(f"{{{NS_CLIENT}}}subject") is not None
    config_form = elem.find(f"{{{NS_MUC_OWNER}}}query/{{jabber:x:data}}x")

    def walk(e: ET.Element, parent: ET.Element | None) -> str:
        attrs = []
        for key, value in sorted(e.attrib.items()):
            if key == XML_LANG:
                continue  # a stream's default language, not the room's doing
            if key == "code" and local(e.tag) == "error":
                continue  # ours adds XEP-0045's legacy error numbers too
            if key == "by" and local(e.tag) == "error":
                continue  # ours names the generator of every error, mod_muc of most
            if key == "id" and parent is None and subject:
                continue  # ours reflects the id of a subject change (mod_muc drops it)
            if key == "label" and config_form is not None:
                continue  # the form's labels: ours say what a value does
            if key == "id" and not value.startswith("p-"):
                value = "GENERATED"  # made up by the server
            attrs.append(f"{key}={text(value)!r}")
        kept = [walk(c, e) for c in e if c.tag not in DROPPED
                and not _deliberate(c, elem)
                # a destroyed room's notice: ours is XEP-0045's example 201
                and not (destroy_notice and local(c.tag) in ("item", "status"))
                and not (config_form is not None and _false_value(c, e))]
        if e.tag == f"{{{NS_MUC_USER}}}x":
            kids = _muc_user_order(kept, elem)
        elif e is config_form:
            kids = kept  # the fields in their order, the section headers between them
        else:
            kids = sorted(kept)
        body = text((e.text or "").strip())
        tag = e.tag.replace(f"{{{NS_CLIENT}}}", "")
        return f"<{tag} {' '.join(attrs)}>{body}{''.join(kids)}</>"

    return walk(elem, None)


def _muc_user_order(kids: list[str], stanza: ET.Element) -> list[str]:
    """The children of a muc#user <x/> in the order sent (Prosody's own test scripts
    compare it: <status/> before <item/>, 110 last), except the codes of a configuration
    change, which mod_muc writes in its table's hash order."""
    if local(stanza.tag) != "message":
        return kids
    status = f"<{{{NS_MUC_USER}}}status"
    runs: list[list[str]] = []
    for kid in kids:
        if runs and kid.startswith(status) and runs[-1][-1].startswith(status):
            runs[-1].append(kid)
        else:
            runs.append([kid])
    return [kid for run in runs for kid in sorted(run)]


# --- the steps ----------------------------------------------------------------------------


def step(cast: Cast, who: str, xml: str) -> dict[str, list[str]]:
    """``who`` sends ``xml`` (ROOM stands for the room's JID, SERVICE for the service);
    once the room has handled it and every client has what it sent, each client's
    stanzas, normalised and sorted (mod_muc lists occupants in no fixed order)."""
    sender = cast.clients[who]
    sender.send_raw(xml.replace("ROOM", cast.room).replace("SERVICE", cast.service))
    # the sender's stream is in order: the service has handled the step once it answers;
    # an iq's own answer may come later (an archive query reads storage): waited for too
    run(sender.barrier(cast.service))
    iq_id = re.match(r"<iq [^>]*id='([^']+)'", xml)
    if iq_id:
        answer = run(sender.expect(lambda e: e.get("id") == iq_id.group(1), 10))
        sender.inbox.append(answer)
    run(asyncio.gather(*(c.barrier(cast.service) for n, c in cast.clients.items()
                         if n != who)))
    resource = "ours" if cast.service == OURS else "modmuc"
    # only what the service sent: the two sessions of an account see each other's presence
    return {name: sorted(normalise(e, cast.service, resource) for e in client.drain()
                         if (e.get("from") or "").split("/")[0].endswith(cast.service))
            for name, client in cast.clients.items()}


def join(nick: str, extra: str = "", password: str | None = None,
         history: str = "<history maxstanzas='20'/>") -> str:
    secret = f"<password>{password}</password>" if password is not None else ""
    return (f"<presence to='ROOM/{nick}' id='p-join-{nick}'><x xmlns='{NS_MUC}'>"
            f"{history}{secret}</x>{extra}</presence>")


def owner_submit(fields: dict[str, str | list[str]], iq_id: str) -> str:
    parts = [f"<field var='FORM_TYPE'><value>{NS_ROOMCONFIG}</value></field>"]
    for var, values in fields.items():
        values = [values] if isinstance(values, str) else values
        parts.append(f"<field var='{var}'>" + "".join(f"<value>{v}</value>" for v in values)
                     + "</field>")
    return (f"<iq type='set' to='ROOM' id='{iq_id}'><query xmlns='{NS_MUC_OWNER}'>"
            f"<x xmlns='{NS_DATA}' type='submit'>{''.join(parts)}</x></query></iq>")


def admin(items: str, iq_id: str, iq_type: str = "set") -> str:
    return (f"<iq type='{iq_type}' to='ROOM' id='{iq_id}'><query xmlns='{NS_MUC_ADMIN}'>"
            f"{items}</query></iq>")


def invite(to: str, iq_id: str, reason: str | None) -> str:
    inner = f"<reason>{reason}</reason>" if reason is not None else ""
    return (f"<message to='ROOM' id='{iq_id}'><x xmlns='{NS_MUC_USER}'>"
            f"<invite to='{to}'>{inner}</invite></x></message>")


def owner_get(iq_id: str) -> str:
    return f"<iq type='get' to='ROOM' id='{iq_id}'><query xmlns='{NS_MUC_OWNER}'/></iq>"


def disco_info(iq_id: str, node: str = "") -> str:
    node_attr = f" node='{node}'" if node else ""
    return (f"<iq type='get' to='ROOM' id='{iq_id}'><query "
            f"xmlns='http://jabber.org/protocol/disco#info'{node_attr}/></iq>")


def disco_items(iq_id: str) -> str:
    return (f"<iq type='get' to='ROOM' id='{iq_id}'><query "
            "xmlns='http://jabber.org/protocol/disco#items'/></iq>")


def register_get(iq_id: str) -> str:
    return f"<iq type='get' to='ROOM' id='{iq_id}'><query xmlns='jabber:iq:register'/></iq>"


def register_set(nick: str, iq_id: str) -> str:
    return (f"<iq type='set' to='ROOM' id='{iq_id}'><query xmlns='jabber:iq:register'>"
            f"<x xmlns='{NS_DATA}' type='submit'><field var='FORM_TYPE'><value>"
            "http://jabber.org/protocol/muc#register</value></field>"
            f"<field var='muc#register_roomnick'><value>{nick}</value></field></x>"
            "</query></iq>")


GUEST_BARE = GUEST.split("/")[0]
QUINN_BARE = QUINN.split("/")[0]
PETE_BARE = PETE.split("/")[0]

# (label, who, stanza): the life of a room, everything a client sees compared
SCENARIO: list[tuple[str, str, str]] = [
    ("create (locked, 201)", "owner", join("boss")),
    ("instant room", "owner", owner_submit({}, "p-instant")),
    ("disco#info of an open room, by its owner", "owner", disco_info("p-di-owner")),
    ("disco#info of an open room, by a stranger", "guest", disco_info("p-di-stranger")),
    ("registration form, asked by a stranger", "guest", register_get("p-reg-stranger")),
    ("join", "pete", join("pete")),
    ("groupchat", "pete", "<message to='ROOM' type='groupchat' id='p-m1'><body>hi</body>"
                          "</message>"),
    ("join with history", "quinn", join("quinn")),
    ("presence change", "pete", "<presence to='ROOM/pete' id='p-away'><show>away</show>"
                                "<status>brb</status></presence>"),
    ("nick change (303)", "pete", "<presence to='ROOM/peter' id='p-nick'/>"),
    ("nick in use", "quinn", "<presence to='ROOM/peter' id='p-conflict'/>"),
    ("bad nick (strict validation)", "quinn", "<presence to='ROOM/bot\U0001F916' id='p-bot'/>"),
    ("subject", "owner", "<message to='ROOM' type='groupchat' id='p-subj'>"
                         "<subject>Topic</subject></message>"),
    ("config change: name (104)", "owner",
     owner_submit({"muc#roomconfig_roomname": "Parity"}, "p-cfg-name")),
    ("config change: non-anonymous (172)", "owner",
     owner_submit({"muc#roomconfig_whois": "anyone"}, "p-cfg-anyone")),
    ("config change: semi-anonymous (173)", "owner",
     owner_submit({"muc#roomconfig_whois": "moderators"}, "p-cfg-mods")),
    ("config change: presence broadcast incl. none", "owner",
     owner_submit({"muc#roomconfig_presencebroadcast":
                   ["none", "visitor", "participant", "moderator"]}, "p-cfg-pb")),
    ("presence broadcast: moderators only", "owner",
     owner_submit({"muc#roomconfig_presencebroadcast": ["moderator"]}, "p-cfg-pb-mod")),
    ("hidden participant changes presence", "pete",
     "<presence to='ROOM/peter' id='p-hidden'><show>dnd</show></presence>"),
    ("probe of a hidden participant by a moderator", "owner",
     "<presence type='probe' to='ROOM/peter' id='p-pr-hidden'/>"),
    ("probe of a hidden participant by a participant", "quinn",
     "<presence type='probe' to='ROOM/peter' id='p-pr-hidden2'/>"),
    ("hidden newcomer joins", "guest", join("newcomer")),
    ("hidden newcomer changes nick", "guest", "<presence to='ROOM/newer' id='p-hnick'/>"),
    ("hidden newcomer leaves", "guest",
     "<presence to='ROOM/newer' type='unavailable' id='p-hleave'/>"),
    ("presence broadcast: everyone again", "owner",
     owner_submit({"muc#roomconfig_presencebroadcast": ["visitor", "participant", "moderator"]},
                  "p-cfg-pb-all")),
    ("invite with reason", "pete", invite(GUEST_BARE, "p-inv1", "Join us")),
    ("invite without reason", "pete", invite(GUEST_BARE, "p-inv2", None)),
    ("invite from the owner", "owner", invite(GUEST_BARE, "p-inv3", "")),
    ("config change: non-anonymous again", "owner",
     owner_submit({"muc#roomconfig_whois": "anyone"}, "p-cfg-anyone2")),
    ("invite in a non-anonymous room", "pete", invite(GUEST_BARE, "p-inv4", "real")),
    ("join a non-anonymous room (100)", "guest", join("guest")),
    ("guest leaves", "guest", "<presence to='ROOM/guest' type='unavailable' id='p-gl'/>"),
    ("config change: semi-anonymous again", "owner",
     owner_submit({"muc#roomconfig_whois": "moderators"}, "p-cfg-mods2")),
    ("decline", "guest", f"<message to='ROOM' id='p-dec'><x xmlns='{NS_MUC_USER}'>"
                         f"<decline to='{PETE_BARE}'><reason>busy</reason></decline></x>"
                         "</message>"),
    ("probe from outside", "guest", "<presence type='probe' to='ROOM/peter' id='p-pr1'/>"),
    ("probe by an occupant", "quinn", "<presence type='probe' to='ROOM/peter' id='p-pr2'/>"),
    ("presence broadcast: no visitors", "owner",
     owner_submit({"muc#roomconfig_presencebroadcast": ["participant", "moderator"]},
                  "p-cfg-pb-novis")),
    ("voice revoked into a role not broadcast", "owner",
     admin("<item nick='quinn' role='visitor'><reason>hush</reason></item>", "p-visitor")),
    ("voice granted again", "owner",
     admin("<item nick='quinn' role='participant'/>", "p-voice")),
    ("presence broadcast: visitors again", "owner",
     owner_submit({"muc#roomconfig_presencebroadcast": ["visitor", "participant", "moderator"]},
                  "p-cfg-pb-vis")),
    ("voice revoked", "owner", admin("<item nick='quinn' role='visitor'/>", "p-visitor2")),
    ("member", "owner", admin(f"<item jid='{PETE_BARE}' affiliation='member'/>", "p-member")),
    ("admin", "owner", admin(f"<item jid='{PETE_BARE}' affiliation='admin'/>", "p-admin")),
    ("moderator list", "owner", admin("<item role='moderator'/>", "p-l-mod", "get")),
    ("admin list", "owner", admin("<item affiliation='admin'/>", "p-l-admin", "get")),
    ("owner list", "owner", admin("<item affiliation='owner'/>", "p-l-owner", "get")),
    ("member list", "owner", admin("<item affiliation='member'/>", "p-l-member", "get")),
    ("participant list", "owner", admin("<item role='participant'/>", "p-l-part", "get")),
    ("list asked by a participant", "quinn",
     admin("<item affiliation='owner'/>", "p-l-forbidden", "get")),
    ("kick", "owner", admin("<item nick='quinn' role='none'><reason>out</reason></item>",
                            "p-kick")),
    ("ban of an absent user", "owner",
     admin(f"<item jid='{QUINN_BARE}' affiliation='outcast'><reason>bye</reason></item>",
           "p-ban")),
    ("outcast list", "owner", admin("<item affiliation='outcast'/>", "p-l-out", "get")),
    ("banned user joins", "quinn", join("quinn")),
    ("leave", "pete", "<presence to='ROOM/peter' type='unavailable' id='p-leave'>"
                      "<status>gone</status></presence>"),
    ("config change: hidden, members-only, password", "owner",
     owner_submit({"muc#roomconfig_publicroom": "0", "muc#roomconfig_membersonly": "1",
                   "muc#roomconfig_passwordprotectedroom": "1",
                   "muc#roomconfig_roomsecret": "sesame"}, "p-cfg-closed")),
    ("config change: default history (no 104)", "owner",
     owner_submit({"muc#roomconfig_defaulthistorymessages": "1"}, "p-cfg-defhist")),
    ("config change: member invites", "owner",
     owner_submit({"{http://prosody.im/protocol/muc}roomconfig_allowmemberinvites": "1"},
                  "p-cfg-meminv")),
    ("a member of a members-only room", "owner",
     admin(f"<item jid='{GUEST_BARE}' affiliation='member'/>", "p-member2")),
    ("the member registers a nick", "guest", register_set("Hank", "p-reg-hank")),
    ("the member joins under another nick, asking no history limit", "guest",
     join("guest", password="sesame", history="")),
    ("probe of a registered nick nobody holds, by a participant", "guest",
     "<presence type='probe' to='ROOM/Hank' id='p-pr-hank1'/>"),
    ("probe of a registered nick nobody holds, by the owner", "owner",
     "<presence type='probe' to='ROOM/Hank' id='p-pr-hank2'/>"),
    ("reserving a nick through an affiliation change", "owner",
     admin(f"<item jid='{PETE_BARE}' affiliation='admin' nick='Pete'/>", "p-reserve")),
    ("the admin list shows the reserved nick", "owner",
     admin("<item affiliation='admin'/>", "p-l-admin2", "get")),
    ("probe of a nick reserved so", "owner",
     "<presence type='probe' to='ROOM/Pete' id='p-pr-pete'/>"),
    ("member removed from a members-only room (321, actor's JID)", "owner",
     admin(f"<item jid='{GUEST_BARE}' affiliation='none'><reason>bye</reason></item>",
           "p-unmember")),
    ("configuration form", "owner", owner_get("p-cfg-get")),
    ("disco#info of a closed room, by a stranger", "guest", disco_info("p-di-closed-s")),
    ("disco#info of a closed room, by its owner", "owner", disco_info("p-di-closed-o")),
    ("disco#items of a closed room, by a stranger", "guest", disco_items("p-dit-closed-s")),
    ("registration form of a closed room, asked by a stranger", "guest",
     register_get("p-reg-closed")),
    ("probe of a closed room from outside", "guest",
     "<presence type='probe' to='ROOM/boss' id='p-pr-closed'/>"),
    ("destroy", "owner", f"<iq type='set' to='ROOM' id='p-destroy'><query "
                         f"xmlns='{NS_MUC_OWNER}'><destroy jid='elsewhere@SERVICE'>"
                         "<reason>done</reason></destroy></query></iq>"),
]


# Steps where ours sends more than mod_muc on purpose (docs/mod_muc-parity.md): what
# mod_muc sends must be part of what ours sends.
MORE_THAN_MOD_MUC = {
    # ours tells the room of a hidden occupant's nick change (303): the slaves must learn
    # their users' nicks
    "hidden newcomer changes nick",
}


def _parts(normalised: list[str]) -> Counter[str]:
    """The fields and features of normalised stanzas: what differs in a long one."""
    return Counter(p for text in normalised
                   for p in re.findall(r"<[^<>/]*(?:field|feature|identity)[^<>]*>"
                                       r"(?:<[^<>]*value >[^<]*</>)*", text))


def test_every_stanza_a_client_sees_matches_mod_muc(casts: list[Cast]) -> None:
    ours, theirs = casts
    differences = []
    for label, who, xml in SCENARIO:
        got, expected = step(ours, who, xml), step(theirs, who, xml)
        assert any(expected.values()), f"{label}: mod_muc sent nothing (a broken step?)"
        for name in got:
            if label in MORE_THAN_MOD_MUC:
                if not set(expected[name]) <= set(got[name]):
                    differences.append(f"{label}, as {name} sees it: mod_muc sent what ours"
                                       " does not:\n  " + "\n  ".join(
                                           sorted(set(expected[name]) - set(got[name]))))
            elif got[name] != expected[name] and label.startswith("disco#info"):
                differences.append(f"{label}, as {name} sees it: only ours: "
                                   f"{dict(_parts(got[name]) - _parts(expected[name]))}; only "
                                   f"mod_muc: {dict(_parts(expected[name]) - _parts(got[name]))}")
            elif got[name] != expected[name]:
                differences.append(f"{label}, as {name} sees it:\n  ours:    "
                                   + "\n           ".join(got[name]) + "\n  mod_muc: "
                                   + "\n           ".join(expected[name]))
    assert not differences, "\n\n".join(differences)


def test_the_step_barrier_sees_what_a_step_sends(casts: list[Cast]) -> None:
    """The comparison above is only as good as its barrier: a join's stanzas are all in."""
    for cast in casts:
        seen = step(cast, "owner", join("boss"))["owner"]
        assert any("code='201'" in s for s in seen), seen


def test_the_config_form_opens_and_goes_back_in_a_real_client_library(
        casts: list[Cast]) -> None:
    """profanity 0.13 segfaulted on `/room config` over `<option label='No limit'><value/>`
    (the maximum-occupants field). Read with slixmpp's XEP-0004 forms, as a client does:
    no option without a value, every field's value among its options, and the form as
    the client got it (no limit: 'none') goes back and is accepted; then a limit."""
    owner = casts[0].clients["owner"]
    room = f"form@{OURS}"
    muc = owner.xmpp.plugin["xep_0045"]
    step(casts[0], "owner", join("boss").replace("ROOM", room))

    async def open_form() -> dict:
        return (await muc.get_room_config(room)).get_fields()

    fields = run(open_form())
    assert "muc#roomconfig_maxusers" in fields
    for var, f in fields.items():
        if f["type"] not in ("list-single", "list-multi"):
            continue
        offered = [o["value"] for o in f.get_options()]
        assert offered and all(v.strip() for v in offered), (var, f.get_options())
        chosen = f.get_value()
        for value in chosen if isinstance(chosen, list) else [chosen]:
            assert value in offered, (var, value, offered)
    assert fields["muc#roomconfig_maxusers"].get_value() == "none"

    async def submit(**values: str) -> None:
        form = await muc.get_room_config(room)
        for var, value in values.items():
            form.get_fields()[var]["value"] = value
        await muc.set_room_config(room, form)

    run(submit())  # the form as it came, "none" included: accepted (an error raises)
    run(submit(**{"muc#roomconfig_maxusers": "10"}))
    assert run(open_form())["muc#roomconfig_maxusers"].get_value() == "10"
    run(submit(**{"muc#roomconfig_maxusers": "none"}))
    assert run(open_form())["muc#roomconfig_maxusers"].get_value() == "none"


# --- every room JID question, of every kind of room, as a stranger, a member and the owner --

ROOM_KINDS = [(public, members_only, password) for public in (True, False)
              for members_only in (False, True) for password in (False, True)]
QUESTIONS = {
    "disco#info": disco_info("p-q-info"),
    "disco#items": disco_items("p-q-items"),
    "MAM query": "<iq type='set' to='ROOM' id='p-q-mam'><query xmlns='urn:xmpp:mam:2'/></iq>",
    "configuration form": owner_get("p-q-config"),
    "member list": admin("<item affiliation='member'/>", "p-q-members", "get"),
    "registration form": register_get("p-q-register"),
}
ASKERS = {"stranger": "guest", "member": "pete", "owner": "owner"}


def _kind_label(public: bool, members_only: bool, password: bool) -> str:
    return (f"{'public' if public else 'hidden'}, {'members-only' if members_only else 'open'}"
            f"{', password' if password else ''}")


def _without_occupant_items(seen: list[str]) -> list[str]:
    """disco#items with the occupant items taken out: ours lists the occupants of a public
    room to anyone and of a hidden room to its occupants, mod_muc never (docs)."""
    return [re.sub(r"<\{http://jabber.org/protocol/disco#items\}item [^>]*></>", "", s)
            for s in seen]


def test_every_room_question_answers_as_mod_muc_for_everyone(
        archive_casts: list[Cast]) -> None:
    """issue 17 Build 2: each room JID question (disco#info, disco#items, a MAM query, the
    configuration form, the member list, the registration form) asked by a stranger, a
    member (not in the room) and the owner (in it), of each kind of room (public or hidden,
    open or members-only, with or without a password), answered by ours as by mod_muc
    (with mod_muc_mam). The one deliberate difference, the occupants in disco#items, is
    taken out only where ours lists them (a public room, or an occupant asking): a hidden
    room tells a stranger or an absent member nothing."""
    casts = archive_casts
    differences = []
    for n, (public, members_only, password) in enumerate(ROOM_KINDS):
        kind = _kind_label(public, members_only, password)
        fields = {"muc#roomconfig_publicroom": "1" if public else "0",
                  "muc#roomconfig_membersonly": "1" if members_only else "0"}
        if password:
            fields["muc#roomconfig_roomsecret"] = "sesame"
        setup = [("owner", join("boss")), ("owner", owner_submit(fields, f"p-m{n}")),
                 ("owner", admin(f"<item jid='{PETE_BARE}' affiliation='member'/>",
                                 f"p-mm{n}"))]
        for who, xml in setup:
            for cast in casts:
                step(_in_room(cast, n), who, xml)
        for question, xml in QUESTIONS.items():
            for asker, who in ASKERS.items():
                got, expected = (step(_in_room(cast, n), who, xml)[who] for cast in casts)
                if question == "disco#items" and (public or asker == "owner"):
                    got, expected = (_without_occupant_items(got),
                                     _without_occupant_items(expected))
                if got != expected:
                    differences.append(f"{question} of a {kind} room, asked by the "
                                       f"{asker}:\n  ours:    {got}\n  mod_muc: {expected}")
    assert not differences, "\n\n".join(differences)


class _RoomCast(Cast):
    room_name: str = ""

    @property
    def room(self) -> str:
        return self.room_name


def _in_room(cast: Cast, n: int) -> Cast:
    """`cast` speaking to room matrix<n> on its service."""
    other = _RoomCast(cast.service, cast.clients)
    other.room_name = f"matrix{n}@{cast.service}"
    return other

"""dmuc-admin import-prosody against rooms a real Prosody 0.12 mod_muc made.

One Prosody runs two mod_muc components, one on internal (file) storage and one on SQL
storage (SQLite3); a client makes the same persistent rooms on both (settings,
affiliations with an outcast and a domain ban, a reserved nick, a subject) and records
how mod_muc shows them. Prosody stops, both stores are imported, and dmuc-master takes
over the component's JID on the same Prosody with the imported store: a client must see
the rooms exactly as mod_muc showed them.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import ComponentSpec, ProsodyInstance, TwistdDaemon
from testbed.configs import daemon_toml
from tests.integration.conftest import keep_testbed, make_tempdir
from tests.integration.test_master_daemon import (
    NS_MUC_REGISTER,
    NS_REGISTER,
    NS_ROOMCONFIG,
    admin_list,
    admin_set,
    assert_result,
    disco_info,
    features,
    form_xml,
    iq,
    is_subject,
)
from tests.integration.xmpp_client import (
    NS_CLIENT,
    NS_DATA,
    NS_DELAY,
    NS_DISCO_INFO,
    NS_MUC,
    NS_MUC_OWNER,
    Client,
    all_of,
    has_status,
    is_message,
    is_presence,
    run,
)

pytestmark = pytest.mark.integration

VHOST = "pros.example"
FILE_MUC = "rooms.pros.example"  # storage = "internal"
SQL_MUC = "sqlrooms.pros.example"  # storage = "sql", SQLite3
ALICE, BOB, CAROL, DAVE = (f"{n}@{VHOST}" for n in ("alice", "bob", "carol", "dave"))
PASSWORD = "s3cret"
# the settings mod_muc shows and dmuc must show the same (submitted for the lounge)
LOUNGE = {
    "roomname": "The Lounge", "roomdesc": "Where the cast meets — café", "persistentroom": True,
    "publicroom": False, "membersonly": True, "moderatedroom": True,
    "passwordprotectedroom": True, "roomsecret": PASSWORD, "whois": "anyone",
    "changesubject": True, "historylength": 7, "defaulthistorymessages": 3,
}
# mod_muc 0.12's name for "members may invite" (dmuc's form: muc#roomconfig_allowinvites)
PROSODY_MEMBER_INVITES = "{http://prosody.im/protocol/muc}roomconfig_allowmemberinvites"
ENABLE_ARCHIVING = "muc#roomconfig_enablearchiving"  # mod_muc_mam's, and dmuc's
COMPARED_VARS = ["muc#roomconfig_" + k for k in (
    "roomname", "roomdesc", "persistentroom", "publicroom", "membersonly", "moderatedroom",
    "roomsecret", "whois", "changesubject", "historylength", "defaulthistorymessages",
    "presencebroadcast", "lang", "enablearchiving")]
NS_MAM = "urn:xmpp:mam:2"


def dmuc_admin(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`python -m dmuc.admin ...` of this checkout (the console script's entry point)."""
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-m", "dmuc.admin", *args], cwd=root,
                            capture_output=True, text=True, timeout=60, check=False)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def connect(prosody: ProsodyInstance, jid: str) -> Client:
    client = Client(jid, "pw", host=prosody.ip, port=prosody.c2s_port)
    run(client.connect())
    return client


def enter(client: Client, room: str, nick: str, password: str | None = None) -> ET.Element:
    """Join; returns the subject message (every join ends with it)."""
    secret = f"<password>{password}</password>" if password else ""
    client.send_raw(f"<presence to='{room}/{nick}'><x xmlns='{NS_MUC}'>{secret}</x></presence>")
    run(client.expect(all_of(is_presence(from_=f"{room}/{nick}"), lambda e: has_status(e, 110))))
    subject = run(client.expect(is_subject(room)))
    client.drain()
    return subject


def leave(client: Client, room: str, nick: str) -> None:
    client.send_raw(f"<presence to='{room}/{nick}' type='unavailable'/>")
    run(client.expect(is_presence(from_=f"{room}/{nick}", type_="unavailable")))


def make_rooms(muc: str, alice: Client, bob: Client) -> None:
    """The same steps on any MUC service: two persistent rooms."""
    lounge, plain = f"lounge@{muc}", f"plain@{muc}"
    alice.send_raw(f"<presence to='{lounge}/alice'><x xmlns='{NS_MUC}'/></presence>")
    run(alice.expect(all_of(is_presence(from_=f"{lounge}/alice"), lambda e: has_status(e, 201))))
    fields = {f"muc#roomconfig_{k}": v for k, v in LOUNGE.items()}
    fields["muc#roomconfig_presencebroadcast"] = "moderator"  # list-multi, one value
    fields[PROSODY_MEMBER_INVITES] = True
    fields[ENABLE_ARCHIVING] = False  # the owner's choice: no archive of this room
    assert_result(iq(alice, f"<iq type='set' to='{lounge}'><query xmlns='{NS_MUC_OWNER}'>"
                            f"{form_xml(NS_ROOMCONFIG, fields)}</query></iq>"))
    for item in (f"<item affiliation='member' jid='{BOB}'/>",
                 f"<item affiliation='admin' jid='{CAROL}'/>",
                 f"<item affiliation='outcast' jid='{DAVE}'><reason>spam</reason></item>",
                 "<item affiliation='outcast' jid='evil.example'/>"):
        admin_set(alice, lounge, item)  # mod_muc takes one item per request
    register = form_xml(NS_MUC_REGISTER, {"muc#register_roomnick": "bobby"})
    assert_result(iq(bob, f"<iq type='set' to='{lounge}'><query xmlns='{NS_REGISTER}'>"
                          f"{register}</query></iq>"))
    alice.send_raw(f"<message to='{lounge}' type='groupchat'><subject>Welcome &amp; "
                   "hello</subject></message>")
    run(alice.expect(is_subject(lounge)))
    leave(alice, lounge, "alice")

    alice.send_raw(f"<presence to='{plain}/alice'><x xmlns='{NS_MUC}'/></presence>")
    run(alice.expect(all_of(is_presence(from_=f"{plain}/alice"), lambda e: has_status(e, 201))))
    fields = {"muc#roomconfig_persistentroom": True, "muc#roomconfig_publicroom": True,
              "muc#roomconfig_roomname": "Plain", ENABLE_ARCHIVING: True}
    assert_result(iq(alice, f"<iq type='set' to='{plain}'><query xmlns='{NS_MUC_OWNER}'>"
                            f"{form_xml(NS_ROOMCONFIG, fields)}</query></iq>"))
    alice.send_raw(f"<message to='{plain}' type='groupchat'><subject>Plain</subject></message>")
    run(alice.expect(is_subject(plain)))
    leave(alice, plain, "alice")


def archived_bodies(client: Client, room: str, queryid: str) -> list[str | None]:
    """The bodies of the room's archive (MAM), as the client reads them."""
    assert_result(iq(client, f"<iq type='set' to='{room}'><query xmlns='{NS_MAM}' "
                             f"queryid='{queryid}'/></iq>"))
    found = []
    for message in client.received(is_message(from_=room)):
        result = message.find(f"{{{NS_MAM}}}result")
        if result is not None and result.get("queryid") == queryid:
            found.append(result.findtext(
                f"{{urn:xmpp:forward:0}}forwarded/{{{NS_CLIENT}}}message/{{{NS_CLIENT}}}body"))
    return found


def form_values(res: ET.Element) -> dict[str, object]:
    """Each field's value as meant: a boolean as True/False (mod_muc sends no <value/> for
    false), a list-multi as a set, else the list of values."""
    assert_result(res)
    values: dict[str, object] = {}
    for f in res.iter(f"{{{NS_DATA}}}field"):
        texts = [v.text or "" for v in f.findall(f"{{{NS_DATA}}}value")]
        if f.get("type") == "boolean":
            values[f.get("var", "")] = bool(texts) and texts[0] in ("1", "true")
        elif f.get("type") == "list-multi":
            values[f.get("var", "")] = set(texts)
        else:
            values[f.get("var", "")] = texts
    return values


def observe(muc: str, alice: Client, bob: Client) -> dict[str, object]:
    """How the rooms look to clients: what must be the same before and after."""
    seen: dict[str, object] = {}
    items = iq(alice, f"<iq type='get' to='{muc}'><query xmlns="
                      "'http://jabber.org/protocol/disco#items'/></iq>")
    seen["public rooms"] = sorted(i.get("jid", "").split("@")[0] for i in items.iter()
                                  if i.tag.endswith("}item"))
    for node, password in (("lounge", PASSWORD), ("plain", None)):
        room = f"{node}@{muc}"
        info = disco_info(alice, room)
        seen[f"{node} features"] = sorted(f for f in features(info)
                                          if f.startswith("muc_") or f == NS_MAM)
        seen[f"{node} name"] = [i.get("name") for i in info.iter(f"{{{NS_DISCO_INFO}}}identity")]
        roominfo = {k: v for k, v in form_values(info).items()
                    if k in ("muc#roominfo_description", "muc#roominfo_lang")}
        seen[f"{node} roominfo"] = roominfo
        subject = enter(alice, room, "alice", password)
        delay = subject.find(f"{{{NS_DELAY}}}delay")
        seen[f"{node} subject"] = (subject.findtext(f"{{{NS_CLIENT}}}subject"),
                                   subject.get("from"))
        seen[f"{node} subject delay"] = delay is not None and delay.get("stamp")
        # the owner's archiving choice holds: said now, archived or not
        alice.send_raw(f"<message to='{room}' type='groupchat'><body>archived?</body></message>")
        run(alice.expect(all_of(is_message(from_=f"{room}/alice"),
                                lambda e: e.findtext(f"{{{NS_CLIENT}}}body") == "archived?")))
        seen[f"{node} archive"] = archived_bodies(alice, room, f"{node}-{len(seen)}")
        config = form_values(iq(alice, f"<iq type='get' to='{room}'>"
                                       f"<query xmlns='{NS_MUC_OWNER}'/></iq>"))
        seen[f"{node} config"] = {v: config.get(v) for v in COMPARED_VARS}
        seen[f"{node} member invites"] = config.get(
            PROSODY_MEMBER_INVITES, config.get("muc#roomconfig_allowinvites"))
        for affiliation in ("owner", "admin", "member", "outcast"):
            seen[f"{node} {affiliation}s"] = {
                jid: (item.get("affiliation"), item.get("nick"))
                for jid, item in admin_list(alice, room, affiliation).items()}
        leave(alice, room, "alice")
        nick = iq(bob, f"<iq type='get' to='{room}'><query xmlns='{NS_DISCO_INFO}' "
                       "node='x-roomuser-item'/></iq>")
        seen[f"{node} bob's nick"] = [i.get("name") for i in
                                      nick.iter(f"{{{NS_DISCO_INFO}}}identity")]
    return seen


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = make_tempdir("dmuc-import-")
    yield path
    if not keep_testbed():
        shutil.rmtree(path, ignore_errors=True)


def test_rooms_made_by_prosody_look_the_same_on_dmuc(workdir: Path) -> None:
    sql_db = workdir / "data" / "prosody.sqlite"
    prosody = ProsodyInstance(workdir, virtualhosts=[VHOST], log_level="info", components=[
        ComponentSpec(FILE_MUC, "", plugin="muc", options={"modules_enabled": ["muc_mam"]}),
        ComponentSpec(SQL_MUC, "", plugin="muc",
                      options={"storage": "sql", "modules_enabled": ["muc_mam"],
                               "sql": {"driver": "SQLite3", "database": str(sql_db)}})])
    prosody.start()
    master = None
    try:
        alice, bob = connect(prosody, ALICE + "/a"), connect(prosody, BOB + "/b")
        for muc in (FILE_MUC, SQL_MUC):
            make_rooms(muc, alice, bob)
        before = observe(FILE_MUC, alice, bob)
        assert before["lounge subject"][:2] == ("Welcome & hello", f"lounge@{FILE_MUC}/alice")
        assert before["plain subject delay"], "mod_muc gives the subject with its time"
        assert before["lounge archive"] == [] and before["plain archive"] == ["archived?"]
        assert NS_MAM in before["plain features"] and NS_MAM not in before["lounge features"]
        assert before["lounge bob's nick"] == ["bobby"]
        assert before["lounge outcasts"] == {DAVE: ("outcast", None),
                                             "evil.example": ("outcast", None)}
        run(alice.disconnect())
        run(bob.disconnect())
        prosody.stop()
        assert (workdir / "data" / "rooms%2epros%2eexample" / "config" / "lounge.dat").exists()

        store, sql_store = workdir / "dmuc.db", workdir / "dmuc-sql.db"
        common = ["--storage", f"sqlite:///{store}", "--service", FILE_MUC]
        from_files = ["import-prosody", "--host", FILE_MUC,
                      "--data-path", str(workdir / "data")]
        dry = dmuc_admin(*common, *from_files, "--dry-run").stdout
        assert "would import lounge@" in dry and "2 to import" in dry, dry
        assert dmuc_admin(*common, "list-rooms").stdout.startswith("0 rooms"), "dry run wrote"
        first = dmuc_admin(*common, *from_files).stdout
        assert f"imported lounge@{FILE_MUC}" in first and "2 imported" in first, first
        again = dmuc_admin(*common, *from_files).stdout
        assert "0 imported" in again and "2 unchanged" in again, again
        # the SQL store of the other component holds the same rooms
        sql = dmuc_admin("--storage", f"sqlite:///{sql_store}", "--service", FILE_MUC,
                         "import-prosody", "--host", SQL_MUC, "--sqlite", str(sql_db)).stdout
        assert "2 imported" in sql, sql
        for room in ("lounge", "plain"):
            shown = [dmuc_admin("--storage", f"sqlite:///{db}", "--service", FILE_MUC,
                                "show-room", f"{room}@{FILE_MUC}", "--json").stdout
                     for db in (store, sql_store)]
            assert shown[0] == shown[1]
        listing = dmuc_admin(*common, "list-rooms").stdout
        assert f"lounge@{FILE_MUC}\thidden,members-only,moderated,password,non-anonymous" \
            in listing, listing

        # dmuc-master takes the component's JID on the same Prosody
        secret = secrets.token_hex(16)
        prosody.components = [ComponentSpec(FILE_MUC, secret)]
        prosody.start()
        config = workdir / "master.toml"
        config.write_text(daemon_toml(jid=FILE_MUC, host=prosody.ip,
                                      port=prosody.component_port, secret=secret,
                                      db_path=store, level="info",
                                      slaves={"dmuc.other.example": ["other.example"]}))
        master = TwistdDaemon("dmuc-master", config, workdir / "master")
        master.start(wait_for="component connected")
        assert "restored 2 persistent rooms" in master.log_text()
        alice, bob = connect(prosody, ALICE + "/a"), connect(prosody, BOB + "/b")
        after = observe(FILE_MUC, alice, bob)
        for key, value in before.items():
            if key == "lounge subject delay" and value is False:
                # mod_muc 0.12.3 gave this room's subject (set once, stored with its
                # subject_time) without a delay on a later join, and the plain room's with
                # one; dmuc gives both with the time it was set (what the import read)
                assert after[key], "dmuc gives the subject with the time it was set"
                continue
            assert after[key] == value, f"{key}: mod_muc showed {value!r}, dmuc {after[key]!r}"
        run(alice.disconnect())
        run(bob.disconnect())
        status = dmuc_admin("--config", str(config), "list-slaves").stdout
        assert f"master {FILE_MUC}: pid {master.pid}" in status, status
        assert "dmuc.other.example\tunregistered\tsince 20" in status, status
        master.stop()
        stopped = dmuc_admin("--config", str(config), "list-slaves").stdout
        assert f"master {FILE_MUC}: stopped 20" in stopped, stopped
    finally:
        if master is not None:
            master.stop()
        prosody.stop()


def test_import_refuses_what_it_cannot_read(workdir: Path) -> None:
    """A data file that is not a Lua literal is one line and exit status 1, no traceback."""
    config_dir = workdir / "data" / "rooms%2epros%2eexample" / "config"
    config_dir.mkdir(parents=True)
    (config_dir / "evil.dat").write_text('return { _data = os.execute("touch pwned") };\n')
    result = dmuc_admin("--storage", f"sqlite:///{workdir / 'dmuc.db'}", "--service", FILE_MUC,
                        "import-prosody", "--host", FILE_MUC, "--data-path",
                        str(workdir / "data"), check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith("dmuc-admin: ") and "evil.dat: line 1" in result.stderr
    assert "Traceback" not in result.stderr
    assert not os.path.exists(workdir / "pwned")

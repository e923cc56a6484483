"""dmuc-admin without Prosody: the Lua literal parser, the mod_muc -> dmuc mapping (on a
file a real Prosody 0.12.3 wrote, tests/unit/data/prosody/lounge.dat), the SQL rows, the
master's slave status records, and the commands against a real SQLite store."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from dmuc.admin import luadata, prosody_import
from dmuc.admin.cli import build_parser
from dmuc.admin.errors import LuaDataError
from dmuc.master.distribution import RegistrationState
from dmuc.master.status import UNREGISTERED, SlaveStatus
from tests.unit.dmuc_net import Net, slave_jid
from tests.unit.muc_helpers import SERVICE, WUMPUS

ROOT = Path(__file__).resolve().parents[2]
LOUNGE_DAT = Path(__file__).resolve().parent / "data" / "prosody" / "lounge.dat"
HOST = "rooms.pros.example"


# --- the Lua literal parser -----------------------------------------------------------------


def test_parses_what_prosody_serialization_writes() -> None:
    text = ('return {\n\t["_data"] = {\n\t\t["name"] = "caf\\195\\169 \\"x\\"\\n";\n'
            '\t\tinf = (1/0); ninf = (-1/0); n = -3; f = 1.5e3; h = 0x1F;\n'
            '\t\tlist = { "a"; "b"; }; empty = {}; no = false; [1] = true;\n\t};\n'
            '\t["a@b"] = "owner";\n};\n')
    value = luadata.loads(text)
    data = value["_data"]
    assert data["name"] == 'café "x"\n'
    assert data["inf"] == math.inf and data["ninf"] == -math.inf
    assert (data["n"], data["f"], data["h"]) == (-3, 1500.0, 31)
    assert data["list"] == ["a", "b"] and data["empty"] == {} and data["no"] is False
    assert data[1] is True and value["a@b"] == "owner"


def test_long_strings_comments_and_escapes() -> None:
    value = luadata.loads("-- a comment\nreturn { [[line\nbreak]], [==[a]]b]==], "
                          "'\\x41\\u{e9}\\z   z', --[[ block ]] 7 }")
    assert value == ["line\nbreak", "a]]b", "Aéz", 7]


@pytest.mark.parametrize("text", [
    'return { x = os.execute("id") }',  # a call
    "return { x = y }",  # a variable
    "return { x = 1 + 2 }",  # an operator
    "return function() end",
    'return { "unfinished }',
    "return { [nil] = 1 }",
    "return {} extra",
    "return " + "{" * 200 + "}" * 200,  # nesting bound
])
def test_anything_but_a_literal_is_refused(text: str) -> None:
    with pytest.raises(LuaDataError, match="line 1"):
        luadata.loads(text)


def test_paths_are_escaped_as_datamanager_does() -> None:
    assert prosody_import.path_encode("conference.example-1.org") == \
        "conference%2eexample%2d1%2eorg"
    assert prosody_import.path_decode("caf%c3%a9%2droom") == "café-room"


# --- mod_muc -> dmuc ------------------------------------------------------------------------


def _lounge(service: str = HOST) -> prosody_import.Converted:
    frozen = luadata.load_file(str(LOUNGE_DAT))
    return prosody_import.convert(prosody_import.thaw(frozen, HOST, "lounge", "lounge.dat"),
                                  service)


def test_a_room_prosody_wrote_maps_onto_every_dmuc_setting() -> None:
    converted = _lounge("muc.elsewhere.example")
    assert converted.jid == "lounge@muc.elsewhere.example"
    state = converted.state
    assert state is not None
    cfg = state["config"]
    assert (cfg["name"], cfg["description"], cfg["language"]) == (
        "The Lounge", "Where the cast meets — café", "en")
    assert cfg["persistent"] and not cfg["public"] and cfg["members_only"] and cfg["moderated"]
    assert (cfg["password"], cfg["whois"], cfg["history_length"]) == ("s3cret", "anyone", 7)
    assert cfg["change_subject"] and cfg["allow_member_invites"]
    assert cfg["presence_broadcast"] == ["moderator"]
    assert cfg["extra"] == {}  # occupant_id_salt and subject_time are not settings
    assert state["affiliations"] == {
        "alice@pros.example": "owner", "bob@pros.example": "member",
        "carol@pros.example": "admin", "dave@pros.example": "outcast",
        "evil.example": "outcast"}
    assert state["reserved_nicks"] == {"bob@pros.example": "bobby"}
    assert (state["subject"], state["subject_from"]) == ("Welcome & hello", "alice")


def test_unknown_settings_go_to_extra_and_are_reported() -> None:
    room = prosody_import.ProsodyRoom(
        jid=f"r@{HOST}", data={"persistent": True, "default_history_messages": 5,
                               "hats": {"x": {"title": "Hat"}}, "whois": "nobody"},
        affiliations={"a@b": "owner", "c@d": "king"},
        affiliation_data={"a@b": {"reserved_nickname": "A", "email": "a@b"}}, source="t")
    converted = prosody_import.convert(room, HOST)
    assert converted.state is not None
    assert converted.state["config"]["extra"] == {"prosody.hats": {"x": {"title": "Hat"}}}
    assert converted.state["config"]["default_history_messages"] == 5  # a setting now
    assert converted.state["config"]["whois"] == "moderators"
    assert converted.state["affiliations"] == {"a@b": "owner"}
    assert converted.state["reserved_nicks"] == {"a@b": "A"}
    notes = "; ".join(converted.notes)
    for word in ("hats", "whois", "king", "email"):
        assert word in notes


@pytest.mark.parametrize(("data", "expected"), [
    # the owner's archiving choice (mod_muc_mam) is dmuc's archiving, never its logging
    ({"archiving": False}, {"archiving": False, "logging": False}),
    ({"archiving": True}, {"archiving": True, "logging": False}),
    ({}, {"archiving": True, "logging": False}),  # mod_muc_mam's muc_log_by_default
    ({"logging": True}, {"archiving": True, "logging": True}),  # mod_muc_log's
    ({"allowpm": "moderators"}, {"allow_pm": "moderator"}),
    ({"allowpm": "none"}, {"allow_pm": "none"}),
    ({"hidden": True, "members_only": True}, {"public": False, "members_only": True}),
    # a join without a history limit gets as many as on mod_muc (at most the length)
    ({}, {"default_history_messages": 20}),
    ({"default_history_messages": 3}, {"default_history_messages": 3}),
    ({"history_length": 4, "default_history_messages": 9}, {"default_history_messages": 4}),
])
def test_each_prosody_setting_keeps_its_meaning(data: dict, expected: dict) -> None:
    room = prosody_import.ProsodyRoom(f"r@{HOST}", {"persistent": True, **data}, {}, {}, "t")
    converted = prosody_import.convert(room, HOST)
    assert converted.state is not None and converted.notes == []
    assert {k: converted.state["config"][k] for k in expected} == expected


def test_the_subject_keeps_the_time_it_was_set() -> None:
    room = prosody_import.ProsodyRoom(f"r@{HOST}", {
        "persistent": True, "subject": "Topic", "subject_from": f"r@{HOST}/alice",
        "subject_time": 1_700_000_000}, {}, {}, "t")
    state = prosody_import.convert(room, HOST).state
    assert state is not None and state["subject_time"] == 1_700_000_000.0
    assert prosody_import.normal_state(state) == state


@pytest.mark.parametrize(("data", "why"), [
    ({}, "not persistent"),
    ({"persistent": True, "destroyed": True}, "tombstone"),
])
def test_rooms_mod_muc_would_not_restore_are_skipped(data: dict, why: str) -> None:
    room = prosody_import.ProsodyRoom(f"r@{HOST}", data, {}, {}, "t")
    converted = prosody_import.convert(room, HOST)
    assert converted.state is None and why in converted.skipped


def test_old_storage_format_and_sql_rows() -> None:
    old = {"jid": f"old@{HOST}", "_data": {"persistent": True},
           "_affiliations": {"a@b": "owner"}}
    assert prosody_import.thaw(old, HOST, "old", "t").affiliations == {"a@b": "owner"}
    rows = [("r", "_data", "json", json.dumps({"persistent": True, "name": "R"})),
            ("r", "_jid", "string", f"r@{HOST}"), ("r", "_affiliation_data", "json", "[]"),
            ("r", "a@b", "string", "owner")]
    [room] = prosody_import.read_sql_rows(rows, HOST, "db")
    assert (room.jid, room.data["name"], room.affiliations) == (f"r@{HOST}", "R",
                                                                 {"a@b": "owner"})


# --- the master's slave status --------------------------------------------------------------


def test_slave_status_records_each_change_with_its_time() -> None:
    domain = "killrc.oulubox.irc"
    net = Net(slaves=(domain,), allowed=(domain, "eris.dclxvii.irc"))
    status = SlaveStatus(net.master.distribution)
    first = status.changes(net.now)
    assert first[slave_jid(domain)]["state"] == UNREGISTERED
    assert first[slave_jid("eris.dclxvii.irc")]["domains"] == ["eris.dclxvii.irc"]
    assert status.changes(net.now + 1) == {}  # nothing changed, nothing written
    net.join(WUMPUS, "wumpus", f"room@{SERVICE}")
    live_at = net.now + 2
    changed = status.changes(live_at)
    assert list(changed) == [slave_jid(domain)]
    assert changed[slave_jid(domain)] == {
        "state": "live", "domains": [domain], "rooms": {"live": 1}, "since": live_at}
    link = net.master.distribution.link(f"room@{SERVICE}", slave_jid(domain))
    assert link is not None and link.state is RegistrationState.LIVE
    net.down.add(domain)
    for _ in range(200):  # unanswered keepalives: the master marks it split
        net.tick(1)
        if link.state is RegistrationState.SPLIT:
            break
    assert link.state is RegistrationState.SPLIT
    split = status.changes(net.now)[slave_jid(domain)]
    assert (split["state"], split["since"]) == ("split", net.now)


# --- the commands on a real store -----------------------------------------------------------


def _admin(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "dmuc.admin", *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_import_list_show_and_idempotence(tmp_path: Path) -> None:
    config_dir = tmp_path / "data" / "rooms%2epros%2eexample" / "config"
    config_dir.mkdir(parents=True)
    (config_dir / "lounge.dat").write_bytes(LOUNGE_DAT.read_bytes())
    store = ["--storage", f"sqlite:///{tmp_path / 'dmuc.db'}", "--service", HOST]
    imp = ["import-prosody", "--host", HOST, "--data-path", str(tmp_path / "data")]
    assert "1 imported" in _admin(*store, *imp).stdout
    assert "1 unchanged" in _admin(*store, *imp).stdout
    shown = _admin(*store, "show-room", f"lounge@{HOST}").stdout
    assert "bobby = bob@pros.example" in shown and 'password = "(set)"' in shown
    assert json.loads(_admin(*store, "show-room", f"lounge@{HOST}", "--json").stdout) == \
        _lounge().state
    # a room changed in the store since is a conflict unless --replace
    (config_dir / "lounge.dat").write_text(
        LOUNGE_DAT.read_text().replace('"The Lounge"', '"Renamed"'))
    conflict = _admin(*store, *imp, check=False)
    assert conflict.returncode == 1 and "conflict" in conflict.stdout
    assert "1 replaced" in _admin(*store, *imp, "--replace").stdout
    assert "Renamed" in _admin(*store, "list-rooms").stdout
    missing = _admin(*store, "show-room", f"nope@{HOST}", check=False)
    assert missing.returncode == 1 and missing.stderr.startswith("dmuc-admin: no room")


def test_dry_run_writes_nothing_and_a_wrong_host_is_an_error(tmp_path: Path) -> None:
    config_dir = tmp_path / "data" / "rooms%2epros%2eexample" / "config"
    config_dir.mkdir(parents=True)
    (config_dir / "lounge.dat").write_bytes(LOUNGE_DAT.read_bytes())
    db = tmp_path / "store" / "dmuc.db"
    db.parent.mkdir()
    store = ["--storage", f"sqlite:///{db}", "--service", HOST]
    imp = ["import-prosody", "--host", HOST, "--data-path", str(tmp_path / "data")]
    dry = _admin(*store, *imp, "--dry-run").stdout
    assert "would import lounge@" in dry and "1 to import" in dry, dry
    assert list(db.parent.iterdir()) == [], "the dry run created the store"
    _admin(*store, *imp)
    before = {p.name: p.read_bytes() for p in db.parent.iterdir() if p.name == "dmuc.db"}
    assert "1 unchanged" in _admin(*store, *imp, "--dry-run").stdout
    assert {p.name: p.read_bytes() for p in db.parent.iterdir() if p.name == "dmuc.db"} \
        == before
    # a --host with no room there: where it looked, and a non-zero exit
    wrong = _admin(*store, "import-prosody", "--host", "muc.pros.example", "--data-path",
                   str(tmp_path / "data"), check=False)
    where = tmp_path / "data" / "muc%2epros%2eexample" / "config"
    assert wrong.returncode == 1, wrong.stdout + wrong.stderr
    assert wrong.stderr.startswith("dmuc-admin: no room of muc.pros.example found in "
                                   f"{where}"), wrong.stderr
    # a store in a directory that does not exist: an error, nothing created
    typo = _admin("--storage", f"sqlite:///{tmp_path / 'typo' / 'dmuc.db'}", "--service",
                  HOST, *imp, check=False)
    assert typo.returncode == 1 and "does not exist" in typo.stderr, typo.stderr
    assert not (tmp_path / "typo").exists()


def test_every_subcommand_has_help() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    assert set(commands.choices) == {"import-prosody", "list-rooms", "show-room",
                                     "list-slaves"}
    assert "import-prosody" in _admin("--help").stdout


def test_history_length_is_capped_at_the_masters_maximum() -> None:
    room = prosody_import.ProsodyRoom(f"r@{HOST}", {"persistent": True, "history_length": 80},
                                      {}, {}, "t")
    converted = prosody_import.convert(room, HOST, max_history=50)
    assert converted.state is not None and converted.state["config"]["history_length"] == 50
    assert "capped at 50" in "; ".join(converted.notes)
    uncapped = prosody_import.convert(room, HOST)
    assert uncapped.state is not None and uncapped.state["config"]["history_length"] == 80

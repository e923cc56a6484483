"""Daemon configuration: the shipped examples load; every mistake names file, key, reason."""

from pathlib import Path

import pytest

from dmuc.config import ConfigError, load_master_config, load_slave_config

ETC = Path(__file__).resolve().parents[2] / "etc"

MASTER = """
[component]
jid = "channel.avalon.irc"
secret = "s"
[storage]
url = "sqlite:///{db}"
"""

SLAVE = """
[component]
jid = "dmuc.vesa.yeggmaex.irc"
secret = "s"
[storage]
url = "sqlite:///{db}"
[slave]
domains = ["vesa.yeggmaex.irc"]
masters = ["channel.avalon.irc"]
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "dmuc.toml"
    path.write_text(text.format(db=tmp_path / "x.db"))
    return str(path)


def shipped(tmp_path: Path, name: str) -> str:
    """An example from etc/, with its database moved somewhere this user may write."""
    text = (ETC / name).read_text().replace("/var/lib/dmuc/", f"{tmp_path}/")
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_shipped_examples_load(tmp_path: Path) -> None:
    master = load_master_config(shipped(tmp_path, "dmuc-master.toml"))
    assert master.component.jid == "channel.avalon.irc"
    assert master.muc.room_defaults["history_length"] == 20 and master.muc.room_locking
    slave = load_slave_config(shipped(tmp_path, "dmuc-slave.toml"))
    assert slave.domains == ["vesa.yeggmaex.irc"] and slave.masters == ["channel.avalon.irc"]


def test_master_slaves_allow_list(tmp_path: Path) -> None:
    cfg = load_master_config(write(tmp_path, MASTER + """
[[slaves]]
jid = "dmuc.vesa.yeggmaex.irc"
domains = ["vesa.yeggmaex.irc"]
"""))
    assert cfg.muc.slaves == {"dmuc.vesa.yeggmaex.irc": frozenset({"vesa.yeggmaex.irc"})}
    assert cfg.muc.jid == "channel.avalon.irc"


@pytest.mark.parametrize(("extra", "key"), [
    ('[[slaves]]\njid = "dmuc.x"\n', "slaves[0]"),
    ('[[slaves]]\njid = "a@b"\ndomains = ["b"]\n', "slaves[0].jid"),
    ('[[slaves]]\njid = "dmuc.x"\ndomains = []\n', "slaves[0].domains"),
    ('[[slaves]]\njid = "dmuc.x"\ndomains = ["x"]\ncolour = 1\n', "slaves[0].colour"),
    ('[muc]\ncreate_rooms = "some"\n', "muc.create_rooms"),
    ('[muc]\nadmins = ["not a jid@"]\n', "muc.admins"),
    ('[muc.room_defaults]\nhistory_length = "20"\n', "muc.room_defaults.history_length"),
    ('[log]\nlevel = "chatty"\n', "log.level"),
])
def test_master_mistakes_name_the_key(tmp_path: Path, extra: str, key: str) -> None:
    path = write(tmp_path, MASTER + extra)
    with pytest.raises(ConfigError) as err:
        load_master_config(path)
    assert err.value.key == key and err.value.path == path and err.value.reason


@pytest.mark.parametrize(("old", "new", "key"), [
    ('domains = ["vesa.yeggmaex.irc"]', "domains = []", "slave.domains"),
    ('masters = ["channel.avalon.irc"]', 'masters = ["a@b/c"]', "slave.masters"),
    ('masters = ["channel.avalon.irc"]', 'masters = ["channel.avalon.irc"]\nkeepalive = 1',
     "slave.keepalive"),
    ('masters = ["channel.avalon.irc"]',
     'masters = ["channel.avalon.irc"]\nrooms = ["wallops@elsewhere.irc"]', "slave.rooms"),
    ('[slave]', '[slave]\nbogus = 1', "slave.bogus"),
])
def test_slave_mistakes_name_the_key(tmp_path: Path, old: str, new: str, key: str) -> None:
    path = write(tmp_path, SLAVE.replace(old, new))
    with pytest.raises(ConfigError) as err:
        load_slave_config(path)
    assert err.value.key == key


def test_slave_rooms_by_config(tmp_path: Path) -> None:
    cfg = load_slave_config(write(tmp_path, SLAVE.replace(
        'masters = ["channel.avalon.irc"]',
        'masters = ["channel.avalon.irc"]\nrooms = ["Wallops@channel.avalon.irc"]')))
    assert cfg.rooms == ["wallops@channel.avalon.irc"]

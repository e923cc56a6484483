"""One copy of a local broadcast with its recipient list, for mod_dmuc_slave (protocol.md
§4.15): the slave uses it only once the users' Prosody said it fans out, per host, for
two recipients or more; the wire form is the stanza with 'to' = the host and <fanout/>."""

from __future__ import annotations

from dmuc import xmlns
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas, xep0282
from dmuc.slave.service import SlaveService, SlaveSettings

VESA, OTHER = "vesa.yeggmaex.irc", "other.example"
ROOM = "wallops@channel.avalon.irc"


def _slave() -> SlaveService:
    return SlaveService(SlaveSettings(jid=f"dmuc.{VESA}", domains=frozenset({VESA, OTHER}),
                                      masters=frozenset({"channel.avalon.irc"})))


def _message() -> stanzas.Element:
    return stanzas.parse_stanza(f"<message from='{ROOM}/BigCheese' type='groupchat'>"
                                "<body>a truly rotten time</body></message>")


def _mirror_answer(slave: SlaveService, host: str, fanout: bool) -> None:
    out = slave.connected(0.0)
    iq = next(d.stanza for d in out.deliveries if d.stanza.getAttribute("to") == host)
    answer = stanzas.iq_result(iq)
    if fanout:
        answer.addElement((xmlns.DMUC, "mirror")).addElement("fanout")
    answer["from"], answer["to"] = host, slave.jid
    slave.receive(answer, 0.0)


def test_mirror_answer_with_fanout_enables_it_for_that_host_only() -> None:
    slave = _slave()
    _mirror_answer(slave, VESA, fanout=True)
    assert slave.fanout_hosts == {VESA}
    _mirror_answer(slave, VESA, fanout=False)  # a reconnect to an older module
    assert slave.fanout_hosts == set()


def test_fold_one_copy_per_fanning_host_with_two_recipients_or_more() -> None:
    slave = _slave()
    _mirror_answer(slave, VESA, fanout=True)
    out = Outbox(0.0)
    mine = [f"a@{VESA}/x", f"b@{VESA}/y"]
    out.broadcast(_message(), [mine[0], f"c@{OTHER}/z", mine[1]])
    out.broadcast(_message(), [f"d@{VESA}/w"])
    slave._fold(out)
    hosts = [(d.host, list(d.recipients or [])) for d in out.deliveries]
    assert hosts == [(VESA, mine), (None, [f"c@{OTHER}/z"]), (None, [f"d@{VESA}/w"])]
    # who gets what is unchanged
    assert len(out.stanzas_for(mine[1])) == 1 and len(out.stanzas_for(f"c@{OTHER}/z")) == 1


def test_no_fold_without_the_capability() -> None:
    slave = _slave()
    out = Outbox(0.0)
    out.broadcast(_message(), [f"a@{VESA}/x", f"b@{VESA}/y"])
    slave._fold(out)
    assert [d.host for d in out.deliveries] == [None]


def test_render_fanout_wire_form() -> None:
    recipients = [f"a@{VESA}/x", f"o'brien@{VESA}/y"]
    wire = stanzas.parse_stanza(xep0282.render_fanout(_message(), VESA, recipients))
    assert wire.getAttribute("to") == VESA
    assert wire.getAttribute("from") == f"{ROOM}/BigCheese"
    assert stanzas.text_of(stanzas.child(wire, "body")) == "a truly rotten time"
    fanout = stanzas.child(wire, "fanout", xmlns.DMUC)
    assert fanout is not None and list(wire.elements())[-1] is fanout
    assert [t.getAttribute("jid") for t in stanzas.children(fanout, "to")] == recipients
    # an empty element (a presence without children) too
    presence = stanzas.parse_stanza(f"<presence from='{ROOM}/Troy' type='unavailable'/>")
    wire = stanzas.parse_stanza(xep0282.render_fanout(presence, VESA, recipients))
    assert wire.getAttribute("type") == "unavailable"
    assert stanzas.child(wire, "fanout", xmlns.DMUC) is not None

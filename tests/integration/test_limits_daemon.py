"""Rate limits against the real ``twistd dmuc-master`` behind the real Prosody (issue 8
point 3): a client flooding a room gets wait/policy-violation past its burst, the master
logs the burst once, and another user is served meanwhile. The session's master runs with
the defaults (no [muc.limits] table: 10 stanzas a second, burst 50)."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import pytest

from dmuc.master.features.limits import OVERACTIVE_ROOM, Limits
from testbed import TwistdDaemon
from tests.integration.conftest import MUC_DOMAIN, MakeClient
from tests.integration.test_hostile_input_daemon import MasterLog, configure, join
from tests.integration.xmpp_client import (
    NS_CLIENT,
    body,
    error_condition,
    is_message,
    local,
    run,
    xml_str,
)

pytestmark = pytest.mark.integration

NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
FLOOD = 200  # messages, sent back to back


def test_a_flooding_client_is_refused_past_its_burst_and_others_are_served(
        master: TwistdDaemon, client_factory: MakeClient) -> None:
    flooder = client_factory("flooder@avalon.irc/f")
    calm = client_factory("calm@eris.dclxvii.irc/c")
    room = f"limits-flood@{MUC_DOMAIN}"
    join(flooder, room, "flooder")
    assert configure(flooder, room).get("type") == "result"
    join(calm, room, "calm")
    run(flooder.barrier(MUC_DOMAIN))
    flooder.drain()
    time.sleep(Limits().burst / Limits().rate)  # the flooder's bucket is full again
    log = MasterLog(master)

    for n in range(FLOOD):
        flooder.send_raw(f"<message to='{room}' type='groupchat' id='flood{n}'>"
                         f"<body>flood {n}</body></message>")
    # meanwhile another user's ping to the room's service is answered at once
    started = time.monotonic()
    pong = run(calm.barrier(MUC_DOMAIN))
    assert pong.get("type") == "result", xml_str(pong)
    assert time.monotonic() - started < 2.0

    # each message is either relayed (the flooder's echo) or refused, as mod_muc_limits
    answers: list[ET.Element] = [
        run(flooder.expect(lambda e: local(e.tag) == "message"
                           and (e.get("id") or "").startswith("flood"))) for _ in range(FLOOD)]
    refused = [a for a in answers if a.get("type") == "error"]
    relayed = [a for a in answers if a.get("type") == "groupchat"]
    assert len(refused) + len(relayed) == FLOOD
    assert Limits().burst <= len(relayed) < FLOOD // 2, len(relayed)
    for reply in refused:
        err = reply.find(f"{{{NS_CLIENT}}}error")
        assert err is not None and err.get("type") == "wait" and err.get("by") == room, \
            xml_str(reply)
        assert error_condition(reply) == "policy-violation", xml_str(reply)
        assert err.findtext(f"{{{NS_STANZAS}}}text") == OVERACTIVE_ROOM
        assert body(reply) == f"flood {reply.get('id')[len('flood'):]}"
    # the other occupant got exactly what was relayed, in order
    seen = [run(calm.expect(is_message(from_=f"{room}/flooder", type_="groupchat")))
            for _ in relayed]
    assert [body(m) for m in seen] == [body(m) for m in relayed]
    run(calm.expect_none(is_message(from_=f"{room}/flooder"), barrier_to=MUC_DOMAIN))

    # one log line for the whole burst
    lines = log.lines("rate limit")
    assert len(lines) == 1 and "flooder@avalon.irc/f" in lines[0] and room in lines[0], lines
    log.assert_clean()

    # the bucket refills: a moment later the flooder may talk again
    time.sleep(0.5)
    flooder.send_raw(f"<message to='{room}' type='groupchat' id='later'><body>sorry</body>"
                     "</message>")
    assert body(run(calm.expect(is_message(from_=f"{room}/flooder")))) == "sorry"

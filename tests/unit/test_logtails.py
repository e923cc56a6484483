"""A failed integration test reports what its processes logged meanwhile
(testbed/logtails.py): only warnings, errors and netsplits, written after the mark."""

from __future__ import annotations

from pathlib import Path

from testbed import logtails


def test_only_what_was_noteworthy_since_the_mark_is_reported(tmp_path: Path) -> None:
    prosody, daemon = tmp_path / "prosody.log", tmp_path / "dmuc-master.log"
    prosody.write_text("Dec 06 13:00:00 s2sout\twarn\tbefore the test\n")
    daemon.write_text("2026-12-06T13:00:00+0000 [dmuc#info] started\n")
    logtails.watch("prosody avalon.irc", prosody)
    logtails.watch("dmuc-master", daemon)
    ends = logtails.marks()
    with prosody.open("a") as file:
        file.write("Dec 06 13:00:01 c2s\tinfo\tnothing to see\n"
                   "Dec 06 13:00:02 s2sout\twarn\tconnection to efnet.irc failed\n")
    with daemon.open("a") as file:
        file.write("2026-12-06T13:00:03+0000 [dmuc#info] a join\n"
                   "2026-12-06T13:00:04+0000 [dmuc#warn] netsplit from wallops\n")
    reported = logtails.since(ends)
    assert "connection to efnet.irc failed" in reported
    assert "netsplit from wallops" in reported
    assert "before the test" not in reported
    assert "nothing to see" not in reported and "a join" not in reported
    quiet = logtails.marks()
    assert str(prosody) not in logtails.since(quiet)


def test_a_log_started_again_is_read_whole_and_a_long_one_is_cut(tmp_path: Path) -> None:
    log = tmp_path / "dmuc-slave.log"
    log.write_text("[dmuc#info] x\n" * 1000)
    logtails.watch("dmuc-slave", log)
    ends = logtails.marks()
    log.write_text("".join(f"[dmuc#error] failure {n}\n" for n in range(100)))  # restarted
    reported = logtails.since(ends)
    assert "failure 99" in reported and "failure 0\n" not in reported
    assert reported.count("failure") == logtails.LINES_PER_FILE
    assert "70 earlier not shown" in reported

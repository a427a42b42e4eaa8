"""The journal does not grow for good: raw messages of jobs final for longer than ``forget_after`` are dropped
(events and results stay), other nodes' jobs final for longer than ``history_s`` go entirely (this node's own
submissions and runs stay), and a job the protocol core forgot unclosed is final (no longer replayed)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from sandrun_p2p.agent.journal import Journal
from sandrun_p2p.protocol.identity import NodeKey

from .test_journal_resume import make_agent

OLD, NEW, OPEN, GONE, MINE, RAN = (bytes([i]) * 32 for i in (1, 2, 3, 4, 5, 6))
DAY = 86400.0


def filled(path: Path) -> Journal:
    j = Journal(path)
    now = time.time()
    for jid in (OLD, NEW, OPEN, GONE):
        j.add_message(jid, "job", b"announcement of " + jid[:1])
        j.add_message(jid, "claim", b"claim of " + jid[:1])
    j.event(OLD, "settled", "", b"", now=now - 3600)  # final an hour ago
    j.event(NEW, "refunded", "", b"", now=now - 10)  # final just now
    j.event(OPEN, "committed", "", b"", now=now - 3600)  # not final, however old
    j.event(GONE, "forgotten", "no settlement or refund closed it in time", b"", now=now - 3600)
    j.commit()
    return j


def test_a_job_the_core_forgot_unclosed_is_final_and_not_replayed(tmp_path: Path) -> None:
    j = filled(tmp_path / "journal.sqlite")
    row = j.job(GONE)
    assert row is not None and row["final"] and row["state"] == "forgotten"
    assert GONE not in j.open_jobs() and OPEN in j.open_jobs()


def test_messages_of_long_final_jobs_are_dropped_the_rest_kept(tmp_path: Path) -> None:
    j = filled(tmp_path / "journal.sqlite")
    assert j.forget_final(600) == 4  # OLD's and GONE's two messages each
    j.commit()
    assert j.messages(OLD) == [] and j.messages(GONE) == []
    # recent final; open (a restart replays it)
    assert len(j.messages(NEW)) == 2 and len(j.messages(OPEN)) == 2
    assert [e["state"] for e in j.events(OLD)] == ["settled"]  # the history stays
    assert j.job(OLD)["state"] == "settled"


def test_the_agent_prunes_with_its_forget_after(tmp_path: Path, caplog) -> None:
    filled(tmp_path / "journal.sqlite").close()
    agent = make_agent(tmp_path, NodeKey.generate())
    with caplog.at_level(logging.INFO, logger="sandrun_p2p.agent"):
        assert agent.prune_journal() == (4, 0)
    agent.journal.commit()
    assert agent.journal.messages(OLD) == [] and len(agent.journal.messages(OPEN)) == 2
    assert "event=pruned messages=4" in caplog.text
    assert agent.prune_journal() == (0, 0)  # nothing left to drop (no job is a week past final)


def test_other_nodes_old_jobs_go_entirely_this_node_s_own_stay(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.sqlite")
    long_ago = time.time() - 8 * DAY
    for jid in (OLD, MINE, RAN, NEW):
        j.add_message(jid, "job", b"x")
        j.event(jid, "claimed", "", b"\x09" * 32, now=long_ago)
        j.event(jid, "settled", "", b"", now=long_ago if jid != NEW else time.time())
    j.mark_job(MINE, origin=b"\x07" * 32, redundancy=1, mine=True)  # submitted through this node
    j.execution_started(RAN)  # this node ran it (its earnings record)
    j.commit()
    assert j.forget_history(7 * DAY) == 1
    j.commit()
    assert j.job(OLD) is None and j.events(OLD) == [] and j.messages(OLD) == []
    for jid in (MINE, RAN, NEW):
        assert j.job(jid)["state"] == "settled" and len(j.events(jid)) == 2
    later = j.event(NEW, "evidence", "", b"")
    assert later > max(e["id"] for e in j.events(MINE))  # event ids keep rising (clients page by them)

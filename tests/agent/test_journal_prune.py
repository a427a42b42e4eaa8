"""The journal does not grow for good: raw messages of jobs final for longer than ``forget_after`` are dropped
(events and results stay), jobs final for longer than ``history_s`` go entirely (this node's own submissions
and runs too, with their executions and transactions; open jobs stay and are resumed), and a job the protocol
core forgot unclosed is final (no longer replayed)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from sandrun_p2p.agent.journal import Journal
from sandrun_p2p.protocol import messages as m
from sandrun_p2p.protocol.errors import ProtocolError
from sandrun_p2p.protocol.identity import NodeKey
from sandrun_p2p.protocol.jobspec import JobSpec

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


def test_jobs_final_for_longer_than_history_s_go_entirely_this_node_s_own_too(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.sqlite")
    long_ago = time.time() - 8 * DAY
    for jid in (OLD, MINE, RAN, NEW):
        j.add_message(jid, "job", b"x")
        j.event(jid, "claimed", "", b"\x09" * 32, now=long_ago)
        j.event(jid, "settled", "", b"", now=long_ago if jid != NEW else time.time())
    j.mark_job(MINE, origin=b"\x07" * 32, redundancy=1, mine=True)  # submitted through this node
    j.tx(MINE, "fund", "ok")
    for jid in (RAN, OPEN):  # this node ran them
        j.execution_started(jid)
        j.tx(jid, "commit", "ok")
    j.event(OPEN, "committed", "", b"", now=long_ago)  # not final, however old: a restart resumes it
    j.commit()
    top = j.db.execute("SELECT MAX(id) FROM events").fetchone()[0]
    assert j.forget_history(7 * DAY) == 3
    j.commit()
    for jid in (OLD, MINE, RAN):
        assert j.job(jid) is None and j.events(jid) == [] and j.messages(jid) == []
        assert j.execution(jid) is None and j.txs(jid) == []
    assert j.job(NEW)["state"] == "settled" and len(j.events(NEW)) == 2
    assert j.open_jobs() == [OPEN] and j.execution(OPEN) is not None and len(j.txs(OPEN)) == 1
    assert j.event(NEW, "evidence", "", b"") > top  # event ids keep rising (clients page by them)


def rows(j: Journal) -> dict[str, int]:
    tables = ("jobs", "messages", "events", "executions", "txs")
    return {t: j.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}


async def test_a_long_running_node_s_journal_stays_bounded_and_still_resumes(tmp_path: Path) -> None:
    """Thirty days of a node that submits and runs ten jobs a day (messages, events, an execution and a
    transaction each), pruned daily as the agent prunes (``forget_after``, then ``history_s`` = 7 days): the
    tables hold about a week of jobs, not thirty days'. A job of the first day still open (its result stored,
    not committed yet) stays, and the restarted agent commits its stored result without running it again."""

    from .test_journal_resume import NoExecutor, job_message, published

    key, origin = NodeKey.from_seed(b"\x0a" * 32), NodeKey.from_seed(b"\x0b" * 32)
    j = Journal(tmp_path / "journal.sqlite")
    pending, raw = job_message(origin, b"open")
    j.add_message(pending, m.JOB, raw)
    j.execution_started(pending)
    j.execution_done(pending, b"\x02" * 32, b"\x03" * 32, "bafkreitrace", "bafyresult", 7)
    start, most = time.time() - 30 * DAY, {}
    for day in range(30):
        now = start + day * DAY
        for i in range(10):
            jid = bytes([day, i]) * 16
            j.add_message(jid, "job", b"announcement")
            j.mark_job(jid, origin=key.node_id, redundancy=1, mine=i % 2 == 0)
            j.execution_started(jid)
            j.tx(jid, "commit", "ok")
            j.event(jid, "claimed", "", key.node_id, now=now)
            j.event(jid, "settled", "", b"", now=now)
        j.forget_final(600, now=now)
        j.forget_history(7 * DAY, now=now)
        j.commit()
        most = {t: max(n, most.get(t, 0)) for t, n in rows(j).items()}
    week = 8 * 10 + 1  # (the jobs final less than history_s ago, the open job)
    assert most == {
        "jobs": week,
        "messages": 10 + 1,
        "events": 2 * (week - 1),
        "executions": week,
        "txs": week - 1,
    }
    j.close()

    agent = make_agent(tmp_path, key)
    assert agent.replay_journal() == 1
    commits = [x for x in published(agent) if x.commitment is not None]
    assert [x.body["job"] for x in commits] == [pending] and NoExecutor.calls == 0
    agent.journal.close()


STRAY, KNOWN_MINE, ANNOUNCED = (bytes([i]) * 32 for i in (7, 8, 9))


def test_jobs_only_seen_through_stray_messages_go_after_forget_after(tmp_path: Path) -> None:
    """A claim (or any job message) for a job never announced here leaves a row that never becomes final: it
    goes once older than forget_after; this node's own submissions and announced jobs stay."""
    j = Journal(tmp_path / "journal.sqlite")
    for jid in (STRAY, KNOWN_MINE, ANNOUNCED):
        j.add_message(jid, "claim", b"claim of " + jid[:1])
    j.mark_job(KNOWN_MINE, mine=True)  # e.g. a submission whose announcement is still to come
    j.event(ANNOUNCED, "announced", "k=1 q=1", b"")
    j.commit()
    assert j.forget_strays(600) == 0  # not old yet
    assert j.forget_strays(600, now=time.time() + 3600) == 1
    j.commit()
    assert j.job(STRAY) is None and j.messages(STRAY) == [] and STRAY not in j.open_jobs()
    assert j.job(KNOWN_MINE) is not None and j.job(ANNOUNCED) is not None
    assert len(j.messages(ANNOUNCED)) == 1


def test_a_rejected_message_leaves_nothing_in_the_journal(tmp_path: Path) -> None:
    """An announcement the core refuses (its deadline passed) is rejected at the gossip validator and never
    journaled (before, its row stayed for good and was replayed at every restart)."""
    agent = make_agent(tmp_path, NodeKey.generate())
    origin = NodeKey.generate()
    spec = JobSpec.from_dict(
        {
            "code_cid": "bafkreiexamplecode",
            "manifest": {"entrypoint": "main.py"},
            "deadline": 1,
            "nonce": b"x",
        }
    )
    body = {"spec": spec.to_dict(), "seed": b"\x01" * 32, "origin_ts": 0}
    msg = m.decode(m.encode(origin, m.JOB, body, 1, int(time.time() * 1000)))
    with pytest.raises(ProtocolError):
        agent._on_net_message(msg, time.time())
    agent.journal.commit()
    assert agent.journal.messages(spec.job_id) == [] and agent.journal.job(spec.job_id) is None

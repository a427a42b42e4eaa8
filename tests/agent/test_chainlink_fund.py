"""ChainLink.fund_jobs on the embedded chain: a batch submission's escrows go out in one postJobs transaction;
when the contract refuses one job, the others are still funded and that job gets its own error; when the
outcome is unknown, nothing is sent again."""

from __future__ import annotations

import time
from typing import Any

import pytest
import trio

from sandrun_p2p.agent.chainlink import ChainLink
from sandrun_p2p.chain import ChainError
from sandrun_p2p.protocol.jobspec import JobSpec
from sandrun_p2p.store import cid_of_bytes

pytestmark = pytest.mark.timeout(120)
NODE = b"\x07" * 32


def spec(link: ChainLink, n: int, redundancy: int = 1) -> JobSpec:
    return JobSpec.from_dict(
        {
            "code_cid": cid_of_bytes(b"x"),
            "manifest": {"entrypoint": "main.py"},
            "redundancy": redundancy,
            "deadline": max(int(time.time()), link.chain.now()) + 600,
            "nonce": f"fund-{n}".encode(),
            "payment_wei": 10**15 + n,
        }
    )


def counting(link: ChainLink) -> list[str]:
    """The methods of the transactions ``link`` sends (or tries to), in order."""
    sent: list[str] = []
    real = link.chain.send

    def send(signer: Any, tx: Any, **kw: Any) -> Any:
        sent.append(kw.get("method", "?"))
        return real(signer, tx, **kw)

    link.chain.send = send  # type: ignore[method-assign]
    return sent


def test_a_batch_is_escrowed_in_one_transaction() -> None:
    link = ChainLink({})
    sent = counting(link)

    async def main() -> None:
        await link.join(NODE)
        specs = [spec(link, i, redundancy=1 + i % 3) for i in range(5)]
        sent.clear()
        seeds = await link.fund_jobs(specs, NODE)
        assert sent == ["postJobs"]
        for s, seed in zip(specs, seeds, strict=True):
            assert seed == await link.check_job(s)  # open on chain, as the spec says, and the same seed
            assert (await link.job(s.job_id))["state"] == "open"
        sent.clear()
        assert isinstance((await link.fund_jobs([spec(link, 9)], NODE))[0], bytes)
        assert sent == ["postJob"]  # one job alone: postJob

    trio.run(main)


def test_a_refused_job_spoils_nothing_but_itself() -> None:
    link = ChainLink({})
    sent = counting(link)

    async def main() -> None:
        await link.join(NODE)
        specs = [spec(link, i) for i in range(4)]
        await link.fund_job(specs[2], NODE)  # posted before: postJobs reverts with JobExists
        sent.clear()
        out = await link.fund_jobs(specs, NODE)
        assert sent.count("postJobs") == 1 and sent.count("postJob") == 4  # then one by one, to say which
        assert isinstance(out[2], ChainError) and out[2].reason == "JobExists"
        for i in (0, 1, 3):
            assert out[i] == await link.check_job(specs[i])

    trio.run(main)


def test_an_unknown_outcome_is_not_sent_again() -> None:
    link = ChainLink({})
    sent = counting(link)

    def lost(jobs: Any) -> Any:
        sent.append("postJobs")
        raise ChainError("timeout", "no receipt after 60s", method="postJobs")

    link.market.post_jobs = lost  # type: ignore[method-assign]

    async def main() -> None:
        await link.join(NODE)
        specs = [spec(link, i) for i in range(3)]
        sent.clear()
        out = await link.fund_jobs(specs, NODE)
        assert sent == ["postJobs"]  # the transaction may have been mined: no job is posted again
        assert all(isinstance(e, ChainError) and e.reason == "timeout" for e in out)

    trio.run(main)

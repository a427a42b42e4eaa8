"""ChainLink on the embedded chain (eth-tester): a job nobody committed to is refunded after its deadline even
though the idle chain mines no blocks (its clock lags the wall clock until a block is mined)."""

from __future__ import annotations

import time

import pytest
import trio

from sandrun_p2p.agent.chainlink import ChainLink
from sandrun_p2p.protocol.events import SubmitTx
from sandrun_p2p.protocol.jobspec import JobSpec
from sandrun_p2p.store import cid_of_bytes

pytestmark = pytest.mark.timeout(120)


def test_refund_on_an_idle_chain_after_the_deadline() -> None:
    link = ChainLink({})
    node_id = b"\x07" * 32
    mined: list[int] = []
    real_mine = link.chain.mine

    def mine(blocks: int = 1) -> None:
        mined.append(blocks)
        real_mine(blocks)

    link.chain.mine = mine  # type: ignore[method-assign]

    async def main() -> None:
        await link.join(node_id)
        spec = JobSpec.from_dict(
            {
                "code_cid": cid_of_bytes(b"x"),
                "manifest": {"entrypoint": "main.py"},
                "redundancy": 1,
                "deadline": max(int(time.time()), link.chain.now()) + 3,
                "nonce": b"idle",
                "payment_wei": 10**15,
            }
        )
        await link.fund_job(spec, node_id)
        assert await link.check_job(spec)
        posted_at = link.chain.now()
        with trio.fail_after(60):
            receipt = await link.submit(node_id, SubmitTx("refund", spec.job_id, {}))
        assert receipt.startswith("0x"), receipt
        assert (await link.job(spec.job_id))["state"] == "failed"  # closed on chain: the escrow is refundable
        assert link.chain.now() > spec.deadline >= posted_at
        # eth-tester's next block keeps the last block's time + 1 until a block is mined: the TooEarly path ran
        assert mined

    trio.run(main)

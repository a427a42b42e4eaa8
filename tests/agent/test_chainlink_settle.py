"""The settle step reveals the openings this node saw on gossip that the chain still lacks, but only for
positions whose commitment (and so its usage) it has polled: a guessed usage would make the whole batch of
openings revert with ``BadOpening``."""

from __future__ import annotations

import pytest
import trio

from sandrun_p2p.agent.chainlink import ChainLink
from sandrun_p2p.protocol.events import SubmitTx
from sandrun_p2p.protocol.identity import NodeKey
from sandrun_p2p.protocol.verification import commitment

pytestmark = pytest.mark.timeout(120)

JID, ROOT, SALT = b"\x42" * 32, b"\xaa" * 32, b"\x5a" * 32


def test_settle_skips_a_position_whose_commit_was_not_polled_yet() -> None:
    link = ChainLink({})  # the settling node, on an embedded chain with its own deployment
    signers = link.chain.dev_signers()
    keys = [NodeKey.from_seed(bytes([i]) * 32) for i in (2, 3)]
    execs = [link.market.as_(signers[i]) for i in (2, 3)]
    for ex, key in zip(execs, keys, strict=True):
        ex.register(key.node_id, link.stake)
    link.market.as_(signers[4]).post_job(JID, 2, 2, link.chain.now() + 500, 10**15)
    usages = [1000, 2000]

    async def main() -> None:
        execs[0].commit(JID, commitment(JID, keys[0].node_id, ROOT, SALT), usages[0])
        await link.poll()  # the first commitment is known to this node ...
        # ... the second not yet
        execs[1].commit(JID, commitment(JID, keys[1].node_id, ROOT, SALT), usages[1])
        reveals = {k.node_id: (ROOT, SALT) for k in keys}
        out = await link.submit(b"\x01" * 32, SubmitTx("settle", JID, {"reveals": reveals}))
        assert out.startswith("0x"), out
        info = link.market.job(JID)
        assert info.revealed_mask == 0b01 and info.state_name == "open"
        await link.poll()  # now the second is known: settling reveals it and closes the job
        out = await link.submit(b"\x01" * 32, SubmitTx("settle", JID, {"reveals": reveals}))
        assert out.startswith("0x"), out
        assert link.market.job(JID).state_name == "settled"

    trio.run(main)


def test_settle_after_the_reveal_that_closed_a_k1_job_reads_nothing() -> None:
    link = ChainLink({})  # the executor, on its own embedded chain
    key = NodeKey.from_seed(b"\x07" * 32)
    jid = b"\x43" * 32
    link.market.as_(link.chain.dev_signers()[4]).post_job(jid, 1, 1, link.chain.now() + 500, 10**15)

    async def main() -> None:
        await link.join(key.node_id)
        c = commitment(jid, key.node_id, ROOT, SALT)
        await link.submit(key.node_id, SubmitTx("commit", jid, {"commitment": c, "usage_wei": 1000}))
        await link.submit(
            key.node_id, SubmitTx("reveal", jid, {"root": ROOT, "salt": SALT, "usage_wei": 1000})
        )
        assert link.market.job(jid).state_name == "settled"

        def no_read(*a):  # the reveal's receipt said the job closed: no further RPC for the settle step
            raise AssertionError("settle read the job again")

        link.market.job = no_read  # type: ignore[method-assign]
        assert await link.submit(key.node_id, SubmitTx("settle", jid, {"reveals": {}})) == "already closed"

    trio.run(main)

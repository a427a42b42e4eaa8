"""ChainLink over JSON-RPC (anvil) lets transactions of different jobs wait for their receipts at the same time
(``max_inflight_txs``), one at a time when set to 1; every one lands with its own nonce."""

from __future__ import annotations

import threading
import time

import pytest
import trio

from sandrun_p2p.agent.chainlink import ChainLink
from sandrun_p2p.chain import Chain, deploy
from sandrun_p2p.chain.anvil import find_anvil
from sandrun_p2p.chain.devnet import start_local_chain
from sandrun_p2p.protocol.jobspec import JobSpec
from sandrun_p2p.store import cid_of_bytes

pytestmark = [pytest.mark.timeout(120), pytest.mark.skipif(not find_anvil(), reason="anvil is not installed")]


def _fund_concurrently(link: ChainLink, n: int) -> int:
    """Fund ``n`` jobs at once; the most receipts waited for at the same time."""
    lock, state = threading.Lock(), {"now": 0, "max": 0}
    real_wait = link.chain.wait

    def wait(tx_hash: str, method: str | None = None) -> dict:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        try:
            time.sleep(0.05)  # a receipt that takes a while (a real chain's block time)
            return real_wait(tx_hash, method)
        finally:
            with lock:
                state["now"] -= 1

    link.chain.wait = wait  # type: ignore[method-assign]
    node_id = bytes([n]) * 32

    async def main() -> None:
        await link.join(node_id)
        specs = [
            JobSpec.from_dict(
                {
                    "code_cid": cid_of_bytes(b"x"),
                    "manifest": {"entrypoint": "main.py"},
                    "redundancy": 1,
                    "deadline": link.chain.now() + 600,
                    "nonce": bytes([n, i]),
                    "payment_wei": 10**15,
                }
            )
            for i in range(n)
        ]
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for s in specs:
                    nursery.start_soon(link.fund_job, s, node_id)
        for s in specs:
            assert (await link.job(s.job_id))["state"] == "open"

    trio.run(main)
    return state["max"]


def test_transactions_of_different_jobs_overlap_and_all_land(tmp_path) -> None:
    with start_local_chain("anvil") as local:
        chain = Chain.connect(local.url, kind="anvil")
        deploy(chain, chain.dev_signers()[0], out=str(tmp_path / "chain.json"))
        opts = {"rpc": local.url, "kind": "anvil", "addresses_file": str(tmp_path / "chain.json")}
        assert _fund_concurrently(ChainLink({**opts, "account_index": 1}), 6) > 1
        assert _fund_concurrently(ChainLink({**opts, "account_index": 2, "max_inflight_txs": 1}), 4) == 1
        with pytest.raises(ValueError, match="max_inflight_txs"):
            ChainLink({**opts, "max_inflight_txs": 0})

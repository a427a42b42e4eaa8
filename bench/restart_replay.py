#!/usr/bin/env python3
"""What an agent restart costs in chain reads: a full replay of the contract's events vs resuming from the chain
checkpoint in the journal (chainlink.py "Restarts"), on anvil after mining many empty blocks.

    python bench/restart_replay.py                    # 20,000 empty blocks, median of 3 restarts each
    python bench/restart_replay.py --blocks 200000    # ~20 minutes here: anvil's mining slows with height

A restart here is what the agent does before its first poll is fed to NodeCore: a new ChainLink attaches the
journal and polls once. "full replay" attaches a journal without a checkpoint (what every restart did before
the checkpoint, and what a fresh data dir still does); "no journal" is a ChainLink never attached (the code
path every restart took before); "checkpoint" reopens the journal the running agent left. Prints the wall time
of that first poll, the number of ``eth_getLogs`` calls (pages of 5,000 blocks) and what the view holds.
Needs anvil (npm @foundry-rs/anvil-linux-amd64); without it, says so and exits 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandrun_p2p.agent.chainlink import ChainLink  # noqa: E402
from sandrun_p2p.agent.journal import Journal  # noqa: E402
from sandrun_p2p.chain import Chain, deploy  # noqa: E402
from sandrun_p2p.chain.anvil import Anvil, find_anvil  # noqa: E402


def link_on(opts: dict, journal: Journal | None) -> tuple[ChainLink, list]:
    link = ChainLink(opts)
    asked: list = []
    logs = link.poller._logs

    def counted(start: int, end: int | str) -> list:
        asked.append((start, end))
        return logs(start, end)

    link.poller._logs = counted  # type: ignore[method-assign]
    if journal is not None:
        link.attach(journal)
    return link, asked


def restart(opts: dict, path: Path | None) -> tuple[float, int, str]:
    """(seconds, eth_getLogs calls, what the view holds) of one restart's first poll on the journal at
    ``path`` (None: no journal); nothing it writes is kept."""
    journal = None if path is None else Journal(path, group_commit=True)
    link, asked = link_on(opts, journal)
    t = time.perf_counter()
    trio.run(link.poll)
    took = time.perf_counter() - t
    if journal is not None:
        if journal.db.in_transaction:
            journal.db.execute("ROLLBACK")
        journal.db.close()
    return took, len(asked), f"{len(link.accounts)} nodes, {len(link.seeds)} jobs"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=int, default=20_000, help="empty blocks mined after the activity")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if not find_anvil():
        print("anvil is not installed: nothing measured")
        return 0
    # anvil 1.7's cost per mined block grows with the chain's height under its default hardfork (prague: the
    # EIP-2935 history contract) and full state history: 200k empty blocks took hours. On cancun without the
    # old states (the logs stay) it mines ~10k empty blocks a second.
    anvil = Anvil(args=("--hardfork", "cancun", "--prune-history", "4")).start()
    try:
        measure(anvil.url, args)
    finally:
        anvil.stop()
    return 0


def measure(url: str, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        chain = Chain.connect(url, kind="anvil")
        deploy(chain, chain.dev_signers()[0], out=f"{tmp}/chain.json")
        opts = {"rpc": url, "kind": "anvil", "addresses_file": f"{tmp}/chain.json", "account_index": 1}
        # some activity: nodes registered, jobs posted, then a long quiet stretch
        first = ChainLink(opts)
        for i in range(2, 6):
            first.market.as_(chain.dev_signers()[i]).register(bytes([i]) * 32, first.stake)
        for i in range(20):
            first.market.post_job(bytes([i + 1]) * 32, 1, 1, chain.now() + 3600, 10**15)
        journal = Journal(Path(tmp) / "journal.sqlite", group_commit=True)
        first.attach(journal)
        trio.run(first.poll)
        t = time.perf_counter()
        for done in range(0, args.blocks, 2000):  # (one call of 200k outlasts the 30 s RPC timeout)
            chain._rpc("anvil_mine", [hex(min(2000, args.blocks - done))])
        mined = time.perf_counter() - t
        for _ in range(
            16
        ):  # the running agent polls on; its 16th poll reads the head (the checkpoint follows)
            trio.run(first.poll)
            journal.commit()
        journal.close()
        head = chain.block_number()
        print(
            f"anvil: {head:,} blocks (deployed at {first.deploy_block}; {args.blocks:,} mined in {mined:.1f} s)"
        )
        fresh = Path(tmp) / "fresh.sqlite"
        cases = (("no journal", None), ("full replay", fresh), ("checkpoint", Path(tmp) / "journal.sqlite"))
        for name, path in cases:
            runs = [restart(opts, path) for _ in range(args.runs)]
            secs = statistics.median(r[0] for r in runs)
            calls, held = sorted({r[1] for r in runs}), sorted({r[2] for r in runs})
            print(f"{name:12s} first poll {secs * 1000:9.1f} ms  eth_getLogs calls {calls}  view {held}")


if __name__ == "__main__":
    sys.exit(main())

"""Gas per job of the settlement contract, measured on the embedded chain (py-evm), next to the original contract.

    python bench/gas.py            # table
    python bench/gas.py --json     # {"per_job": {"k1": .., "k1_commit_reveal": .., "k1_posted_10_together": ..,
                                   #  "k1_posted_and_settled_10_together": .., "k3": ..},
                                   #  "batched": {"1": .., "10": .., "100": ..},
                                   #  "original": {"k1": 342081, "k3": 699376}}

Per-job path: postJob + k commits + one reveal transaction carrying all k openings (it settles the job), in steady
state (the nodes have settled a job before); k = 1 also with the executor's one commitReveal transaction, alone
and with 10 jobs posted in one postJobs (an origin's batch submission), settled one by one or in one
commitRevealMany (an executor's jobs ready together). The executors' usage equals their share of the price, so the whole
escrow is paid out and there is no refund to claim, as in the original contract (which paid the full price).
Withdrawals are pull payments made once for many jobs and are listed apart.
Batched path: settleBatch with one client voucher covering n jobs, plus finalizeBatch after the challenge window,
divided by n (the client's deposit is made once for many batches and is listed apart).
The original figures are the sandrun-pool SandrunMarketplace contract (submitJob + k claimJob + k submitProof),
compiled with the same solc 0.8.37, optimizer 200 runs, cancun, on py-evm.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandrun_p2p.chain.chain import Chain  # noqa: E402
from sandrun_p2p.chain.crypto import ResultsTree, commitment  # noqa: E402
from sandrun_p2p.chain.market import Market, MarketParams, Opening  # noqa: E402

ORIGINAL = {"k1": 342081, "k3": 699376}
GOALS = {"k3": 350_000, "batched100": 35_000}
ETH = 10**18


def h(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


class Bench:
    def __init__(self) -> None:
        self.chain = Chain.embedded()
        dev = self.chain.dev_signers()
        self.market = Market.deploy(self.chain, dev[0], MarketParams(challenge_window=60))
        self.deploy_gas = int(self.market.deploy_receipt["gasUsed"])
        self.nodes = []
        for i in range(3):
            m = self.market.as_(dev[1 + i])
            nid = h(f"bench-node-{i}")
            m.register(nid, ETH)
            self.nodes.append((m, nid))
        self.client = self.market.as_(self.chain.new_account(100 * ETH))
        self.n = 0
        self.seq = 0
        self.cumulative = 0

    def per_job(self, k: int) -> dict[str, int]:
        self.n += 1
        job_id = h(f"bench-job-{self.n}")
        price = 3 * 10**15
        q = k // 2 + 1
        gas = {"post": self.client.post_job(job_id, k, q, self.chain.now() + 600, price).gas_used}
        root = h(f"root-{self.n}")
        openings, commits = [], 0
        for pos, (m, nid) in enumerate(self.nodes[:k]):
            salt = os.urandom(32)
            commits += m.commit(job_id, commitment(job_id, nid, root, salt), price // k).gas_used
            openings.append(Opening(pos, root, salt, price // k))
        gas["commits"] = commits
        gas["reveal+settle"] = self.nodes[0][0].reveal(job_id, openings).gas_used
        gas["total"] = gas["post"] + gas["commits"] + gas["reveal+settle"]
        return gas

    def per_job_one_tx(self) -> dict[str, int]:
        """k = 1 with the executor's one commitReveal (commit, reveal and settlement in one transaction)."""
        self.n += 1
        job_id = h(f"bench-job-{self.n}")
        price = 3 * 10**15
        gas = {"post": self.client.post_job(job_id, 1, 1, self.chain.now() + 600, price).gas_used}
        gas["commitReveal"] = (
            self.nodes[0][0].commit_reveal(job_id, h(f"root-{self.n}"), os.urandom(32), price).gas_used
        )
        gas["total"] = gas["post"] + gas["commitReveal"]
        return gas

    def per_job_posted_together(self, n_jobs: int) -> dict[str, int]:
        """k = 1, ``n_jobs`` posted in one postJobs (an origin's batch submission), each settled by its executor's
        commitReveal, then ``n_jobs`` more settled in one commitRevealMany (an executor's jobs that are ready
        together); per job."""
        price = 3 * 10**15
        ids = []
        for _ in range(2 * n_jobs):
            self.n += 1
            ids.append(h(f"bench-job-{self.n}"))
        deadline = self.chain.now() + 600
        executor = self.nodes[0][0]
        post = self.client.post_jobs([(j, 1, 1, deadline, price) for j in ids[:n_jobs]]).gas_used
        cr = sum(
            executor.commit_reveal(j, h(f"root-{j.hex()}"), os.urandom(32), price).gas_used
            for j in ids[:n_jobs]
        )
        post2 = self.client.post_jobs([(j, 1, 1, deadline, price) for j in ids[n_jobs:]]).gas_used
        many = executor.commit_reveal_many(
            [(j, h(f"root-{j.hex()}"), os.urandom(32), price) for j in ids[n_jobs:]]
        ).gas_used
        return {
            "post": round(post / n_jobs),
            "commitReveal": round(cr / n_jobs),
            "total": round((post + cr) / n_jobs),
            "commitRevealMany": round(many / n_jobs),
            "total_many": round((post2 + many) / n_jobs),
        }

    def batched(self, n_jobs: int) -> dict[str, int]:
        executor = self.nodes[0][0]
        results = []
        for _ in range(n_jobs):
            self.n += 1
            results.append((h(f"bench-batch-job-{self.n}"), h(f"bench-batch-root-{self.n}")))
        self.seq += n_jobs
        self.cumulative += 10**12 * n_jobs
        v = self.client.sign_voucher(executor.account, results[-1][0], self.seq, 10**12, self.cumulative)
        settle = executor.settle_batch(v, ResultsTree(results))
        bid = settle.event("BatchSettled")["batchId"]
        self.chain.advance(61)
        fin = executor.finalize_batch(bid).gas_used
        total = settle.gas_used + fin
        return {"settle": settle.gas_used, "finalize": fin, "total": total, "per_job": round(total / n_jobs)}

    def run(self) -> dict:
        # warm-up: first-time storage (reputation counters, earnings, channel) is not what a job costs
        self.per_job(3)
        self.per_job(1)
        self.deposit_gas = self.client.deposit(10 * ETH).gas_used
        self.batched(1)
        self.detail = {"k1": self.per_job(1), "k3": self.per_job(3)}
        self.one_tx = self.per_job_one_tx()
        self.together = self.per_job_posted_together(10)
        self.batch_detail = {str(n): self.batched(n) for n in (1, 10, 100)}
        self.withdraw_gas = self.nodes[1][0].withdraw().gas_used
        job_id = h("bench-refund")
        self.client.post_job(job_id, 1, 1, self.chain.now() + 600, ETH)
        salt = os.urandom(32)
        m, nid = self.nodes[0]
        m.commit(job_id, commitment(job_id, nid, h("r"), salt), ETH // 2)
        m.reveal(job_id, [Opening(0, h("r"), salt, ETH // 2)])
        self.refund_gas = self.client.claim_refund(job_id).gas_used
        return {
            "per_job": {
                "k1": self.detail["k1"]["total"],
                "k1_commit_reveal": self.one_tx["total"],
                "k1_posted_10_together": self.together["total"],
                "k1_posted_and_settled_10_together": self.together["total_many"],
                "k3": self.detail["k3"]["total"],
            },
            "batched": {n: d["per_job"] for n, d in self.batch_detail.items()},
            "original": dict(ORIGINAL),
        }


def table(b: Bench, r: dict) -> str:
    lines = [f"{'path':<34}{'gas/job':>10}{'original':>11}{'ratio':>8}   detail"]
    for k in ("k1", "k3"):
        d = b.detail[k]
        lines.append(
            f"{'per-job ' + k.replace('k', 'k='):<34}{d['total']:>10,}{ORIGINAL[k]:>11,}{d['total'] / ORIGINAL[k]:>8.2f}"
            f"   post {d['post']:,} + commits {d['commits']:,} + reveal/settle {d['reveal+settle']:,}"
        )
    d = b.one_tx
    lines.append(
        f"{'per-job k=1, one executor tx':<34}{d['total']:>10,}{ORIGINAL['k1']:>11,}{d['total'] / ORIGINAL['k1']:>8.2f}"
        f"   post {d['post']:,} + commitReveal {d['commitReveal']:,}"
    )
    d = b.together
    lines.append(
        f"{'per-job k=1, 10 posted together':<34}{d['total']:>10,}{ORIGINAL['k1']:>11,}"
        f"{d['total'] / ORIGINAL['k1']:>8.2f}   postJobs/10 {d['post']:,} + commitReveal {d['commitReveal']:,}"
    )
    lines.append(
        f"{'per-job k=1, 10 posted+settled tog.':<34}{d['total_many']:>10,}{ORIGINAL['k1']:>11,}"
        f"{d['total_many'] / ORIGINAL['k1']:>8.2f}   postJobs/10 {d['post']:,} + "
        f"commitRevealMany/10 {d['commitRevealMany']:,}"
    )
    for n, d in b.batch_detail.items():
        lines.append(
            f"{'batched, ' + n + ' job' + ('s' if n != '1' else '') + ' per batch':<34}{d['per_job']:>10,}"
            f"{ORIGINAL['k1']:>11,}{d['per_job'] / ORIGINAL['k1']:>8.3f}"
            f"   settleBatch {d['settle']:,} + finalizeBatch {d['finalize']:,}"
        )
    lines.append("")
    lines.append(
        f"apart: withdraw (node, many jobs at once) {b.withdraw_gas:,}; claimRefund (client) {b.refund_gas:,}; "
        f"deposit (client, many batches) {b.deposit_gas:,}; deploy {b.deploy_gas:,}"
    )
    ok3 = r["per_job"]["k3"] <= GOALS["k3"]
    ok100 = r["batched"]["100"] <= GOALS["batched100"]
    lines.append(
        f"goals: per-job k=3 <= {GOALS['k3']:,}: {'met' if ok3 else 'MISSED'}; "
        f"batched <= {GOALS['batched100']:,}/job at 100: {'met' if ok100 else 'MISSED'}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print only the JSON result")
    args = ap.parse_args(argv)
    b = Bench()
    r = b.run()
    if args.json:
        print(json.dumps(r))
    else:
        print(table(b, r))
    return 0


if __name__ == "__main__":
    sys.exit(main())

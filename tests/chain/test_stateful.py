"""Stateful property test: any sequence of calls keeps the books exact and never pays out more than came in.

After every step:
  contract balance == open escrows + unclaimed refunds + stakes + node earnings + pull balances
                      + client deposits + batches in their challenge window
  contract balance == initial balance + ETH sent in by successful calls - ETH paid out (Withdrawn, RefundClaimed,
                      StakeWithdrawn, DepositWithdrawn events)
"""

from __future__ import annotations

import os

from chain_world import ETH, PARAMS, h
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sandrun_p2p.chain.crypto import ResultsTree, commitment
from sandrun_p2p.chain.errors import ChainError
from sandrun_p2p.chain.market import Opening

OUT_EVENTS = {"Withdrawn", "RefundClaimed", "StakeWithdrawn", "DepositWithdrawn"}
WORLD = None  # set by the test function from the session fixture
LENS = None


class MarketMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.w = WORLD
        self.snap = self.w.chain.snapshot()
        self.start_balance = self.w.market.contract_balance()
        self.paid_in = 0
        self.paid_out = 0
        self.clients = [self.w.client, self.w.market.as_(self.w.chain.new_account(50 * ETH))]
        self.jobs: list[dict] = []  # {"id", "root", "openings": {pos: Opening}}
        self.batches: list[dict] = []  # {"id", "tree", "node"}
        self.vouchers: dict[tuple[int, int], tuple[int, int]] = {}  # (client, node) -> (seq, cumulative)
        self.accounts = (
            {m.account for m in self.clients} | {n.address for n in self.w.nodes} | {self.w.other.account}
        )
        self.ok = 0
        self.lens = LENS

    def teardown(self) -> None:
        self.w.chain.revert(self.snap)

    # ------------------------------------------------------------------ plumbing

    def act(self, fn, *args, value: int = 0):
        """Run a market call; a revert is a legal outcome, anything else must keep the invariants."""
        try:
            res = fn(*args)
        except ChainError:
            return None
        self.ok += 1
        self.paid_in += value
        for ev in res.events:
            if ev.name in OUT_EVENTS:
                self.paid_out += ev.args["amount"]
        return res

    def node(self, i: int):
        return self.w.nodes[i % len(self.w.nodes)]

    def job(self, i: int) -> dict:
        return self.jobs[i % len(self.jobs)]

    # ------------------------------------------------------------------ per-job path

    @rule(c=st.integers(0, 1), k=st.integers(1, 3), price=st.sampled_from([1000, ETH, 3 * ETH]))
    def post(self, c, k, price):
        job_id = self.w.new_job_id()
        q = k // 2 + 1
        res = self.act(self.clients[c].post_job, job_id, k, q, self.w.chain.now() + 300, price, value=price)
        if res is not None:
            self.jobs.append({"id": job_id, "root": h(job_id), "openings": {}})

    @precondition(lambda self: self.jobs)
    @rule(
        j=st.integers(0, 50),
        n=st.integers(0, 4),
        honest=st.booleans(),
        usage=st.sampled_from([0, 700, 2 * ETH]),
    )
    def commit(self, j, n, honest, usage):
        job, node = self.job(j), self.node(n)
        root = job["root"] if honest else h(os.urandom(8))
        salt = os.urandom(32)
        res = self.act(node.market.commit, job["id"], commitment(job["id"], node.node_id, root, salt), usage)
        if res is not None:
            pos = res.event("Committed")["pos"]
            job["openings"][pos] = Opening(pos, root, salt, usage)

    @precondition(lambda self: self.jobs)
    @rule(j=st.integers(0, 50), which=st.sets(st.integers(0, 2), min_size=1))
    def reveal(self, j, which):
        job = self.job(j)
        ops = [job["openings"][p] for p in sorted(which) if p in job["openings"]]
        if ops:
            self.act(self.w.other.reveal, job["id"], ops)

    @precondition(lambda self: self.jobs)
    @rule(j=st.integers(0, 50))
    def finalize(self, j):
        self.act(self.w.other.finalize, self.job(j)["id"])

    @precondition(lambda self: self.jobs)
    @rule(j=st.integers(0, 50), c=st.integers(0, 1))
    def claim_refund(self, j, c):
        self.act(self.clients[c].claim_refund, self.job(j)["id"])

    @precondition(lambda self: self.jobs)
    @rule(j=st.integers(0, 50), c=st.integers(0, 1))
    def cancel(self, j, c):
        self.act(self.clients[c].cancel_job, self.job(j)["id"])

    @precondition(lambda self: self.jobs)
    @rule(j=st.integers(0, 50), n=st.integers(0, 4))
    def equivocate(self, j, n):
        node, job = self.node(n), self.job(j)
        a, b = node.market.attest(job["id"], h("A")), node.market.attest(job["id"], h("B"))
        self.act(self.w.other.slash_equivocation, a, b)

    @rule(seconds=st.sampled_from([30, 150, 700, 2500]))
    def advance(self, seconds):
        self.w.chain.advance(seconds)

    # ------------------------------------------------------------------ stake and withdrawals

    @rule(n=st.integers(0, 4), what=st.sampled_from(["unbond", "cancel", "withdraw_stake", "add_stake"]))
    def stake_ops(self, n, what):
        m = self.node(n).market
        if what == "unbond":
            self.act(m.request_unbond)
        elif what == "cancel":
            self.act(m.cancel_unbond)
        elif what == "withdraw_stake":
            self.act(m.withdraw_stake)
        else:
            self.act(m.add_stake, ETH // 2, value=ETH // 2)

    @rule(who=st.integers(0, 7))
    def withdraw(self, who):
        actors = [n.market for n in self.w.nodes] + self.clients + [self.w.other]
        self.act(actors[who % len(actors)].withdraw)

    # ------------------------------------------------------------------ batched path

    @rule(c=st.integers(0, 1), amount=st.sampled_from([500, 5000, ETH]))
    def deposit(self, c, amount):
        self.act(self.clients[c].deposit, amount, value=amount)

    @rule(c=st.integers(0, 1), what=st.sampled_from(["request", "withdraw"]))
    def deposit_exit(self, c, what):
        m = self.clients[c]
        self.act(m.request_deposit_withdrawal if what == "request" else m.withdraw_deposit)

    @rule(
        c=st.integers(0, 1), n=st.integers(0, 4), jobs=st.integers(1, 4), per_job=st.sampled_from([100, 3000])
    )
    def settle_batch(self, c, n, jobs, per_job):
        client, node = self.clients[c], self.node(n)
        seq, cum = self.vouchers.get((c, n), (0, 0))
        results = [(h(os.urandom(8)), h(os.urandom(8))) for _ in range(jobs)]
        seq, cum = seq + jobs, cum + per_job * jobs
        self.vouchers[(c, n)] = (seq, cum)
        v = client.sign_voucher(node.address, results[-1][0], seq, per_job, cum)
        tree = ResultsTree(results)
        res = self.act(node.market.settle_batch, v, tree)
        if res is not None:
            self.batches.append({"id": res.event("BatchSettled")["batchId"], "tree": tree, "node": node})

    @precondition(lambda self: self.batches)
    @rule(b=st.integers(0, 50))
    def finalize_batch(self, b):
        self.act(self.w.other.finalize_batch, self.batches[b % len(self.batches)]["id"])

    @precondition(lambda self: self.batches)
    @rule(b=st.integers(0, 50))
    def challenge_batch(self, b):
        batch = self.batches[b % len(self.batches)]
        job_id = batch["tree"].results[0][0]
        other = batch["node"].market.attest(job_id, h("a different root"))
        self.act(self.w.other.challenge_batch, batch["id"], batch["tree"], job_id, other)

    # ------------------------------------------------------------------ invariants

    @invariant()
    def books_balance(self):
        m = self.w.market
        balance = m.contract_balance()
        assert balance == self.start_balance + self.paid_in - self.paid_out
        assert self.paid_out <= self.start_balance + self.paid_in
        owed, counters, listed = self.lens.functions.books(
            m.address, [j["id"] for j in self.jobs], sorted(self.accounts)
        ).call()
        assert balance == owed, f"balance {balance} != liabilities {owed}"
        assert counters == listed, f"openJobs counters {counters} != open jobs listing the node {listed}"


def test_market_state_machine(world):
    global WORLD, LENS
    WORLD = world
    LENS = world.deploy_helper("Lens")  # stays for the session: the machine's snapshots are taken after it
    MarketMachine.TestCase.settings = settings(
        max_examples=int(os.environ.get("SANDRUN_CHAIN_EXAMPLES", "8")),
        stateful_step_count=int(os.environ.get("SANDRUN_CHAIN_STEPS", "25")),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    MarketMachine.TestCase().runTest()
    assert PARAMS.fault_penalty < PARAMS.min_stake

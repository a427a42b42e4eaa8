"""Settlement chain model: blocks, finality, the contract's checks and gas accounting."""

from __future__ import annotations

from dataclasses import dataclass, field

from sandrun_p2p.protocol.verification import reveal_matches

#: Gas per transaction kind, from the settlement contract as measured by ``bench/gas.py`` (py-evm, steady
#: state; table in contracts/README.md): postJob 70,886; commit ~61,000; a reveal that does not settle
#: 40,600; k=1 reveal that settles 53,901; k=3 separate reveals 40.6k + 40.6k + 74.4k (the last settles);
#: claimRefund ~39,500. The contract settles inside the reveal that completes the quorum; NodeCore sends that
#: as a separate ``settle``, so ``settle + settle_per_payee * payees`` is the settling reveal's extra cost,
#: fitted to the two measured points: per-job totals come out at 185,766 (k=1) and 409,940 (k=3, separate
#: reveals), as measured. ``stake``, ``slash``, ``fraud_proof`` and ``revert`` are estimates (not measured).
#: The batched path (not modelled here) costs 164,269 / 16,426 / 1,643 gas per job for 1 / 10 / 100 jobs
#: per batch; withdrawals (~40.7k) are once for many jobs. Override per scenario in ``[chain.gas]``.
#: ``commit_reveal`` (session 11): the k-th committer's one transaction; for k = 1 it settles (60,574 measured
#: at 3082143, against commit 61,114 + reveal/settle 54,112 at the same commit: sharing code between commit,
#: reveal and commitReveal made the two older paths ~0.2% dearer than the figures above). The agent sends it;
#: NodeCore (and so this model) still asks for a commit and a reveal.
#: ``postJobs`` and ``commitRevealMany`` (session 13, not modelled: the model sends each job's alone): 51,663 and
#: 32,803 gas per job when 10 go together; ``postJob`` became 70,983 and ``commitReveal`` 60,677 with them.
GAS = {
    "fund": 70_886,  # postJob: escrow the job's price
    "commit": 60_979,
    "reveal": 40_600,  # opening checked with the SHA-256 precompile
    "commit_reveal": 60_574,  # k = 1, settling (not used by the model: see above)
    "settle": 3_050,  # settling reveal's extra cost ...
    "settle_per_payee": 10_250,  # ... per agreeing executor credited
    "refund": 39_500,  # claimRefund
    "slash": 70_000,  # estimate
    "fraud_proof": 90_000,  # estimate: spot-check mismatch settled on chain (proposed, see trust.py)
    "revert": 25_000,  # estimate: a transaction the contract rejects still pays for its execution
    "stake": 65_000,  # estimate: register + stake
}
#: Measured per-job totals the table above must reproduce (tests/sims check it).
MEASURED_PER_JOB = {"k1": 185_766, "k3_separate_reveals": 409_940, "k3_one_reveal_tx": 341_901}


@dataclass
class JobOnChain:
    k: int
    q: int
    commits: dict[bytes, bytes] = field(default_factory=dict)
    reveals: dict[bytes, bytes] = field(default_factory=dict)
    settled_root: bytes | None = None
    refunded: bool = False
    refund_reason: str = ""
    slashed: set[bytes] = field(default_factory=set)
    gas: int = 0


@dataclass
class TxResult:
    ok: bool
    event: str = ""  # job_settled, job_refunded, slashed
    detail: dict = field(default_factory=dict)


class ChainModel:
    """The contract's rules as the simulator needs them (first settle/refund wins; slash once per case)."""

    def __init__(self, gas_overrides: dict[str, int], stake_wei: int, slash_fraction: float) -> None:
        self.gas_table = {**GAS, **gas_overrides}
        self.jobs: dict[bytes, JobOnChain] = {}
        self.stake: dict[bytes, int] = {}
        self.stake_wei = stake_wei
        self.slash_fraction = slash_fraction
        self.slashed_wei: dict[bytes, int] = {}
        self.gas_total = 0
        self.tx_count: dict[str, int] = {}
        self.reverts: dict[str, int] = {}

    def _gas(self, job: JobOnChain | None, kind: str, amount: int | None = None) -> None:
        g = self.gas_table[kind] if amount is None else amount
        self.gas_total += g
        if job is not None:
            job.gas += g

    def register(self, node: bytes) -> None:
        self.stake[node] = self.stake_wei
        self._gas(None, "stake")

    def fund(self, job_id: bytes, k: int, q: int) -> None:
        j = self.jobs[job_id] = JobOnChain(k, q)
        self._gas(j, "fund")

    def apply(self, sender: bytes, kind: str, job_id: bytes, args: dict) -> TxResult:
        self.tx_count[kind] = self.tx_count.get(kind, 0) + 1
        j = self.jobs.get(job_id)
        r = self._apply(j, sender, kind, job_id, args) if j is not None else TxResult(False)
        if not r.ok:
            self.reverts[kind] = self.reverts.get(kind, 0) + 1
            self._gas(j, "revert")
        return r

    def _apply(self, j: JobOnChain, sender: bytes, kind: str, job_id: bytes, args: dict) -> TxResult:
        closed = j.settled_root is not None or j.refunded
        if kind == "commit":
            if closed or sender in j.commits:
                return TxResult(False)
            j.commits[sender] = args["commitment"]
            self._gas(j, "commit")
            return TxResult(True)
        if kind == "reveal":
            c = j.commits.get(sender)
            if closed or c is None or sender in j.reveals:
                return TxResult(False)
            if not reveal_matches(c, job_id, sender, args["root"], args["salt"]):
                return TxResult(False)
            j.reveals[sender] = args["root"]
            self._gas(j, "reveal")
            return TxResult(True)
        if kind == "settle":
            root = args["root"]
            payees = [n for n, r in j.reveals.items() if r == root]
            if closed or len(payees) < j.q:
                return TxResult(False)
            j.settled_root = root
            self._gas(
                j, "settle", self.gas_table["settle"] + self.gas_table["settle_per_payee"] * len(payees)
            )
            return TxResult(True, "job_settled", {"root": root, "payees": sorted(payees)})
        if kind == "refund":
            if closed:
                return TxResult(False)
            j.refunded = True
            j.refund_reason = str(args.get("reason", ""))
            self._gas(j, "refund")
            return TxResult(True, "job_refunded", {"reason": j.refund_reason})
        if kind == "slash":
            node = args["node"]
            ev_kind = args["kind"]
            if node in j.slashed:
                return TxResult(False)
            if ev_kind == "no_reveal":
                valid = node in j.commits and node not in j.reveals
            elif ev_kind == "dissent":  # the accused revealed on chain against a root a quorum revealed
                mine = j.reveals.get(node)
                roots = list(j.reveals.values())
                valid = mine is not None and any(r != mine and roots.count(r) >= j.q for r in set(roots))
            else:  # equivocation: two signed conflicting messages; the simulator trusts the core here
                valid = node in j.commits
            if not valid:
                return TxResult(False)
            return self._slash(j, node, "slash", ev_kind)
        return TxResult(False)

    def fraud_proof(self, job_id: bytes, node: bytes) -> TxResult:
        """A spot check contradicted ``node``'s accepted result (the proposed challenge path)."""
        j = self.jobs.get(job_id)
        if j is None or node in j.slashed:
            return TxResult(False)
        return self._slash(j, node, "fraud_proof", "spot_check")

    def _slash(self, j: JobOnChain, node: bytes, gas_kind: str, why: str) -> TxResult:
        j.slashed.add(node)
        amount = int(self.stake.get(node, 0) * self.slash_fraction)
        self.stake[node] = self.stake.get(node, 0) - amount
        self.slashed_wei[node] = self.slashed_wei.get(node, 0) + amount
        self._gas(j, gas_kind)
        return TxResult(True, "slashed", {"node": node, "amount": amount, "reason": why})

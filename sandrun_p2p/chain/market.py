"""Settlement client for the SandrunMarket contract: one object per (chain, contract, account)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from eth_utils import to_checksum_address

from . import artifacts
from .abi import Calls
from .chain import Chain, Signer
from .crypto import (
    Attestation,
    ResultsTree,
    Voucher,
    attestation_digest,
    sign_attestation,
    sign_voucher,
    voucher_digest,
)
from .errors import ChainError, RevertDecoder
from .logdecode import decode_raw_log, event_shapes, log_position

CONTRACT = "SandrunMarket"

STATE_NONE, STATE_OPEN, STATE_SETTLED, STATE_FAILED = 0, 1, 2, 3
STATE_NAMES = {0: "none", 1: "open", 2: "settled", 3: "failed"}
BATCH_PENDING, BATCH_PAID, BATCH_VOIDED = 1, 2, 3
SLASH_NO_REVEAL, SLASH_DISSENT, SLASH_EQUIVOCATION = 1, 2, 3
#: Gas a reveal may need beyond its estimate when another reveal, mined between the estimate and this one,
#: makes it the one that settles the job: the worst case measured (k = 5, two dissenters slashed) is a settling
#: reveal of all five openings (160,786) against a one-opening reveal that does not settle (40,490).
#: tests/chain/test_gas.py checks the bound.
SETTLEMENT_GAS = 130_000
#: Most jobs one ``postJobs`` or ``commitRevealMany`` takes (the contract's ``MAX_JOBS_PER_CALL``).
MAX_JOBS_PER_CALL = 64


@dataclass(frozen=True)
class MarketParams:
    """Deployment parameters (immutable in the contract)."""

    min_stake: int = 10**17  # 0.1 ETH
    fault_penalty: int = 10**16  # taken from a silent or dissenting executor
    unbonding_delay: int = 8 * 86400  # must be >= max_job_duration + reveal_window
    reveal_window: int = 3600
    max_job_duration: int = 7 * 86400
    challenge_window: int = 3600
    deposit_delay: int = 86400

    def args(self) -> tuple[int, ...]:
        return (
            self.min_stake,
            self.fault_penalty,
            self.unbonding_delay,
            self.reveal_window,
            self.max_job_duration,
            self.challenge_window,
            self.deposit_delay,
        )


@dataclass(frozen=True)
class Event:
    name: str
    args: dict[str, Any]
    block_number: int
    tx_hash: str
    log_index: int


@dataclass
class TxResult:
    receipt: Any
    events: list[Event] = field(default_factory=list)

    @property
    def gas_used(self) -> int:
        return int(self.receipt["gasUsed"])

    @property
    def tx_hash(self) -> str:
        return "0x" + bytes(self.receipt["transactionHash"]).hex()

    def event(self, name: str) -> dict[str, Any]:
        for e in self.events:
            if e.name == name:
                return e.args
        raise KeyError(f"no {name} event in {self.tx_hash}")

    def all(self, name: str) -> list[dict[str, Any]]:
        return [e.args for e in self.events if e.name == name]


@dataclass(frozen=True)
class Opening:
    """What an executor reveals for its position: ``usage`` must be the one it committed with."""

    pos: int
    trace_root: bytes
    salt: bytes
    usage: int

    def as_tuple(self) -> tuple:
        return (self.pos, self.trace_root, self.salt, self.usage)


@dataclass(frozen=True)
class JobInfo:
    job_id: bytes
    client: str
    escrow: int  # while open: the escrow; closed: the refund not yet claimed
    deadline: int
    reveal_deadline: int
    k: int
    q: int
    commits: int
    revealed_mask: int
    state: int
    seed: bytes  # 8 bytes: the ranking seed, the first bytes of the previous block's hash at posting
    executors: tuple[int, ...]

    @property
    def state_name(self) -> str:
        return STATE_NAMES.get(self.state, str(self.state))


@dataclass(frozen=True)
class NodeInfo:
    index: int
    account: str
    node_id: bytes
    stake: int
    earnings: int
    open_jobs: int
    completed: int
    failed: int
    slashed: int
    unbonding: bool
    unbond_at: int
    locked_until: int


class Market:
    """The SandrunMarket at ``address`` on ``chain``, used by ``signer`` (None: read-only)."""

    def __init__(self, chain: Chain, address: str, signer: Signer | None = None) -> None:
        self.chain = chain
        self.address = to_checksum_address(address)
        self.signer = signer
        self.artifact = artifacts.load(CONTRACT)
        self.contract = chain.w3.eth.contract(address=self.address, abi=self.artifact["abi"])
        if not chain.decoder._errors:
            chain.decoder = RevertDecoder(self.artifact["abi"])
        self._shapes = event_shapes(self.artifact["abi"])
        self._calls = Calls(self.artifact["abi"])

    # ------------------------------------------------------------------ set-up

    @classmethod
    def deploy(cls, chain: Chain, signer: Signer, params: MarketParams | None = None) -> Market:
        params = params or MarketParams()
        art = artifacts.load(CONTRACT)
        if not chain.decoder._errors:
            chain.decoder = RevertDecoder(art["abi"])
        address, receipt = chain.deploy(signer, art, *params.args())
        m = cls(chain, address, signer)
        m.deploy_receipt = receipt
        return m

    def as_(self, signer: Signer) -> Market:
        """The same contract used by another account."""
        m = Market.__new__(Market)
        m.__dict__.update(self.__dict__)
        m.signer = signer
        return m

    @property
    def account(self) -> str:
        if self.signer is None:
            raise ChainError("no-signer", "this Market is read-only: give it a Signer")
        return self.signer.address

    def params(self) -> MarketParams:
        c = self.contract.functions
        return MarketParams(
            c.minStake().call(),
            c.faultPenalty().call(),
            c.unbondingDelay().call(),
            c.revealWindow().call(),
            c.maxJobDuration().call(),
            c.challengeWindow().call(),
            c.depositDelay().call(),
        )

    # ------------------------------------------------------------------ plumbing

    def _tx(
        self, fn_name: str, *args: Any, value: int = 0, gas: int | None = None, extra_gas: int = 0
    ) -> TxResult:
        if self.signer is None:
            raise ChainError("no-signer", f"{fn_name} needs a Signer")
        tx = {"to": self.address, "data": self.calldata(fn_name, *args), "value": value}
        receipt = self.chain.send(self.signer, tx, gas=gas, extra_gas=extra_gas, method=fn_name)
        return TxResult(receipt, self.decode_logs(receipt["logs"]))

    def calldata(self, fn_name: str, *args: Any) -> str:
        """``0x``-hex calldata of a call of ``fn_name`` (see :mod:`.abi`; an overloaded name goes through web3)."""
        if fn_name in self._calls:
            return self._calls.data(fn_name, args)
        return getattr(self.contract.functions, fn_name)(*args)._encode_transaction_data()

    def _call(self, fn_name: str, *args: Any) -> Any:
        return self.chain.call(
            self.contract, fn_name, *args, sender=self.signer.address if self.signer else None
        )

    def decode_logs(self, logs: list) -> list[Event]:
        """This contract's events among ``logs`` (a receipt's or ``eth_getLogs``'), decoded by
        :mod:`.logdecode` (the same result as web3's ``process_log``, ~20x cheaper)."""
        out = []
        mine = self.address.lower()
        for log in logs:
            a = log["address"]
            if (a.lower() if isinstance(a, str) else to_checksum_address(a).lower()) != mine:
                continue
            decoded = decode_raw_log(self._shapes, log)
            if decoded is not None:
                out.append(Event(decoded[0], decoded[1], *log_position(log)))
        return out

    # ------------------------------------------------------------------ registry

    def register(self, node_id: bytes, stake: int) -> TxResult:
        """Stake ``stake`` wei and bind the Ed25519 ``node_id`` to this account."""
        return self._tx("register", node_id, value=stake)

    def add_stake(self, amount: int) -> TxResult:
        return self._tx("addStake", value=amount)

    def request_unbond(self) -> TxResult:
        return self._tx("requestUnbond")

    def cancel_unbond(self) -> TxResult:
        return self._tx("cancelUnbond")

    def withdraw_stake(self, to: str | None = None) -> TxResult:
        return self._tx("withdrawStake", to or self.account)

    def node_index(self, account: str | None = None) -> int:
        return int(self._call("nodeIndex", to_checksum_address(account or self.account)))

    def node(self, index: int | None = None) -> NodeInfo:
        if index is None:
            index = self.node_index()
        v = self._call("getNode", index)
        return NodeInfo(
            index, v[0], bytes(v[1]), *[int(x) for x in v[2:8]], bool(v[8]), int(v[9]), int(v[10])
        )

    def node_by_id(self, node_id: bytes) -> NodeInfo | None:
        idx = int(self._call("indexOfNodeId", node_id))
        return self.node(idx) if idx else None

    def is_eligible(self, account: str | None = None) -> bool:
        return bool(self._call("isEligible", to_checksum_address(account or self.account)))

    # ------------------------------------------------------------------ per-job path

    def post_job(self, job_id: bytes, k: int, q: int, deadline: int, price: int) -> TxResult:
        """Escrow ``price`` wei for ``job_id``; ``deadline`` is a chain timestamp (see ``chain.now()``)."""
        return self._tx("postJob", job_id, k, q, deadline, value=price)

    def post_jobs(self, jobs: list[tuple[bytes, int, int, int, int]]) -> TxResult:
        """:meth:`post_job` for up to :data:`MAX_JOBS_PER_CALL` jobs, ``(job_id, k, q, deadline, price)`` each, in
        one transaction: every job gets its escrow and its ``JobPosted`` (all the same seed), or the call
        reverts with the first bad job's error and none is posted."""
        return self._tx("postJobs", [tuple(j) for j in jobs], value=sum(j[4] for j in jobs))

    def cancel_job(self, job_id: bytes) -> TxResult:
        return self._tx("cancelJob", job_id)

    def commit(self, job_id: bytes, commitment: bytes, usage: int) -> TxResult:
        return self._tx("commit", job_id, commitment, usage)

    def reveal(self, job_id: bytes, openings: list[Opening]) -> TxResult:
        """Submit one or more openings (usually all of them, gathered from gossip: one transaction settles).
        The gas limit leaves room for settling: another reveal may land first and make this one the last."""
        return self._tx("reveal", job_id, [o.as_tuple() for o in openings], extra_gas=SETTLEMENT_GAS)

    def commit_reveal(self, job_id: bytes, trace_root: bytes, salt: bytes, usage: int) -> TxResult:
        """Commit and reveal in one transaction as the job's k-th committer (the commitment is computed on
        chain; k = 1 settles at once). Reverts with ``NotLastCommitment`` when this would not be the k-th:
        then :meth:`commit` and :meth:`reveal` once the others have committed. No settlement headroom is
        needed: nobody can reveal before this transaction opens the reveals."""
        return self._tx("commitReveal", job_id, trace_root, salt, usage)

    def commit_reveal_many(self, items: list[tuple[bytes, bytes, bytes, int]]) -> TxResult:
        """:meth:`commit_reveal` for up to :data:`MAX_JOBS_PER_CALL` jobs, ``(job_id, trace_root, salt, usage)``
        each, in one transaction; all or nothing (the first refused job's error reverts the call)."""
        return self._tx("commitRevealMany", [tuple(i) for i in items])

    def finalize(self, job_id: bytes) -> TxResult:
        """Close a job whose time is up: refund when nobody committed, else settle with the reveals made."""
        return self._tx("finalize", job_id)

    settle = finalize

    def claim_refund(self, job_id: bytes, to: str | None = None) -> TxResult:
        return self._tx("claimRefund", job_id, to or self.account)

    def job(self, job_id: bytes) -> JobInfo:
        v = self._call("getJob", job_id)
        return JobInfo(
            bytes(job_id),
            v[0],
            int(v[1]),
            int(v[2]),
            int(v[3]),
            v[4],
            v[5],
            v[6],
            v[7],
            v[8],
            bytes(v[9]),
            tuple(v[10][: v[6]]),
        )

    def job_seed(self, job_id: bytes) -> bytes:
        return bytes(self._call("jobSeed", job_id))

    def position_of(self, job_id: bytes, account: str | None = None) -> int | None:
        """The commit position of ``account`` in ``job_id``, or None."""
        idx = self.node_index(account)
        job = self.job(job_id)
        return job.executors.index(idx) if idx in job.executors else None

    # ------------------------------------------------------------------ money out

    def withdraw(self, to: str | None = None) -> TxResult:
        """Send this account's node earnings and pull balance to ``to``."""
        return self._tx("withdraw", to or self.account)

    def withdrawable(self, account: str | None = None) -> int:
        account = to_checksum_address(account or self.account)
        total = int(self._call("balances", account))
        idx = int(self._call("nodeIndex", account))
        if idx:
            total += self.node(idx).earnings
        return total

    # ------------------------------------------------------------------ evidence

    def attest(self, job_id: bytes, trace_root: bytes) -> Attestation:
        """Sign an attestation of ``trace_root`` for ``job_id`` with this account's key (gossip it with reveals)."""
        if self.signer is None or self.signer.private_key is None:
            raise ChainError("no-key", "attestations need a local private key")
        return sign_attestation(
            self.signer.private_key, self.chain.chain_id, self.address, job_id, trace_root
        )

    def attestation_digest(self, job_id: bytes, trace_root: bytes) -> bytes:
        return attestation_digest(self.chain.chain_id, self.address, job_id, trace_root)

    def slash_equivocation(self, a: Attestation, b: Attestation) -> TxResult:
        if a.job_id != b.job_id:
            raise ChainError("NotEquivocation", "attestations of different jobs")
        return self._tx("slashEquivocation", a.job_id, a.trace_root, a.signature, b.trace_root, b.signature)

    # ------------------------------------------------------------------ batched path

    def deposit(self, amount: int) -> TxResult:
        return self._tx("deposit", value=amount)

    def request_deposit_withdrawal(self) -> TxResult:
        return self._tx("requestDepositWithdrawal")

    def withdraw_deposit(self, to: str | None = None) -> TxResult:
        return self._tx("withdrawDeposit", to or self.account)

    def deposit_of(self, client: str | None = None) -> tuple[int, int]:
        """(balance, unlockAt) of a client's deposit account."""
        b, u = self._call("accounts", to_checksum_address(client or self.account))
        return int(b), int(u)

    def channel(self, client: str, executor: str | None = None) -> tuple[int, int]:
        """(cumulative paid, last settled sequence number) from ``client`` to ``executor``."""
        p, s = self._call(
            "channels", to_checksum_address(client), to_checksum_address(executor or self.account)
        )
        return int(p), int(s)

    def sign_voucher(self, executor: str, job_id: bytes, seq: int, amount: int, cumulative: int) -> Voucher:
        """As a client: promise ``cumulative`` wei in total to ``executor`` (``amount`` of it for ``job_id``)."""
        if self.signer is None or self.signer.private_key is None:
            raise ChainError("no-key", "vouchers need a local private key")
        return sign_voucher(
            self.signer.private_key,
            self.chain.chain_id,
            self.address,
            executor,
            job_id,
            seq,
            amount,
            cumulative,
        )

    def voucher_digest(self, v: Voucher) -> bytes:
        return voucher_digest(
            self.chain.chain_id, self.address, v.executor, v.job_id, v.seq, v.amount, v.cumulative
        )

    def settle_batch(self, voucher: Voucher, results: ResultsTree | bytes) -> TxResult:
        """As an executor: claim everything ``voucher`` covers; ``results`` is the tree (or root) of the
        (job_id, trace_root) results delivered. Paid by ``finalize_batch`` after the challenge window."""
        root = results.root if isinstance(results, ResultsTree) else results
        return self._tx(
            "settleBatch",
            to_checksum_address(voucher.client),
            voucher.job_id,
            voucher.seq,
            voucher.amount,
            voucher.cumulative,
            voucher.signature,
            root,
        )

    def finalize_batch(self, batch_id: int) -> TxResult:
        return self._tx("finalizeBatch", batch_id)

    def challenge_batch(
        self, batch_id: int, tree: ResultsTree, job_id: bytes, other: Attestation
    ) -> TxResult:
        """Void batch ``batch_id``: its leaf for ``job_id`` contradicts ``other``, signed by the same executor."""
        i = tree.index_of(job_id)
        leaf_root = tree.results[i][1]
        return self._tx(
            "challengeBatch", batch_id, job_id, leaf_root, tree.proof(i), other.trace_root, other.signature
        )

    def batch(self, batch_id: int) -> dict[str, Any]:
        v = self._call("batches", batch_id)
        keys = ("client", "amount", "executor", "release_at", "state", "count", "results_root")
        return dict(zip(keys, v, strict=True))

    # ------------------------------------------------------------------ accounting (tests, monitoring)

    def contract_balance(self) -> int:
        return self.chain.balance(self.address)


def params_dict(p: MarketParams) -> dict[str, int]:
    return asdict(p)

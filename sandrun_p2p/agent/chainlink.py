"""The agent's :class:`~sandrun_p2p.agent.ports.ChainPort` over the project's chain client (SandrunMarket).

How NodeCore's transactions map onto the contract:

* ``join``: ``register(node_id)`` with the minimum stake when this account has no node yet;
* ``fund_job``: ``postJob`` (escrow); the contract fixes an 8-byte seed from the previous block hash, widened
  to the 32-byte ranking seed as ``sha256("sandrun-p2p/seed" || job_id || seed8)`` by every node alike;
* ``check_job``: for a job a client escrowed from its own key (``POST /v1/announce``): ``getJob`` must be open
  with escrow >= the spec's payment and the spec's k, q and deadline; the seed is widened as above;
* ``commit``: ``commit(job, commitment, usage)`` (usage is the price the executor asks, bound by the commitment);
* ``reveal``: this node's opening ``(position, root, salt, usage)``; retried while the chain still waits for other
  commitments; the reveal that opens the last committed position settles the job on chain;
* ``settle``: reveals every opening this node saw on gossip that the chain still lacks, then ``finalize`` once
  the reveal window is over (silent and dissenting executors are slashed by the contract's settlement);
* ``refund``: ``finalize`` after the deadline (no commitment: the escrow becomes the client's refund). The
  deadline is judged by ``max(time.time(), chain.now())`` and a ``TooEarly`` revert is retried: an idle
  development chain mines no blocks, so its latest timestamp (and eth-tester's next one) lags the wall clock;
  there one empty block is mined before the retry (never on other chains);
* ``slash``: dissent and silence are settled by the contract itself (nothing to send); equivocation is posted
  as ``slashEquivocation`` with the two chain attestations the accused's conflicting reveals carry
  (``evidence.py``; every reveal carries its executor's attestation, see :meth:`ChainLink.attest`).

Options (``[chain]`` in the agent config): ``rpc`` (JSON-RPC URL; none: an in-process embedded chain with its own
deployment, for a one-node trial), ``kind`` (embedded|anvil|devnet|rpc), ``addresses_file`` (written by
``deploy-contracts``; default ``<data_dir>/sandrun-chain.json``), ``key_file`` (hex private key, mode 0600) or
``key_env`` (variable holding it); on development chains without a key, ``account_index`` picks a funded account;
``max_inflight_txs`` (default 8): transactions this node may have waiting for receipts at once over JSON-RPC.
"""

from __future__ import annotations

import dataclasses
import stat
import time
from pathlib import Path
from typing import Any

import trio

from ..private_files import write_private
from ..protocol.claiming import widen_seed
from ..protocol.events import ChainUpdate, SubmitTx
from ..protocol.jobspec import PAY_VOUCHER, JobSpec
from .ports import NotFunded
from .voucherlink import BATCH_EVENTS, VoucherLink

SLASH_REASONS = {1: "no_reveal", 2: "dissent", 3: "equivocation"}
#: The events :meth:`ChainLink.poll` turns into updates: the node asks only for these (``Revealed``, one per
#: opening, and the money-movement events are neither sent nor decoded).
POLLED_EVENTS = frozenset(
    {"NodeRegistered", "UnbondRequested", "JobPosted", "Committed", "JobClosed", "Slashed"}
)


def read_key_file(path: Path) -> str:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ValueError(f"{path} has mode {mode:o}; an account key must be readable by its owner only")
    return path.read_text().strip()


def write_key_file(path: Path, key_hex: str) -> None:
    write_private(path, key_hex + "\n")


class ChainLink:
    """Blocking web3 calls run in worker threads: up to ``max_inflight_txs`` transactions at once over JSON-RPC
    (default 8; nonces are allocated in order by the chain client), one at a time on the embedded chain."""

    def __init__(self, options: dict[str, Any], shared: ChainLink | None = None) -> None:
        """``shared``: use that link's in-process embedded chain and deployment (several nodes in one process,
        as in tests); pick this node's account with ``account_index``."""
        from ..chain import Chain, Deployment, EventPoller, Signer

        data_dir = Path(options.get("data_dir") or ".")
        rpc = options.get("rpc")
        self.rpc: str | None = rpc or None
        if shared is not None:
            self.chain, dep, self.deploy_block = shared.chain, shared.deployment, shared.deploy_block
        elif rpc:
            self.chain = Chain.connect(rpc, kind=options.get("kind", "rpc"))
            path = Path(options.get("addresses_file") or data_dir / "sandrun-chain.json")
            dep = Deployment.load(path)
            self.deploy_block = dep.deploy_block
        else:
            from ..chain import deploy

            self.chain = Chain.embedded()
            dep = deploy(self.chain, self.chain.dev_signers()[0])
            self.deploy_block = dep.deploy_block
        self.deployment = dep
        self.chain_id = self.chain.chain_id  # cached: status must not block on RPC
        self.kind = "devnet-embedded" if self.chain.kind == "devnet" else self.chain.kind
        if options.get("key_file"):
            self.signer = Signer.from_key(read_key_file(Path(options["key_file"])))
        elif options.get("key_env"):
            from ..chain import load_signer

            self.signer = load_signer(key_env=options["key_env"])
        elif self.chain.is_dev:
            self.signer = self.chain.dev_signers()[int(options.get("account_index", 0))]
        else:
            raise ValueError("no account key: set [chain] key_file or key_env")
        self.market = dep.market(self.chain, self.signer)
        # reads (event polling, status) use their own connection so they never queue behind a transaction
        self.reader = (
            dep.market(Chain.connect(rpc, kind=options.get("kind", "rpc")), self.signer)
            if rpc
            else self.market
        )
        self._read_lock = trio.Lock() if rpc else None
        # one eth_getLogs per poll; the head is read every 16th
        self.poller = EventPoller(
            self.reader, from_block=self.deploy_block, names=set(POLLED_EVENTS | BATCH_EVENTS), head_every=16
        )
        # the addresses file records the deployment parameters (Market.params() needs eth_call without "from",
        # which the embedded devnet rejects)
        params = dep.params or dataclasses.asdict(self.market.params())
        self.stake = int(options.get("stake_wei", 0)) or int(params["min_stake"])
        # transactions of different jobs overlap (the chain client allocates nonces under its own lock and each
        # waits for its receipt in its own thread); the in-process embedded chain takes one call at a time
        inflight = int(options.get("max_inflight_txs", 8)) if rpc else 1
        if inflight < 1:
            raise ValueError("[chain] max_inflight_txs must be >= 1")
        self._lock = trio.CapacityLimiter(inflight)
        self.node_ids: dict[int, bytes] = {}
        self.commits: dict[bytes, dict[int, tuple[int, int]]] = {}  # job -> pos -> (node idx, usage)
        self.closed: dict[bytes, dict[str, Any]] = {}
        self.deadlines: dict[bytes, int] = {}
        # job -> this node's commitment position (from its commit receipt)
        self.positions: dict[bytes, int] = {}
        # jobs this node's own reveal closed (k = 1: the settle is a no-op)
        self.closed_here: set[bytes] = set()
        self.reveal_window = int(params["reveal_window"])
        self.node_id = b""
        self.accounts: dict[bytes, str] = {}  # node id -> account (from NodeRegistered)
        self.account_of_index: dict[int, str] = {}
        self.vouchers = VoucherLink(self, options)

    async def _run(self, fn: Any, *args: Any) -> Any:
        async with self._lock:
            return await trio.to_thread.run_sync(fn, *args)

    async def _read(self, fn: Any, *args: Any) -> Any:
        if self._read_lock is None:
            return await self._run(fn, *args)
        async with self._read_lock:
            return await trio.to_thread.run_sync(fn, *args)

    # ------------------------------------------------------------------ port

    async def join(self, node_id: bytes) -> bytes:
        self.node_id = node_id

        def work() -> bytes:
            info = self.market.node_by_id(node_id)
            if info is None:
                self.market.register(node_id, self.stake)
            return bytes.fromhex(self.signer.address[2:])

        return await self._run(work)

    async def fund_job(self, spec: JobSpec, origin: bytes) -> bytes:
        jid = spec.job_id
        if spec.pay == PAY_VOUCHER:
            return await self.vouchers.fund(spec)

        def work() -> bytes:
            res = self.market.post_job(jid, spec.redundancy, spec.quorum, spec.deadline, spec.payment_wei)
            return widen_seed(jid, bytes(res.event("JobPosted")["seed"]))

        return await self._run(work)

    async def check_job(self, spec: JobSpec) -> bytes:
        jid = spec.job_id
        if spec.pay == PAY_VOUCHER:
            raise NotFunded(
                "a voucher job is announced by the origin that pays it (POST /v1/jobs), not announced"
            )
        info = await self._read(self.reader.job, jid)
        if info.state_name != "open":
            raise NotFunded(f"job {jid.hex()} is not open on chain (state {info.state_name})")
        diffs = [
            f"{what}: chain {have}, spec {want}"
            for what, have, want in (
                ("k", info.k, spec.redundancy),
                ("q", info.q, spec.quorum),
                ("deadline", info.deadline, spec.deadline),
            )
            if have != want
        ]
        if info.escrow < spec.payment_wei:
            diffs.append(f"escrow: chain {info.escrow} wei, spec payment_wei {spec.payment_wei}")
        if diffs:
            raise NotFunded(f"job {jid.hex()} on chain does not match its spec (" + "; ".join(diffs) + ")")
        return widen_seed(jid, bytes(info.seed))

    def info(self) -> dict[str, Any]:
        return {
            "rpc": self.rpc,
            "market": self.market.address,
            "kind": self.chain.kind,
            "chain_id": self.chain_id,
        }

    async def submit(self, node_id: bytes, tx: SubmitTx) -> str:
        jid = tx.job_id
        if tx.args.get("pay") == PAY_VOUCHER:
            return await self._submit_voucher_job(tx)
        if tx.kind == "commit":
            r = await self._run(
                self.market.commit, jid, tx.args["commitment"], int(tx.args.get("usage_wei", 0))
            )
            self.positions[jid] = int(r.event("Committed")["pos"])  # the reveal needs it: no extra call then
            return r.tx_hash
        if tx.kind == "reveal":
            return await self._until_open(lambda: self._reveal_mine(jid, tx.args), "reveal")
        if tx.kind == "settle":
            return await self._settle(jid, tx.args)
        if tx.kind == "refund":
            return await self._finalize(jid)
        if tx.kind == "slash":
            kind = str(tx.args.get("kind", ""))
            if kind in ("dissent", "no_reveal"):
                return "left to the contract's settlement (it slashes dissenting and silent executors)"
            return await self._run(self._slash_equivocation, tx.args["evidence"])
        raise ValueError(f"unknown transaction kind {tx.kind!r}")

    async def _submit_voucher_job(self, tx: SubmitTx) -> str:
        """A voucher job's transactions are coalesced: only the executor's reveal does something now."""
        if tx.kind == "reveal":
            return await self.vouchers.accept(tx.job_id, tx.args)
        if tx.kind == "refund":
            self.vouchers.release(tx.job_id)
            return "voucher job: nothing escrowed to refund"
        if tx.kind == "slash":
            return "voucher job: equivocation is proven against the batch (challengeBatch)"
        return f"voucher job: no {tx.kind} transaction (results settle in batches)"

    def attest(self, job_id: bytes, root: bytes) -> bytes | None:
        """This account's attestation of ``root`` for ``job_id`` (carried in reveals), or None without a key."""
        if self.signer.private_key is None:
            return None
        return self.market.attest(job_id, root).signature

    def _slash_equivocation(self, ev: Any) -> str:
        from ..chain import ChainError
        from .evidence import EvidenceError, attestation_pair

        try:
            a, b = attestation_pair(ev)
        except EvidenceError as e:
            raise ChainError("unsupported", f"equivocation not provable on chain: {e}") from e
        try:
            return self.market.slash_equivocation(a, b).tx_hash
        except ChainError as e:
            if e.reason == "AlreadySlashed":
                return "slash: another node posted the evidence first"
            raise

    def _reveal_mine(self, jid: bytes, args: dict[str, Any]) -> str:
        from ..chain import Opening

        pos = self.positions.pop(jid, None)
        if pos is None:
            pos = self.market.position_of(jid)
        if pos is None:
            raise ValueError("this node has no commitment on chain for the job")
        op = Opening(pos, args["root"], args["salt"], int(args.get("usage_wei", 0)))
        r = self.market.reveal(jid, [op])
        if any(e.name == "JobClosed" for e in r.events):
            self.closed_here.add(jid)  # the settle step that follows needs no read of the job
        return r.tx_hash

    async def _until_open(self, fn: Any, what: str) -> str:
        """Retry ``fn`` while the chain says it is too early (other commitments or the deadline pending)."""
        from ..chain import ChainError

        deadline = time.monotonic() + 120
        while True:
            try:
                return await self._run(fn)
            except ChainError as e:
                text = f"{e.reason} {e}"
                if "JobNotOpen" in text or "AlreadyRevealed" in text:
                    return f"{what}: job already closed on chain"
                if ("RevealNotOpen" in text or "TooEarly" in text) and time.monotonic() < deadline:
                    await trio.sleep(0.5)
                    continue
                raise

    async def _settle(self, jid: bytes, args: dict[str, Any]) -> str:
        from ..chain import Opening

        if jid in self.closed_here or jid in self.closed:
            self.closed_here.discard(jid)
            return "already closed"

        def reveal_rest() -> str:
            info = self.market.job(jid)
            if info.state_name != "open":
                return "already closed"
            ops = []
            for pos, idx in enumerate(info.executors):
                if info.revealed_mask & (1 << pos):
                    continue
                known = self.commits.get(jid, {}).get(pos)
                # its Committed event not polled yet: a guessed usage would revert (BadOpening)
                if known is None:
                    continue
                rv = (args.get("reveals") or {}).get(self._node_id(idx))
                if rv is not None:
                    ops.append(Opening(pos, rv[0], rv[1], known[1]))
            if not ops:
                return "nothing to reveal"
            return self.market.reveal(jid, ops).tx_hash

        out = await self._until_open(reveal_rest, "settle")
        if out.startswith("0x") or "closed" in out:
            return out
        return await self._finalize(jid)

    async def _finalize(self, jid: bytes) -> str:
        """``finalize`` once the deadline (or the reveal window after it) has passed."""
        from ..chain import ChainError

        info = await self._run(self.market.job, jid)
        if info.state_name != "open":
            return "already closed"
        wait_until = info.deadline + (self.reveal_window if info.commits else 0) + 1
        while True:
            now = max(time.time(), await self._run(self.chain.now))
            if now >= wait_until:
                break
            await trio.sleep(min(5.0, max(0.2, wait_until - now)))
        give_up = time.monotonic() + 60
        while True:
            try:
                return (await self._run(self.market.finalize, jid)).tx_hash
            except ChainError as e:
                text = f"{e.reason} {e}"
                if "JobNotOpen" in text:
                    return "already closed"
                if "TooEarly" not in text or time.monotonic() > give_up:
                    raise
            if self.chain.is_dev:
                await self._run(self.chain.mine)  # an idle dev chain's clock moves only with blocks
            await trio.sleep(1.0)

    def _node_id(self, idx: int) -> bytes:
        nid = self.node_ids.get(idx)
        if nid is None:
            nid = self.node_ids[idx] = self.reader.node(idx).node_id
        return nid

    def poll_in(self) -> float | None:
        """Seconds until a poll has work beyond reading events (a voucher batch due or payable), or None."""
        return self.vouchers.poll_in()

    async def poll(self) -> list[ChainUpdate]:
        await self.vouchers.tick()

        def work() -> list[ChainUpdate]:
            out = []
            for ev in self.poller.poll():
                a = ev.args
                if ev.name in BATCH_EVENTS:
                    self.vouchers.on_event(ev.name, a)
                elif ev.name == "NodeRegistered":
                    self.node_ids[int(a["node"])] = bytes(a["nodeId"])
                    self.accounts[bytes(a["nodeId"])] = a["account"]
                    self.account_of_index[int(a["node"])] = a["account"]
                    out.append(
                        ChainUpdate(
                            "staked", node=bytes(a["nodeId"]), data={"eth": bytes.fromhex(a["account"][2:])}
                        )
                    )
                elif ev.name == "UnbondRequested":
                    out.append(ChainUpdate("unstaked", node=self._node_id(int(a["node"]))))
                elif ev.name == "JobPosted":
                    jid = bytes(a["jobId"])
                    self.deadlines[jid] = int(a["deadline"])
                    out.append(
                        ChainUpdate("job_funded", jid, data={"seed": widen_seed(jid, bytes(a["seed"]))})
                    )
                elif ev.name == "Committed":
                    jid = bytes(a["jobId"])
                    self.commits.setdefault(jid, {})[int(a["pos"])] = (int(a["node"]), int(a["usage"]))
                elif ev.name == "JobClosed":
                    jid = bytes(a["jobId"])
                    execs = self.commits.get(jid, {})
                    paid = {
                        self._node_id(execs[p][0]).hex(): int(c)
                        for p, c in enumerate(a["credited"])
                        if p in execs and int(c) > 0
                    }
                    settled = int(a["state"]) == 2
                    self.closed[jid] = {
                        "state": "settled" if settled else "refunded",
                        "paid": paid,
                        "paid_wei": sum(paid.values()),
                        "refunded_wei": int(a["refund"]),
                        "agreeing": int(a["agreeing"]),
                    }
                    kind = "job_settled" if settled else "job_refunded"
                    out.append(ChainUpdate(kind, jid, data={"root": bytes(a["rootPrefix"])}))
                elif ev.name == "Slashed":
                    reason = SLASH_REASONS.get(int(a["reason"]), str(a["reason"]))
                    out.append(
                        ChainUpdate(
                            "slashed",
                            bytes(a["jobId"]),
                            self._node_id(int(a["node"])),
                            data={"reason": reason, "amount": int(a["amount"])},
                        )
                    )
            return out

        return await self._read(work) + self.vouchers.drain()

    async def account(self, node_id: bytes) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            info = self.reader.node_by_id(node_id)
            if info is None:
                return {"registered": False}
            return {
                "registered": True,
                "address": info.account,
                "stake_wei": info.stake,
                "earned_wei": info.earnings,
                "withdrawable_wei": self.reader.withdrawable(info.account),
                "completed": info.completed,
                "failed": info.failed,
                "slashed": info.slashed,
                "open_jobs": info.open_jobs,
            }

        return await self._read(work)

    async def job(self, job_id: bytes) -> dict[str, Any]:
        paid_by_voucher = self.vouchers.job(job_id)
        if paid_by_voucher is not None:
            return paid_by_voucher
        if job_id in self.closed:
            return {**self.closed[job_id], "reason": ""}
        try:
            info = await self._read(self.reader.job, job_id)
        except Exception as e:
            return {"state": "unknown", "error": str(e)}
        return {
            "state": info.state_name,
            "escrow_wei": info.escrow,
            "commits": info.commits,
            "paid": {},
            "paid_wei": 0,
            "refunded_wei": 0,
            "reason": "",
        }

    async def close(self) -> None:
        return None


def open_chain(options: dict[str, Any]) -> ChainLink:
    return ChainLink(options)

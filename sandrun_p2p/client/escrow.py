"""Escrow from a fresh per-job key: fund it from the client's wallet, post the job, claim refunds.

The chain and contract are found from, in order: explicit options (``--blockchain-rpc``, ``--market``),
the environment (``SANDRUN_P2P_RPC``, ``SANDRUN_P2P_MARKET``), or the peer's ``/v1/status``
(``chain_info``: ``{"rpc", "market", "kind", "chain_id"}``), which is all a client given only a control URL has. The funding wallet is a hex private key in
``$SANDRUN_P2P_CLIENT_KEY`` (or the variable named by ``key_env``), an encrypted keystore file, or, on a
development chain only, a funded development account (``$SANDRUN_P2P_CLIENT_DEV_ACCOUNT``, default 9).

Web3 calls block; the SDK runs them in worker threads.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ChainUnavailable, FundingError, NotYet

KEY_ENV = "SANDRUN_P2P_CLIENT_KEY"
DEV_ACCOUNT_ENV = "SANDRUN_P2P_CLIENT_DEV_ACCOUNT"
#: gas limits of the per-job key's transactions (measured: postJob 70.9k, cancelJob 32.5k, claimRefund 39.5k);
#: fixed, so a freshly funded key never needs the node's gas estimate (which some dev chains refuse to run
#: for an account that cannot pay the block gas limit)
GAS_LIMITS = {"postJob": 120_000, "cancelJob": 80_000, "finalize": 300_000, "claimRefund": 80_000}
#: gas the fresh account is funded with on top of the escrow: postJob, then a close and a refund claim
GAS_BUDGET = GAS_LIMITS["postJob"] + GAS_LIMITS["finalize"] + GAS_LIMITS["claimRefund"]


@dataclass(frozen=True)
class ChainOptions:
    rpc: str | None = None
    market: str | None = None
    kind: str | None = None  # "anvil", "devnet", "rpc"... (None: from the peer, else "rpc")
    key_env: str | None = None
    keystore: str | None = None
    addresses_file: str | None = None  # a deployment file written by `deploy-contracts` / `testnet`

    def resolved(self, peer_status: dict[str, Any] | None, peer_dir: Path | None = None) -> ChainOptions:
        """Fill rpc/market/kind from flags, env, a deployment file, the peer's agent.toml, its status."""
        found: dict[str, Any] = {}
        for src in (
            _from_status(peer_status),
            _from_agent_dir(peer_dir),
            _from_addresses(self.addresses_file or os.environ.get("SANDRUN_P2P_CHAIN_FILE")),
        ):
            found.update({k: v for k, v in src.items() if v})
        rpc = self.rpc or os.environ.get("SANDRUN_P2P_RPC") or found.get("rpc")
        market = self.market or os.environ.get("SANDRUN_P2P_MARKET") or found.get("market")
        kind = self.kind or found.get("kind") or "rpc"
        if not rpc or not market:
            raise ChainUnavailable(
                "cannot find the settlement chain: give --blockchain-rpc URL and --market ADDRESS, or "
                "--chain-file (a deployment file from deploy-contracts/testnet), or set SANDRUN_P2P_RPC and "
                "SANDRUN_P2P_MARKET; the peer told nothing about its chain"
            )
        return ChainOptions(rpc, market, kind, self.key_env, self.keystore, self.addresses_file)


def _from_status(status: dict[str, Any] | None) -> dict[str, Any]:
    info = dict((status or {}).get("chain_info") or {})
    return {"rpc": info.get("rpc"), "market": info.get("market"), "kind": info.get("kind")}


def _from_addresses(path: str | Path | None) -> dict[str, Any]:
    if not path:
        return {}
    from ..chain.deployment import Deployment
    from ..chain.errors import ChainError

    try:
        dep = Deployment.load(path)
    except ChainError as e:
        raise ChainUnavailable(str(e)) from None
    return {"rpc": dep.rpc_url, "market": dep.market_address, "kind": dep.kind}


def _from_agent_dir(d: Path | None) -> dict[str, Any]:
    """A local peer's chain, from its ``agent.toml`` ``[chain]`` table and deployment file."""
    if d is None or not (d / "agent.toml").is_file():
        return {}
    import tomllib

    try:
        chain = tomllib.loads((d / "agent.toml").read_text()).get("chain", {})
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    addresses = chain.get("addresses_file") or (d / "sandrun-chain.json")
    out = _from_addresses(addresses) if Path(addresses).is_file() else {}
    out.update({k: chain[k] for k in ("rpc", "kind") if chain.get(k)})
    return out


class Escrow:
    """One chain connection plus the client's funding wallet."""

    def __init__(self, opts: ChainOptions, chain: Any = None) -> None:
        """``chain``: an open ``chain.Chain`` (tests, embedded); otherwise ``opts.rpc`` is connected."""
        from ..chain.chain import Chain
        from ..chain.errors import ChainError

        assert opts.market and (opts.rpc or chain is not None)
        self.opts = opts
        try:
            self.chain = chain if chain is not None else Chain.connect(opts.rpc, kind=opts.kind or "rpc")
        except ChainError as e:
            raise ChainUnavailable(f"settlement chain at {opts.rpc} unreachable: {e}") from None
        self._funder: Any = None

    def info(self) -> dict[str, Any]:
        return {
            "rpc": self.opts.rpc,
            "market": self.opts.market,
            "kind": self.chain.kind,
            "chain_id": self.chain.chain_id,
        }

    def market(self, signer: Any = None) -> Any:
        from ..chain.market import Market

        return Market(self.chain, self.opts.market, signer)

    def funder(self) -> Any:
        """The funding wallet (a ``chain.Signer``)."""
        if self._funder is not None:
            return self._funder
        from ..chain.chain import Signer, load_signer
        from ..chain.errors import ChainError

        env = self.opts.key_env or KEY_ENV
        try:
            if os.environ.get(env) or self.opts.key_env:
                self._funder = load_signer(key_env=env)
            elif self.opts.keystore:
                self._funder = load_signer(keystore=self.opts.keystore)
            elif self.chain.is_dev:
                idx = int(os.environ.get(DEV_ACCOUNT_ENV, "9"))
                self._funder = self.chain.dev_signers()[idx]
            else:
                raise FundingError(
                    f"no funding wallet: set {KEY_ENV} to a hex private key or give --keystore FILE "
                    f"(the {self.chain.kind} chain at {self.opts.rpc} is not a development chain)"
                )
        except ChainError as e:
            raise FundingError(f"cannot load the funding wallet: {e}") from None
        assert isinstance(self._funder, Signer)
        return self._funder

    def gas_allowance(self) -> int:
        fees = self.chain._fees()
        per_gas = int(fees.get("maxFeePerGas") or fees.get("gasPrice") or 10**9)
        return GAS_BUDGET * per_gas

    def now(self) -> int:
        return max(int(time.time()), self.chain.now())

    def post(
        self, escrow_key: str, job_id: bytes, k: int, q: int, deadline: int, price: int
    ) -> dict[str, Any]:
        """Fund the fresh per-job key from the wallet and post the escrow from it."""
        from ..chain.chain import Signer
        from ..chain.errors import ChainError

        funder = self.funder()
        fresh = Signer.from_key(escrow_key)
        need = price + self.gas_allowance()
        try:
            have = self.chain.balance(funder.address)
            if have < need:
                raise FundingError(
                    f"the funding wallet {funder.address} holds {have} wei; this job needs {need} wei "
                    f"({price} escrow + gas). Top it up or lower --payment"
                )
            fund_tx = self.chain.transfer(funder, fresh.address, need)
            res = self._send(self.market(fresh), "postJob", job_id, k, q, deadline, value=price)
        except ChainError as e:
            raise ChainUnavailable(f"escrow failed: {e}") from None
        ev = res.event("JobPosted")
        return {
            "address": fresh.address,
            "funder": funder.address,
            "seed": bytes(ev["seed"]).hex(),
            "txs": [
                {"kind": "fund", "hash": "0x" + bytes(fund_tx["transactionHash"]).hex(), "wei": need},
                {"kind": "postJob", "hash": res.tx_hash, "wei": price, "gas": res.gas_used},
            ],
        }

    def _send(self, m: Any, fn_name: str, *args: Any, value: int = 0) -> Any:
        """One market transaction from the per-job key with a fixed gas limit; its decoded events."""
        from ..chain.market import TxResult

        tx = {"to": m.address, "data": m.calldata(fn_name, *args), "value": value}
        receipt = self.chain.send(m.signer, tx, gas=GAS_LIMITS[fn_name], method=fn_name)
        return TxResult(receipt, m.decode_logs(receipt["logs"]))

    def job(self, job_id: bytes) -> Any:
        from ..chain.errors import ChainError

        try:
            return self.market().job(job_id)
        except ChainError as e:
            raise ChainUnavailable(f"cannot read job {job_id.hex()} on chain: {e}") from None

    def refund(self, job_id: bytes, escrow_key: str, to: str, *, network_failed: bool) -> dict[str, Any]:
        """Close the job if the chain allows it, then send what is left of the escrow to ``to``."""
        from ..chain.chain import Signer
        from ..chain.errors import ChainError
        from ..chain.market import STATE_OPEN

        m = self.market(Signer.from_key(escrow_key))
        ro = self.market()  # reads without a sender: eth-tester charges a call's gas to its sender
        txs: list[dict[str, Any]] = []
        try:
            info = ro.job(job_id)
            if info.state == STATE_OPEN:
                now = self.chain.now()
                if info.commits == 0 and (network_failed or now > info.deadline):
                    txs.append({"kind": "cancelJob", "hash": self._send(m, "cancelJob", job_id).tx_hash})
                elif info.commits == 0:
                    raise NotYet(
                        f"job {job_id.hex()[:16]} is still open on chain and the network has not given up on "
                        f"it; its deadline is in {info.deadline - now} s (refund then, or after it fails)"
                    )
                elif now > info.reveal_deadline:
                    txs.append({"kind": "finalize", "hash": self._send(m, "finalize", job_id).tx_hash})
                else:
                    raise NotYet(
                        f"job {job_id.hex()[:16]} has {info.commits} commitment(s); it settles or can be "
                        f"finalized after {info.reveal_deadline - now} s"
                    )
                info = ro.job(job_id)
            if info.escrow == 0:
                return {"refunded_wei": 0, "txs": txs, "state": info.state_name}
            res = self._send(m, "claimRefund", job_id, to)
            amount = int(res.event("RefundClaimed")["amount"])
            txs.append({"kind": "claimRefund", "hash": res.tx_hash, "wei": amount})
            return {"refunded_wei": amount, "txs": txs, "state": info.state_name}
        except ChainError as e:
            raise ChainUnavailable(f"refund of {job_id.hex()[:16]} failed: {e}") from None

    def closed(self, job_id: bytes) -> dict[str, Any]:
        """What the chain recorded when the job closed: state, settled root prefix, credit per executor, refunds."""
        from ..chain.errors import ChainError

        m = self.market()
        try:
            ev = m.contract.events
            closed = ev.JobClosed.get_logs(from_block=0, argument_filters={"jobId": job_id})
            refunds = ev.RefundClaimed.get_logs(from_block=0, argument_filters={"jobId": job_id})
            out: dict[str, Any] = {"closed": False, "payouts": [], "refunds": []}
            out["refunds"] = [{"to": r["args"]["to"], "wei": int(r["args"]["amount"])} for r in refunds]
            if closed:
                a = closed[-1]["args"]
                executors = m.job(job_id).executors
                for pos, wei in enumerate(a["credited"]):
                    idx = executors[pos] if pos < len(executors) else 0
                    node_id = bytes(m.contract.functions.nodeIdOf(idx).call()).hex() if idx else "?"
                    out["payouts"].append({"node": node_id, "paid_wei": int(wei)})
                out.update(
                    {
                        "closed": True,
                        "state": {2: "settled", 3: "failed"}.get(int(a["state"]), str(a["state"])),
                        "root_prefix": bytes(a["rootPrefix"]).hex() if int(a["agreeing"]) else "",
                        "agreeing": int(a["agreeing"]),
                        "paid_wei": sum(int(w) for w in a["credited"]),
                        "refund_wei": int(a["refund"]),
                    }
                )
            return out
        except ChainError as e:
            raise ChainUnavailable(f"cannot read the chain's record of {job_id.hex()[:16]}: {e}") from None

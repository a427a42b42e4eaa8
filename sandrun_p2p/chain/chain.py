"""A connection to one chain and the accounts that transact on it.

The same code runs on three kinds of chain:

* ``embedded``: ``EthereumTesterProvider`` (py-evm in this process, no binaries): the default;
* ``anvil`` / ``devnet``: a local JSON-RPC node on loopback (``anvil.py``, ``devnet.py``) that several processes share;
* ``rpc``: any JSON-RPC URL (e.g. an Arbitrum endpoint) with a key from a keystore file or an environment variable.

Transactions: a local nonce counter per account (resynchronised after a rejected nonce), gas estimated with a
margin (a revert during estimation is raised before anything is sent) plus, where the caller knows one, the gas of
a state change that may land between the estimate and inclusion (``extra_gas``), EIP-1559 fees, receipts polled every few
milliseconds, reverts turned into ``ChainError`` with the contract's error name and arguments. Only idempotent
steps are retried: re-sending the same signed bytes, and reads.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_utils import to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import TimeExhausted
from web3.providers import EthereumTesterProvider

from .errors import ChainError, RevertDecoder, revert_data_from_exception
from .rpc_transport import provider_for

#: Well-known development mnemonic of anvil (and hardhat): its first accounts are funded on a fresh anvil.
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"

#: A read is retried this many times on connection errors (reads are idempotent).
READ_RETRIES = 3


@dataclass(frozen=True)
class Signer:
    """An account that sends transactions: signed here with ``private_key``, or by the node when it is None
    (an unlocked development account)."""

    address: str
    private_key: bytes | None = None

    @classmethod
    def from_key(cls, key: bytes | str) -> Signer:
        if isinstance(key, str):
            key = bytes.fromhex(key.removeprefix("0x").strip())
        if len(key) != 32:
            raise ValueError("a private key is 32 bytes")
        return cls(Account.from_key(key).address, bytes(key))

    @classmethod
    def generate(cls) -> Signer:
        return cls.from_key(secrets.token_bytes(32))

    def __repr__(self) -> str:  # never print the key
        return f"Signer({self.address}{'' if self.private_key else ', unlocked'})"


def load_signer(
    *, key_env: str | None = None, keystore: str | None = None, password_env: str | None = None
) -> Signer:
    """A signer from an environment variable holding a hex private key, or from an encrypted keystore file
    (password from ``password_env``, default ``SANDRUN_KEYSTORE_PASSWORD``, or asked on the terminal)."""
    if key_env:
        value = os.environ.get(key_env)
        if not value:
            raise ChainError("no-key", f"environment variable {key_env} is not set")
        try:
            return Signer.from_key(value)
        except ValueError as e:
            raise ChainError("bad-key", f"{key_env} does not hold a 32-byte hex private key") from e
    if keystore:
        with open(keystore, encoding="utf-8") as f:
            blob = json.load(f)
        pw_var = password_env or "SANDRUN_KEYSTORE_PASSWORD"
        password = os.environ.get(pw_var)
        if password is None:
            import getpass
            import sys

            if not sys.stdin.isatty():
                raise ChainError("no-password", f"set {pw_var} to the keystore password")
            password = getpass.getpass(f"password for {keystore}: ")
        try:
            key = Account.decrypt(blob, password)
        except ValueError as e:
            raise ChainError("bad-password", f"cannot decrypt {keystore}") from e
        return Signer.from_key(bytes(key))
    raise ChainError("no-key", "give --key-env VAR or --keystore FILE")


#: web3's default middleware this client does without: ENS names (never used), a gas price strategy and a gas
#: estimate for transactions without one (:meth:`Chain.send` always sets gas and fees).
UNUSED_MIDDLEWARE = ("ens_name_to_address", "gas_price_strategy", "gas_estimate")


class Chain:
    """One chain connection: reads, transactions, and (on development chains) time travel and snapshots."""

    def __init__(
        self,
        w3: Web3,
        kind: str,
        *,
        url: str | None = None,
        poll_latency: float = 0.005,
        receipt_timeout: float = 120.0,
        gas_margin: float = 1.2,
        decoder: RevertDecoder | None = None,
        fee_ttl_s: float = 1.0,
    ) -> None:
        self.w3 = w3
        self.kind = kind
        self.url = url
        self.poll_latency = poll_latency
        self.receipt_timeout = receipt_timeout
        self.gas_margin = gas_margin
        self.fee_ttl_s = fee_ttl_s
        self._fee_cache: tuple[float, dict] | None = None
        self.decoder = decoder or RevertDecoder()
        self._nonces: dict[str, int] = {}
        self._lock = threading.Lock()
        self._chain_id: int | None = None
        self._dev_signers: list[Signer] | None = None

    # ---------------------------------------------------------------- construction

    @classmethod
    def embedded(cls, **kw: Any) -> Chain:
        """A fresh in-process chain (py-evm through eth-tester) with ten funded accounts."""
        return cls(Web3(EthereumTesterProvider()), "embedded", **kw)

    @classmethod
    def connect(cls, url: str, kind: str = "rpc", **kw: Any) -> Chain:
        """A chain behind a JSON-RPC URL (http(s)://...)."""
        # eth_chainId is cached: web3's validation middleware asks for it before every eth_call and estimateGas
        # (a keep-alive http.client transport: ~5x less CPU per call than web3's requests-based one)
        w3 = Web3(
            provider_for(url, timeout=30, cache_allowed_requests=True, cacheable_requests={"eth_chainId"})
        )
        for name in UNUSED_MIDDLEWARE:  # each walks every request; this client never needs them
            w3.middleware_onion.remove(name)
        chain = cls(w3, kind, url=url, **kw)
        try:
            chain.chain_id  # noqa: B018 - fail early when nothing answers
        except Exception as e:
            raise ChainError("connection", f"no JSON-RPC node answers at {url}: {e}") from e
        return chain

    @property
    def is_dev(self) -> bool:
        return self.kind in ("embedded", "anvil", "devnet")

    @property
    def tester(self) -> Any:
        """The eth-tester instance of an embedded chain."""
        if not isinstance(self.w3.provider, EthereumTesterProvider):
            raise ChainError("not-embedded", "only the embedded chain has an eth-tester instance")
        return self.w3.provider.ethereum_tester

    # ---------------------------------------------------------------- reads

    def _read(self, fn: Callable[[], Any]) -> Any:
        for attempt in range(READ_RETRIES):
            try:
                return fn()
            except (ConnectionError, TimeoutError, OSError) as e:
                if attempt == READ_RETRIES - 1:
                    raise ChainError("connection", str(e)) from e
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = self._read(lambda: self.w3.eth.chain_id)
        return self._chain_id

    def block_number(self) -> int:
        return self._read(lambda: self.w3.eth.block_number)

    def now(self) -> int:
        """Timestamp of the latest block: deadlines are compared with the chain's clock, not this machine's."""
        return int(self._read(lambda: self.w3.eth.get_block("latest")["timestamp"]))

    def balance(self, address: str) -> int:
        return int(self._read(lambda: self.w3.eth.get_balance(to_checksum_address(address))))

    def call(self, contract: Any, fn_name: str, *args: Any, sender: str | None = None) -> Any:
        fn = getattr(contract.functions, fn_name)(*args)
        params = {"from": sender} if sender else {}
        try:
            return self._read(lambda: fn.call(params))
        except ChainError:
            raise
        except Exception as e:
            raise self._revert_error(
                e, fn_name, {"to": contract.address, "data": fn._encode_transaction_data()}
            ) from e

    # ---------------------------------------------------------------- development accounts, time, snapshots

    def dev_signers(self) -> list[Signer]:
        """Funded development accounts: eth-tester's keys 1..10, anvil's mnemonic, or the node's unlocked ones."""
        if self._dev_signers is None:
            if self.kind in ("embedded", "devnet"):
                self._dev_signers = [Signer.from_key(i.to_bytes(32, "big")) for i in range(1, 11)]
            elif self.kind == "anvil":
                Account.enable_unaudited_hdwallet_features()
                self._dev_signers = [
                    Signer.from_key(
                        bytes(Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}").key)
                    )
                    for i in range(10)
                ]
            else:
                self._dev_signers = [
                    Signer(to_checksum_address(a)) for a in self._read(lambda: self.w3.eth.accounts)
                ]
        return list(self._dev_signers)

    def new_account(self, fund: int = 0, funder: Signer | None = None) -> Signer:
        """A fresh key, funded with ``fund`` wei from ``funder`` (default: the first development account)."""
        s = Signer.generate()
        if fund:
            self.transfer(funder or self.dev_signers()[0], s.address, fund)
        return s

    def transfer(self, signer: Signer, to: str, value: int) -> dict:
        return self.send(
            signer, {"to": to_checksum_address(to), "value": value, "data": b""}, method="transfer"
        )

    def _rpc(self, method: str, params: list) -> Any:
        try:
            return self._raw(method, params)
        except RPCError as e:
            raise ChainError("rpc", f"{method}: {e.rpc_response['error']}") from None

    def advance(self, seconds: int) -> int:
        """Move the chain clock forward (development chains) and mine a block; returns the new timestamp."""
        if not self.is_dev:
            raise ChainError("not-dev", "time travel needs a development chain")
        if self.kind == "embedded":
            target = self.tester.get_block_by_number("pending")["timestamp"] + int(seconds)
            self.tester.time_travel(target)
        else:
            self._rpc("evm_increaseTime", [int(seconds)])
            self._rpc("evm_mine", [])
        return self.now()

    def advance_to(self, timestamp: int) -> None:
        """Make the next block (the next transaction's) have ``timestamp`` (development chains)."""
        if not self.is_dev:
            raise ChainError("not-dev", "time travel needs a development chain")
        if self.kind == "embedded":
            self.tester.time_travel(int(timestamp))
        else:
            self._rpc("evm_setNextBlockTimestamp", [int(timestamp)])

    def mine(self, blocks: int = 1) -> None:
        for _ in range(blocks):
            self._rpc("evm_mine", [])

    def snapshot(self) -> Any:
        if not self.is_dev:
            raise ChainError("not-dev", "snapshots need a development chain")
        return self._rpc("evm_snapshot", [])

    def revert(self, snapshot_id: Any) -> None:
        ok = self._rpc("evm_revert", [snapshot_id])
        if ok is False:
            raise ChainError("rpc", f"evm_revert({snapshot_id}) refused")
        with self._lock:
            self._nonces.clear()
        self._fee_cache = None

    # ---------------------------------------------------------------- transactions

    def _next_nonce(self, address: str) -> int:
        if address not in self._nonces:
            block = "latest" if self.kind == "embedded" else "pending"
            self._nonces[address] = self._read(lambda: self.w3.eth.get_transaction_count(address, block))
        n = self._nonces[address]
        self._nonces[address] = n + 1
        return n

    def _fees(self) -> dict:
        """Fee fields for a transaction, reused for ``fee_ttl_s`` (two reads per transaction otherwise). A cached
        ``maxFeePerGas`` of twice the base fee stays valid: the base fee rises at most 12.5% a block."""
        hit = self._fee_cache
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.fee_ttl_s:
            return dict(hit[1])
        fees = self._read_fees()
        self._fee_cache = (now, fees)
        return dict(fees)

    def _read_fees(self) -> dict:
        block = self._read(lambda: self.w3.eth.get_block("latest"))
        base = block.get("baseFeePerGas")
        if base is None:
            return {"gasPrice": self._read(lambda: self.w3.eth.gas_price)}
        try:
            tip = self._read(lambda: self.w3.eth.max_priority_fee)
        except Exception:
            tip = 10**9
        tip = min(tip, 2 * 10**9) if self.kind != "rpc" else tip
        return {"maxPriorityFeePerGas": tip, "maxFeePerGas": 2 * base + tip}

    def estimate(self, tx: dict, method: str | None = None) -> int:
        try:
            if self._raw_rpc:
                return int(self._read(lambda: self._raw("eth_estimateGas", [_rpc_tx(tx)])), 16)
            return int(self._read(lambda: self.w3.eth.estimate_gas(tx)))
        except ChainError:
            raise
        except Exception as e:
            raise self._revert_error(e, method, tx) from e

    @property
    def _raw_rpc(self) -> bool:
        """Whether a transaction's calls (estimate, send, receipt) go out as plain JSON-RPC requests rather than
        through web3's method machinery: on every chain behind a URL. web3's request and result formatters,
        validation middleware and ABI mapping cost ~2.5 ms of CPU per transaction against anvil (post_job 4.5 ->
        1.8 ms); the requests and their answers are the same. The embedded chain's eth-tester provider takes only
        web3-formatted requests."""
        return not isinstance(self.w3.provider, EthereumTesterProvider)

    def _raw(self, method: str, params: list) -> Any:
        """One JSON-RPC request through the provider's transport; an error answer raises :class:`RPCError`."""
        resp = self.w3.provider.make_request(method, params)
        if resp.get("error") is not None:
            raise RPCError(resp)
        return resp.get("result")

    def send(
        self,
        signer: Signer,
        tx: dict,
        *,
        gas: int | None = None,
        extra_gas: int = 0,
        method: str | None = None,
    ) -> dict:
        """Send ``tx`` (to, data, value) from ``signer`` and wait for its receipt; raise ChainError on a revert.

        Without ``gas``, the limit is the estimate times ``gas_margin`` plus 10,000 plus ``extra_gas``: the
        estimate runs on the latest block, so a transaction that another one, mined first, makes costlier (a
        reveal that becomes the settling one) needs that headroom. Unused gas is not charged."""
        tx = {k: v for k, v in tx.items() if v is not None}
        tx["from"] = signer.address
        tx.setdefault("value", 0)
        tx["chainId"] = self.chain_id
        if gas is None:
            est = self.estimate(dict(tx), method)
            gas = int(est * self.gas_margin) + 10_000 + extra_gas
        tx["gas"] = gas
        tx.update(self._fees())
        with self._lock:
            tx["nonce"] = self._next_nonce(signer.address)
            try:
                tx_hash = self._submit(signer, tx)
            except ChainError as e:
                if e.reason == "nonce":
                    self._nonces.pop(signer.address, None)  # resynchronise on the next send
                else:
                    # nothing was accepted: hand the nonce back
                    self._nonces.pop(signer.address, None)
                raise
        receipt = self.wait(tx_hash, method)
        if receipt["status"] != 1:
            raise self._replay_failure(tx, receipt, method)
        return receipt

    def _submit(self, signer: Signer, tx: dict) -> str:
        if signer.private_key is not None:
            raw = Account.sign_transaction(tx, signer.private_key).raw_transaction
            raw_hex = "0x" + bytes(raw).hex()

            def sender() -> Any:
                if self._raw_rpc:
                    return bytes.fromhex(self._raw("eth_sendRawTransaction", [raw_hex])[2:])
                return self.w3.eth.send_raw_transaction(raw)

        else:

            def sender() -> Any:
                return self.w3.eth.send_transaction(tx)

        last: Exception | None = None
        for attempt in range(READ_RETRIES):  # the same signed bytes: idempotent
            try:
                return "0x" + bytes(sender()).hex()
            except (ConnectionError, TimeoutError, OSError) as e:
                last = e
                time.sleep(0.05 * (attempt + 1))
            except Exception as e:
                text = str(e).lower()
                if "already known" in text or "already imported" in text:
                    return "0x" + bytes(Web3.keccak(raw)).hex() if signer.private_key else ""
                if "nonce" in text:
                    raise ChainError("nonce", str(e)) from e
                raise self._revert_error(e, None, tx) from e
        raise ChainError("connection", f"cannot send transaction: {last}")

    def wait(self, tx_hash: str, method: str | None = None) -> dict:
        if self._raw_rpc:
            deadline = time.monotonic() + self.receipt_timeout
            while True:
                try:
                    raw = self._read(lambda: self._raw("eth_getTransactionReceipt", [tx_hash]))
                except RPCError as e:
                    raise ChainError(
                        "rpc", f"eth_getTransactionReceipt: {e}", method=method, tx_hash=tx_hash
                    ) from e
                if raw is not None:
                    return _receipt(raw)
                if time.monotonic() >= deadline:
                    raise ChainError(
                        "timeout", f"no receipt after {self.receipt_timeout}s", method=method, tx_hash=tx_hash
                    )
                time.sleep(self.poll_latency)
        try:
            return self.w3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=self.receipt_timeout, poll_latency=self.poll_latency
            )
        except TimeExhausted as e:
            raise ChainError(
                "timeout", f"no receipt after {self.receipt_timeout}s", method=method, tx_hash=tx_hash
            ) from e

    def deploy(self, signer: Signer, artifact: dict, *args: Any) -> tuple[str, dict]:
        """Deploy ``artifact`` with constructor ``args``; returns (address, receipt)."""
        factory = self.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        data = factory.constructor(*args).data_in_transaction
        receipt = self.send(signer, {"data": data}, method=f"deploy {artifact.get('contractName', '')}")
        return to_checksum_address(receipt["contractAddress"]), receipt

    # ---------------------------------------------------------------- revert reasons

    def _revert_error(self, exc: BaseException, method: str | None, tx: dict | None) -> ChainError:
        data = revert_data_from_exception(exc)
        if (
            isinstance(self.w3.provider, EthereumTesterProvider)
            and tx is not None
            and not isinstance(data, bytes)
        ):
            # web3's eth-tester glue decodes revert data as a string and loses custom errors: replay it raw
            data = self._tester_revert_data(tx) or data
        if isinstance(data, bytes):
            return self.decoder.decode(data, method)
        if isinstance(data, str) and data:
            return ChainError("Error", data, method=method)
        text = str(exc)
        if "insufficient funds" in text.lower():
            return ChainError("insufficient-funds", text, method=method)
        return ChainError("reverted", text or type(exc).__name__, method=method)

    def _tester_revert_data(self, tx: dict, block: Any = "latest") -> bytes | None:
        from eth_tester.exceptions import TransactionFailed

        call = {
            "from": tx.get("from") or self.dev_signers()[0].address,
            "data": _hexdata(tx.get("data", b"")),
            "value": int(tx.get("value", 0)),
            "gas": int(tx.get("gas", 30_000_000)),
        }
        if tx.get("to"):
            call["to"] = tx["to"]
        try:
            self.tester.call(call, block)
        except TransactionFailed as e:
            data = revert_data_from_exception(e)
            return data if isinstance(data, bytes) else None
        except Exception:
            return None
        return None

    def _replay_failure(self, tx: dict, receipt: dict, method: str | None) -> ChainError:
        tx_hash = "0x" + bytes(receipt["transactionHash"]).hex()
        call = {k: tx[k] for k in ("from", "to", "data", "value") if k in tx}
        block = receipt["blockNumber"] - 1
        err: ChainError
        try:
            if isinstance(self.w3.provider, EthereumTesterProvider):
                data = self._tester_revert_data(dict(call, gas=tx["gas"]), block)
                err = self.decoder.decode(data or b"", method)
            else:
                self.w3.eth.call(dict(call, gas=tx["gas"]), block)
                err = ChainError(
                    "reverted", f"out of gas? used {receipt['gasUsed']} of {tx['gas']}", method=method
                )
        except Exception as e:
            err = self._revert_error(e, method, None)
        err.tx_hash = tx_hash
        return err


def _hexdata(data: Any) -> str:
    if isinstance(data, bytes | bytearray):
        return "0x" + bytes(data).hex()
    return data or "0x"


class RPCError(Exception):
    """A JSON-RPC error answer; ``rpc_response`` is the whole answer (its ``error.data`` is a revert's data, which
    :func:`~.errors.revert_data_from_exception` reads as from web3's own ``Web3RPCError``)."""

    def __init__(self, resp: dict) -> None:
        err = resp.get("error") or {}
        super().__init__(err.get("message", str(err)) if isinstance(err, dict) else str(err))
        self.rpc_response = resp


def _rpc_tx(tx: dict) -> dict:
    """A transaction dict as JSON-RPC takes it: quantities as hex, data as 0x-hex."""
    out: dict[str, Any] = {}
    for k, v in tx.items():
        if k == "data":
            out[k] = _hexdata(v)
        elif isinstance(v, int) and not isinstance(v, bool):
            out[k] = hex(v)
        else:
            out[k] = v
    return out


#: Receipt fields that are quantities (hex on the wire, int in the receipt web3 gives).
_RECEIPT_INTS = (
    "blockNumber",
    "cumulativeGasUsed",
    "effectiveGasPrice",
    "gasUsed",
    "status",
    "transactionIndex",
    "type",
    "blobGasUsed",
    "blobGasPrice",
)


def _receipt(raw: dict) -> dict:
    """A raw ``eth_getTransactionReceipt`` result with web3's types for the fields this package reads (quantities
    as int, hashes as bytes, addresses checksummed); logs stay raw, which :meth:`Market.decode_logs` reads."""
    out = dict(raw)
    for k in _RECEIPT_INTS:
        if isinstance(out.get(k), str):
            out[k] = int(out[k], 16)
    for k in ("transactionHash", "blockHash"):
        if isinstance(out.get(k), str):
            out[k] = HexBytes(out[k])
    for k in ("contractAddress", "from", "to"):
        if isinstance(out.get(k), str):  # (a creation's "to" is null, or "" from some nodes)
            out[k] = to_checksum_address(out[k]) if out[k] not in ("", "0x") else None
    return out

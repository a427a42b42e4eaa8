"""What the agent needs from the settlement chain, and how it finds the implementation.

The agent talks to the chain only through :class:`ChainPort` (a handful of coroutines), so the runtime
does not depend on web3's API. :func:`load_chain` builds the port named by the configuration: the
default is :mod:`sandrun_p2p.agent.chainlink` (the project's chain client); ``chain_factory =
"module:callable"`` in the config file selects another implementation (tests use an in-repo fake).
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio

from ..protocol.events import ChainUpdate, SubmitTx
from ..protocol.jobspec import JobSpec

DEFAULT_CHAIN_FACTORY = "sandrun_p2p.agent.chainlink:open_chain"


class NotFunded(Exception):
    """A job announced for a client is not escrowed on chain as its spec says (the message names what differs)."""


async def fund_each(
    fund_job: Callable[[JobSpec, bytes], Awaitable[bytes]], specs: list[JobSpec], origin: bytes
) -> list[bytes | BaseException]:
    """``fund_job`` for every spec at once (a :meth:`ChainPort.fund_jobs` without a batch transaction); per
    spec its seed or the exception it raised."""
    out: list[bytes | BaseException] = [RuntimeError("not funded")] * len(specs)

    async def one(i: int) -> None:
        try:
            out[i] = await fund_job(specs[i], origin)
        except Exception as e:
            out[i] = e

    async with trio.open_nursery() as nursery:
        for i in range(len(specs)):
            nursery.start_soon(one, i)
    return out


class ChainPort(Protocol):
    """The settlement chain as the agent uses it. Every call may raise; the agent logs and carries on."""

    #: "embedded", "anvil", "rpc" or another short name shown by ``status``
    kind: str

    async def join(self, node_id: bytes) -> bytes:
        """Register and stake this node (idempotent); return its Ethereum address (20 bytes)."""
        ...

    async def fund_job(self, spec: JobSpec, origin: bytes) -> bytes:
        """Escrow a job's payment; return the 32-byte ranking seed the chain fixed for it."""
        ...

    async def fund_jobs(self, specs: list[JobSpec], origin: bytes) -> list[bytes | BaseException]:
        """:meth:`fund_job` for several jobs, in as few transactions as the chain allows; per job its seed or the
        exception that kept it from being funded (never raises for one job's failure)."""
        ...

    async def check_job(self, spec: JobSpec) -> bytes:
        """For a job someone else escrowed: check it is open on chain with escrow >= ``spec.payment_wei`` and the
        spec's k, q and deadline; return the 32-byte ranking seed the chain fixed. :class:`NotFunded` otherwise."""
        ...

    def info(self) -> dict[str, Any]:
        """How a client reaches this chain: ``{"rpc", "market", "kind", "chain_id"}`` (values may be None)."""
        ...

    async def submit(self, node_id: bytes, tx: SubmitTx) -> str:
        """Send one protocol transaction (commit, reveal, settle, refund, slash); return a short receipt."""
        ...

    async def poll(self) -> list[ChainUpdate]:
        """Chain events since the previous call (the first call returns everything relevant so far)."""
        ...

    async def account(self, node_id: bytes) -> dict[str, Any]:
        """This node's stake, earnings and withdrawable balance, in wei."""
        ...

    async def job(self, job_id: bytes) -> dict[str, Any]:
        """What the chain says about one job (state, paid and refunded amounts, reason)."""
        ...

    async def close(self) -> None: ...

    # Optional (an adaptor without them works, without that feature): ``poll_in()``, seconds until a poll has
    # work beyond reading events (None: nothing waits); ``attach(journal, history_s)``, keep a checkpoint of what
    # ``poll`` derived in the agent's journal and resume from it (then it attaches its ``vouchers`` itself);
    # ``vouchers``, the voucher payment mode
    # (:class:`~sandrun_p2p.agent.voucherlink.VoucherLink`: ``attach(journal)``, ``ended(job_id)``,
    # ``issue(job_id, executor, ...)``, and the ``fetcher`` and ``on_error`` the agent sets).


ChainFactory = Callable[[dict[str, Any]], ChainPort]


def load_factory(spec: str) -> Callable[..., Any]:
    """Resolve ``"package.module:callable"``; ValueError with the reason when it cannot be loaded."""
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise ValueError(f"factory {spec!r} must look like 'package.module:callable'")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise ValueError(f"cannot import {mod_name!r} for factory {spec!r}: {e}") from None
    fn = getattr(mod, attr, None)
    if not callable(fn):
        raise ValueError(f"{spec!r}: {mod_name} has no callable {attr!r}")
    return fn


def load_chain(factory: str, options: dict[str, Any]) -> ChainPort:
    return load_factory(factory)(options)

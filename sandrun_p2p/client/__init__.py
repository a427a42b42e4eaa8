"""Client SDK: submit jobs through any peer, anonymously, and pay only for verified results.

Async (trio)::

    from sandrun_p2p.client import Client
    async with Client(peer=None) as c:          # None: the local agent; or an agent data dir, or a URL
        rec = await c.submit("job/", "job.json", redundancy=2)
        async for update in c.watch(rec.job_id):
            print(update.line())
        await c.result(rec.job_id, "out/")
        await c.refund(rec.job_id)

Synchronous (scripts): ``SyncClient`` has the same methods, each a blocking call (``watch`` takes a
callback). ``quote(manifest, redundancy)`` is pure. ``list_client_jobs()`` lists this machine's jobs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from .errors import (
    BadJob,
    ChainUnavailable,
    ClientError,
    DeadlinePassed,
    FundingError,
    InsufficientPayment,
    NoEligibleNode,
    NotYet,
    PeerUnavailable,
    ResultRejected,
    UnknownJob,
)
from .escrow import ChainOptions
from .records import JobRecord, RecordStore, client_home
from .sdk import Client, Update, eth_to_wei, list_client_jobs, load_manifest, quote, usd_to_wei

__all__ = [
    "BadJob",
    "ChainOptions",
    "ChainUnavailable",
    "Client",
    "ClientError",
    "DeadlinePassed",
    "FundingError",
    "InsufficientPayment",
    "JobRecord",
    "NoEligibleNode",
    "NotYet",
    "PeerUnavailable",
    "RecordStore",
    "ResultRejected",
    "SyncClient",
    "UnknownJob",
    "Update",
    "client_home",
    "eth_to_wei",
    "list_client_jobs",
    "load_manifest",
    "quote",
    "usd_to_wei",
]


class SyncClient:
    """Blocking wrapper: every call opens a client, runs one operation under ``trio.run`` and closes it."""

    def __init__(self, peer: str | None = None, **kw: Any) -> None:
        self.peer, self.kw = peer, kw

    def _run(self, fn: Callable[[Client], Any]) -> Any:
        async def go() -> Any:
            async with Client(self.peer, **self.kw) as c:
                return await fn(c)

        return trio.run(go)

    def quote(self, manifest: Any, redundancy: int = 1) -> Any:
        return quote(manifest, redundancy, self.kw.get("usd_per_eth", 3000))

    def submit(
        self, code: str | Path, manifest: Any, payment_wei: int | None = None, redundancy: int = 1, **kw: Any
    ) -> JobRecord:
        return self._run(lambda c: c.submit(code, manifest, payment_wei, redundancy, **kw))

    def watch(self, job_id: str, on_update: Callable[[Update], None] | None = None, **kw: Any) -> Update:
        return self._run(lambda c: c.wait(job_id, on_update=on_update, **kw))

    def result(self, job_id: str, dest: str | Path, **kw: Any) -> Any:
        return self._run(lambda c: c.result(job_id, dest, **kw))

    def refund(self, job_id: str) -> dict[str, Any]:
        return self._run(lambda c: c.refund(job_id))

    def money(self, job_id: str, **kw: Any) -> dict[str, Any]:
        return self._run(lambda c: c.money(job_id, **kw))

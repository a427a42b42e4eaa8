"""Typed client errors. Every message says what went wrong and what to do about it."""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """Base class of everything the client SDK raises on purpose."""


class BadJob(ClientError):
    """The code or manifest cannot be submitted (rejected before any money moves)."""


class InsufficientPayment(ClientError):
    """The offered payment is below the quote for this manifest and redundancy (no money moved)."""

    def __init__(self, offered_wei: int, quote: Any) -> None:
        self.offered_wei = offered_wei
        self.quote = quote
        super().__init__(
            f"payment {fmt_eth(offered_wei)} is below the quote {fmt_eth(quote.wei)} "
            f"({quote.usd_str()}: {_per(quote)}); pay at least {fmt_eth(quote.wei)} "
            f"(--payment {quote.wei / 10**18:.18f}) or lower the timeout/memory/redundancy"
        )


class NoEligibleNode(ClientError):
    """No node of the network can run the job (e.g. it needs a GPU nobody has)."""

    def __init__(self, reason: str, job_id: str = "") -> None:
        self.reason = reason
        self.job_id = job_id
        hint = f"; `sandrun-p2p submit --refund {job_id}` returns the escrow" if job_id else ""
        super().__init__(f"no eligible node: {reason}{hint}")


class DeadlinePassed(ClientError):
    """The job's deadline passed without a verified result."""


class NotYet(ClientError):
    """Asked too early (e.g. a refund before the deadline, a result before acceptance)."""


class PeerUnavailable(ClientError):
    """The peer's control API cannot be reached or refused the request."""


class ChainUnavailable(ClientError):
    """The settlement chain cannot be reached, or it refused a transaction."""


class FundingError(ChainUnavailable):
    """The funding wallet is missing or cannot pay for the escrow."""


class UnknownJob(ClientError):
    """No local record of this job (only the machine that submitted a job can fetch or refund it)."""


class ResultRejected(ClientError):
    """Fetched outputs do not match the accepted trace root: they were altered; nothing was written."""


def fmt_eth(wei: int) -> str:
    """Wei as a short ETH amount: ``0.0123 ETH``."""
    s = f"{wei / 10**18:.8f}".rstrip("0").rstrip(".")
    return f"{s} ETH"


def _per(quote: Any) -> str:
    gpu = f" on {quote.gpu_class}" if getattr(quote, "gpu_class", None) else ""
    return f"${float(quote.per_execution_usd):.6f} per execution{gpu}"

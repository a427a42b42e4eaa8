"""Settlement over an EVM chain: the SandrunMarket contract and its client.

Only money touches the chain: node stake and the Ed25519 id binding, job escrow, commit/reveal settlement with
quorum payout, refunds, slashing with evidence, and a batched voucher path for micropayments. See
``market.Market`` for the client, ``chain.Chain`` for connections (embedded, anvil/devnet, any JSON-RPC URL),
``crypto`` for attestations, vouchers and results trees, ``deployment.Deployment`` for the addresses file.
"""

from .chain import Chain, Signer, load_signer
from .crypto import (
    Attestation,
    ResultsTree,
    Voucher,
    commitment,
    is_equivocation,
    sign_attestation,
    sign_voucher,
    verify_attestation,
)
from .deployment import Deployment, deploy
from .errors import ChainError
from .events import EventPoller
from .market import Event, JobInfo, Market, MarketParams, NodeInfo, Opening, TxResult

__all__ = [
    "Attestation",
    "Chain",
    "ChainError",
    "Deployment",
    "Event",
    "EventPoller",
    "JobInfo",
    "Market",
    "MarketParams",
    "NodeInfo",
    "Opening",
    "ResultsTree",
    "Signer",
    "TxResult",
    "Voucher",
    "commitment",
    "deploy",
    "is_equivocation",
    "load_signer",
    "sign_attestation",
    "sign_voucher",
    "verify_attestation",
]

"""The addresses file: where the contracts of a network live, written by deploy and read by agents and clients.

JSON, for example::

    {"version": 1, "chain_id": 31337, "rpc_url": "http://127.0.0.1:8545", "kind": "anvil",
     "contracts": {"SandrunMarket": "0x..."}, "deploy_block": 1, "params": {"min_stake": ...}}
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .chain import Chain, Signer
from .errors import ChainError
from .market import CONTRACT, Market, MarketParams

FORMAT_VERSION = 1
DEFAULT_PATH = "sandrun-chain.json"


@dataclass
class Deployment:
    chain_id: int
    contracts: dict[str, str]
    deploy_block: int
    rpc_url: str | None = None
    kind: str = "rpc"
    params: dict[str, int] = field(default_factory=dict)

    @property
    def market_address(self) -> str:
        return self.contracts[CONTRACT]

    def to_json(self) -> dict[str, Any]:
        return {"version": FORMAT_VERSION, **asdict(self)}

    def save(self, path: str | os.PathLike) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, p)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike) -> Deployment:
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise ChainError(
                "no-deployment", f"{path} does not exist: run `sandrun-p2p deploy-contracts`"
            ) from e
        if d.get("version") != FORMAT_VERSION:
            raise ChainError("bad-deployment", f"{path}: unknown format version {d.get('version')}")
        return cls(
            chain_id=int(d["chain_id"]),
            contracts=dict(d["contracts"]),
            deploy_block=int(d["deploy_block"]),
            rpc_url=d.get("rpc_url"),
            kind=d.get("kind", "rpc"),
            params={k: int(v) for k, v in d.get("params", {}).items()},
        )

    def market(self, chain: Chain, signer: Signer | None = None) -> Market:
        """The market on ``chain`` (checked to be the chain this file describes)."""
        if chain.chain_id != self.chain_id:
            raise ChainError(
                "wrong-chain", f"the deployment is on chain {self.chain_id}, connected to {chain.chain_id}"
            )
        return Market(chain, self.market_address, signer)

    def connect(self, signer: Signer | None = None, **kw: Any) -> Market:
        """Connect to ``rpc_url`` and return the market."""
        if not self.rpc_url:
            raise ChainError(
                "no-rpc", "this deployment has no rpc_url (an embedded chain lives in one process)"
            )
        kind = self.kind if self.kind in ("anvil", "devnet") else "rpc"
        return self.market(Chain.connect(self.rpc_url, kind=kind, **kw), signer)


def deploy(
    chain: Chain, signer: Signer, params: MarketParams | None = None, out: str | None = None
) -> Deployment:
    """Deploy the market on ``chain`` and (with ``out``) write the addresses file."""
    params = params or MarketParams()
    market = Market.deploy(chain, signer, params)
    dep = Deployment(
        chain_id=chain.chain_id,
        contracts={CONTRACT: market.address},
        deploy_block=int(market.deploy_receipt["blockNumber"]),
        rpc_url=chain.url,
        kind=chain.kind,
        params=asdict(params),
    )
    if out:
        dep.save(out)
    return dep

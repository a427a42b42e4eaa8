"""Helpers of the chain tests: a deployed market with staked nodes and a funded client."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from sandrun_p2p.chain import artifacts
from sandrun_p2p.chain.chain import Chain, Signer
from sandrun_p2p.chain.crypto import commitment
from sandrun_p2p.chain.market import Market, MarketParams, Opening

ARTIFACTS = str(Path(__file__).resolve().parent / "artifacts")
ETH = 10**18

# short windows so tests can travel past them cheaply
PARAMS = MarketParams(
    min_stake=ETH,
    fault_penalty=ETH // 10,
    unbonding_delay=2_000,
    reveal_window=100,
    max_job_duration=1_000,
    challenge_window=100,
    deposit_delay=200,
)
N_NODES = 5


def h(label: str | bytes) -> bytes:
    return hashlib.sha256(label.encode() if isinstance(label, str) else label).digest()


@dataclass
class NodeActor:
    market: Market  # bound to the node's signer
    node_id: bytes
    index: int

    @property
    def address(self) -> str:
        return self.market.account


class World:
    """A deployed market with N_NODES staked nodes and a funded client."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        dev = chain.dev_signers()
        self.deployer = dev[0]
        self.market = Market.deploy(chain, self.deployer, PARAMS)
        self.nodes: list[NodeActor] = []
        for i in range(N_NODES):
            m = self.market.as_(dev[1 + i])
            nid = h(f"node-{i}")
            idx = m.register(nid, 2 * ETH).event("NodeRegistered")["node"]
            self.nodes.append(NodeActor(m, nid, idx))
        self.client = self.market.as_(chain.new_account(100 * ETH))
        self.other = self.market.as_(dev[8])  # a bystander: reporter, caller of finalize
        self._jobs = 0

    def new_job_id(self) -> bytes:
        self._jobs += 1
        return h(f"job-{self._jobs}-{os.urandom(4).hex()}")

    def post(
        self, k: int = 3, q: int | None = None, price: int = ETH, ttl: int = 500, client: Market | None = None
    ):
        q = q if q is not None else k // 2 + 1
        job_id = self.new_job_id()
        res = (client or self.client).post_job(job_id, k, q, self.chain.now() + ttl, price)
        return job_id, res

    def commit(
        self, job_id: bytes, node: NodeActor, root: bytes, usage: int, salt: bytes | None = None
    ) -> Opening:
        salt = salt or os.urandom(32)
        res = node.market.commit(job_id, commitment(job_id, node.node_id, root, salt), usage)
        pos = res.event("Committed")["pos"]
        return Opening(pos, root, salt, usage)

    def commit_all(self, job_id: bytes, roots: list[bytes], usage: int) -> list[Opening]:
        return [self.commit(job_id, self.nodes[i], r, usage) for i, r in enumerate(roots)]

    def deploy_helper(self, name: str, signer: Signer | None = None) -> object:
        art = artifacts.load(name, ARTIFACTS)
        addr, _ = self.chain.deploy(signer or self.deployer, art, self.market.address)
        return self.chain.w3.eth.contract(address=addr, abi=art["abi"])


CONTRACTS_DIR = Path(__file__).resolve().parents[2] / "contracts"


def ensure_contract_packages() -> str | None:
    """Install contracts/ npm packages (solc-js, anvil) with `npm ci` when missing; None when done, else why not."""
    import shutil
    import subprocess

    solc = CONTRACTS_DIR / "node_modules" / "solc" / "package.json"
    anvil = CONTRACTS_DIR / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
    if solc.exists() and anvil.exists():
        return None
    npm = shutil.which("npm")
    if npm is None:
        return "npm is not installed"
    r = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=CONTRACTS_DIR,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return None if r.returncode == 0 else f"npm ci failed: {r.stderr[-500:]}"

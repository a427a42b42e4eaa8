"""Off-chain halves of what the contract checks: commitments, EIP-712 attestations and vouchers, results trees.

Nodes sign with the secp256k1 key of their staking account (bound on chain to their Ed25519 node id), because
the EVM recovers such a signature for ~3k gas while an Ed25519 verification written in Solidity costs ~1M.

* Attestation(bytes32 jobId, bytes32 traceRoot): "my trace root for this job is R". Gossiped with reveals; two
  attestations of one job with different roots by the same account are equivocation evidence
  (``SandrunMarket.slashEquivocation``), and so is an attestation that contradicts a leaf of one of the node's
  batches (``challengeBatch``).
* Voucher(address executor, bytes32 jobId, uint64 seq, uint96 amount, uint96 cumulative): signed by a client
  when it accepts a result on the batched path; the latest one settles everything it owes that executor.
* Results tree: sorted-pair keccak Merkle tree over ``resultLeaf(jobId, traceRoot)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_abi import encode as abi_encode
from eth_keys import keys
from eth_utils import keccak, to_checksum_address

from ..protocol.verification import commitment as protocol_commitment

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
HALF_N = SECP256K1_N // 2

DOMAIN_NAME = "SandrunMarket"
DOMAIN_VERSION = "1"
_DOMAIN_TYPEHASH = keccak(
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
ATTESTATION_TYPEHASH = keccak(b"Attestation(bytes32 jobId,bytes32 traceRoot)")
VOUCHER_TYPEHASH = keccak(
    b"Voucher(address executor,bytes32 jobId,uint64 seq,uint96 amount,uint96 cumulative)"
)


def _b32(name: str, value: bytes) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != 32:
        raise ValueError(f"{name} must be 32 bytes")
    return bytes(value)


def commitment(job_id: bytes, node_id: bytes, trace_root: bytes, salt: bytes) -> bytes:
    """sha256(job_id || node_id || trace_root || salt): the commitment posted on chain and in gossip.

    The protocol core owns the definition (``sandrun_p2p.protocol.verification.commitment``); this is it.
    """
    for name, value in (("job_id", job_id), ("node_id", node_id), ("trace_root", trace_root), ("salt", salt)):
        _b32(name, value)
    return protocol_commitment(job_id, node_id, trace_root, salt)


def domain_separator(chain_id: int, contract: str) -> bytes:
    return keccak(
        abi_encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [
                _DOMAIN_TYPEHASH,
                keccak(DOMAIN_NAME.encode()),
                keccak(DOMAIN_VERSION.encode()),
                chain_id,
                contract,
            ],
        )
    )


def _typed_digest(domain: bytes, struct_hash: bytes) -> bytes:
    return keccak(b"\x19\x01" + domain + struct_hash)


def attestation_digest(chain_id: int, contract: str, job_id: bytes, trace_root: bytes) -> bytes:
    struct_hash = keccak(
        abi_encode(
            ["bytes32", "bytes32", "bytes32"],
            [ATTESTATION_TYPEHASH, _b32("job_id", job_id), _b32("trace_root", trace_root)],
        )
    )
    return _typed_digest(domain_separator(chain_id, contract), struct_hash)


def voucher_digest(
    chain_id: int, contract: str, executor: str, job_id: bytes, seq: int, amount: int, cumulative: int
) -> bytes:
    struct_hash = keccak(
        abi_encode(
            ["bytes32", "address", "bytes32", "uint64", "uint96", "uint96"],
            [VOUCHER_TYPEHASH, executor, _b32("job_id", job_id), seq, amount, cumulative],
        )
    )
    return _typed_digest(domain_separator(chain_id, contract), struct_hash)


def sign_digest(private_key: bytes, digest: bytes) -> bytes:
    """65-byte r || s || v signature (v in {27, 28}, low s) as ecrecover expects."""
    sig = keys.PrivateKey(private_key).sign_msg_hash(digest)
    r, s, v = sig.r, sig.s, sig.v
    if s > HALF_N:  # libsecp256k1 already normalises; keep the rule explicit
        s = SECP256K1_N - s
        v ^= 1
    return r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([v + 27])


def recover(digest: bytes, signature: bytes) -> str | None:
    """The checksummed address that signed ``digest``, or None for a malformed or high-s signature."""
    if len(signature) != 65:
        return None
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    if v not in (27, 28) or not (0 < r < SECP256K1_N) or not (0 < s <= HALF_N):
        return None
    try:
        pub = keys.Signature(vrs=(v - 27, r, s)).recover_public_key_from_msg_hash(digest)
    except Exception:
        return None
    return pub.to_checksum_address()


def address_of(private_key: bytes) -> str:
    return keys.PrivateKey(private_key).public_key.to_checksum_address()


@dataclass(frozen=True)
class Attestation:
    """A node's signed statement that its trace root for ``job_id`` is ``trace_root``."""

    job_id: bytes
    trace_root: bytes
    signature: bytes

    def signer(self, chain_id: int, contract: str) -> str | None:
        return recover(attestation_digest(chain_id, contract, self.job_id, self.trace_root), self.signature)


def sign_attestation(
    private_key: bytes, chain_id: int, contract: str, job_id: bytes, trace_root: bytes
) -> Attestation:
    digest = attestation_digest(chain_id, contract, job_id, trace_root)
    return Attestation(bytes(job_id), bytes(trace_root), sign_digest(private_key, digest))


def verify_attestation(att: Attestation, chain_id: int, contract: str, account: str) -> bool:
    """True when ``att`` is signed by ``account`` for this deployment."""
    signer = att.signer(chain_id, contract)
    return signer is not None and signer == to_checksum_address(account)


def is_equivocation(a: Attestation, b: Attestation, chain_id: int, contract: str) -> str | None:
    """The account proven to equivocate by ``a`` and ``b`` (same job, different roots, same signer), or None."""
    if a.job_id != b.job_id or a.trace_root == b.trace_root:
        return None
    sa, sb = a.signer(chain_id, contract), b.signer(chain_id, contract)
    return sa if sa is not None and sa == sb else None


@dataclass(frozen=True)
class Voucher:
    """A client's signed promise: ``cumulative`` wei in total to ``executor``, the last job being ``job_id``."""

    client: str
    executor: str
    job_id: bytes
    seq: int
    amount: int
    cumulative: int
    signature: bytes

    def digest(self, chain_id: int, contract: str) -> bytes:
        return voucher_digest(
            chain_id, contract, self.executor, self.job_id, self.seq, self.amount, self.cumulative
        )

    def is_valid(self, chain_id: int, contract: str) -> bool:
        return recover(self.digest(chain_id, contract), self.signature) == to_checksum_address(self.client)


def sign_voucher(
    private_key: bytes,
    chain_id: int,
    contract: str,
    executor: str,
    job_id: bytes,
    seq: int,
    amount: int,
    cumulative: int,
) -> Voucher:
    if not (0 <= amount <= cumulative < 2**96) or not (0 <= seq < 2**64):
        raise ValueError("voucher amounts must satisfy 0 <= amount <= cumulative < 2**96, seq < 2**64")
    executor = to_checksum_address(executor)
    digest = voucher_digest(chain_id, contract, executor, job_id, seq, amount, cumulative)
    return Voucher(
        address_of(private_key),
        executor,
        bytes(job_id),
        seq,
        amount,
        cumulative,
        sign_digest(private_key, digest),
    )


# --------------------------------------------------------------------------------------------------------
# Results tree (batched path)
# --------------------------------------------------------------------------------------------------------


def result_leaf(job_id: bytes, trace_root: bytes) -> bytes:
    return keccak(
        keccak(abi_encode(["bytes32", "bytes32"], [_b32("job_id", job_id), _b32("trace_root", trace_root)]))
    )


def _pair(a: bytes, b: bytes) -> bytes:
    return keccak(a + b) if a < b else keccak(b + a)


class ResultsTree:
    """Sorted-pair Merkle tree over (job_id, trace_root) results, as ``challengeBatch`` verifies it.

    An odd node at the end of a level is carried up unchanged.
    """

    def __init__(self, results: list[tuple[bytes, bytes]]) -> None:
        if not results:
            raise ValueError("a results tree needs at least one result")
        self.results = [(bytes(j), bytes(r)) for j, r in results]
        level = [result_leaf(j, r) for j, r in self.results]
        self.levels = [level]
        while len(level) > 1:
            nxt = [_pair(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                nxt.append(level[-1])
            self.levels.append(nxt)
            level = nxt

    @property
    def root(self) -> bytes:
        return self.levels[-1][0]

    def proof(self, index: int) -> list[bytes]:
        out = []
        for level in self.levels[:-1]:
            sib = index ^ 1
            if sib < len(level):
                out.append(level[sib])
            index //= 2
        return out

    def index_of(self, job_id: bytes) -> int:
        for i, (j, _) in enumerate(self.results):
            if j == job_id:
                return i
        raise KeyError(job_id.hex())


def verify_proof(proof: list[bytes], root: bytes, leaf: bytes) -> bool:
    h = leaf
    for p in proof:
        h = _pair(h, p)
    return h == root

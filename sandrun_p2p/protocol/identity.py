"""Node identity: an Ed25519 key whose 32-byte public key is the node id."""

from __future__ import annotations

from dataclasses import dataclass

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

NODE_ID_LEN = 32
SIG_LEN = 64


@dataclass(frozen=True)
class NodeKey:
    """An Ed25519 signing key. ``node_id`` is the raw public key (also the libp2p key)."""

    seed: bytes

    @classmethod
    def generate(cls) -> NodeKey:
        return cls(bytes(SigningKey.generate()))

    @classmethod
    def from_seed(cls, seed: bytes) -> NodeKey:
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        return cls(bytes(seed))

    @property
    def _sk(self) -> SigningKey:
        return SigningKey(self.seed)

    @property
    def node_id(self) -> bytes:
        return bytes(self._sk.verify_key)

    def sign(self, data: bytes) -> bytes:
        return self._sk.sign(data).signature

    def __repr__(self) -> str:  # never print the seed
        return f"NodeKey({short_id(self.node_id)})"


def verify(node_id: bytes, data: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``node_id``'s Ed25519 signature of ``data``."""
    if len(node_id) != NODE_ID_LEN or len(signature) != SIG_LEN:
        return False
    try:
        VerifyKey(node_id).verify(data, signature)
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


def short_id(node_id: bytes) -> str:
    """A short printable form of a node id for logs."""
    return node_id.hex()[:12]

"""The node key file (one Ed25519 seed, mode 0600) and the mapping between node ids and libp2p peer ids.

The same seed is the protocol :class:`NodeKey` and the libp2p host key, so a peer id and a
protocol sender are one identity: the node id is the raw 32-byte public key, the peer id embeds
it as an identity multihash.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

from ..private_files import write_private
from ..protocol.identity import NodeKey

KEY_FILE = "node.key"
_HEADER = "sandrun-p2p ed25519 seed v1\n"


class KeyFileError(ValueError):
    """The key file exists but cannot be used (wrong format or unsafe permissions)."""


def load_or_create_key(data_dir: Path) -> NodeKey:
    """Load ``data_dir/node.key``, creating it (mode 0600) on first use.

    Refuses a key file that others can read, or one that is not in the expected format.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / KEY_FILE
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise KeyFileError(f"{path} has mode {mode:o}; it must be readable by its owner only (chmod 600)")
        text = path.read_text()
        if not text.startswith(_HEADER):
            raise KeyFileError(f"{path} is not a sandrun-p2p key file")
        try:
            seed = bytes.fromhex(text[len(_HEADER) :].strip())
            return NodeKey.from_seed(seed)
        except ValueError as e:
            raise KeyFileError(f"{path} is corrupt: {e}") from None
    key = NodeKey.generate()
    write_private(path, _HEADER + key.seed.hex() + "\n", fsync=True)
    return key


def libp2p_key_pair(key: NodeKey) -> Any:
    """The libp2p key pair of a node key (same seed)."""
    from libp2p.crypto.ed25519 import create_new_key_pair

    return create_new_key_pair(key.seed)


def peer_id_of_node(node_id: bytes) -> Any:
    """libp2p peer id (``libp2p.peer.id.ID``) of a 32-byte node id."""
    from libp2p.crypto.ed25519 import Ed25519PublicKey
    from libp2p.peer.id import ID

    return ID.from_pubkey(Ed25519PublicKey.from_bytes(node_id))


def node_id_of_peer(peer_id: Any) -> bytes | None:
    """The node id embedded in an Ed25519 peer id (None for any other key type)."""
    from libp2p.crypto.keys import KeyType

    try:
        pk = peer_id.extract_public_key()
    except Exception:
        return None
    if pk is None or pk.get_type() != KeyType.Ed25519:
        return None
    return pk.to_bytes()

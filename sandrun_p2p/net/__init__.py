"""Networking on py-libp2p: a Noise-only TCP host, gossipsub topics with protocol validators, direct streams.

:mod:`keys` (persistent node key, libp2p key pair, peer id <-> node id), :mod:`topics` (topic names),
:mod:`host` (:class:`~sandrun_p2p.net.host.Network`), :mod:`fetch` (CID fetch over a direct stream).
Importing this package does not import libp2p; :mod:`host` and :mod:`fetch` do.
"""

from .keys import load_or_create_key, node_id_of_peer, peer_id_of_node
from .topics import topic_for

__all__ = ["load_or_create_key", "node_id_of_peer", "peer_id_of_node", "topic_for"]

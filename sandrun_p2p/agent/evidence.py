"""Equivocation evidence the contract accepts: chain attestations carried inside reveals.

Gossip messages are signed with the node's Ed25519 key, which the contract cannot verify cheaply. So every
reveal also carries ``attest``: the executor's EIP-712 attestation of its trace root for the job
(``chain.crypto.sign_attestation``, 65 bytes, by the secp256k1 account that staked). Commitments carry none (an
attestation names the root, which a commitment must hide until the reveal). When NodeCore sees two signed
reveals of one job from one executor with different roots, their two attestations are what
``slashEquivocation`` takes: :func:`attestation_pair` pulls them out of NodeCore's evidence.
"""

from __future__ import annotations

from collections.abc import Callable

from ..chain.crypto import Attestation
from ..protocol import messages as m
from ..protocol.errors import ProtocolError
from ..protocol.verification import Evidence, EvidenceKind

#: Length of an attestation signature (r || s || v).
ATTESTATION_LEN = 65


class EvidenceError(ValueError):
    """The evidence cannot be posted on chain (and why)."""


def with_attestation(attest: Callable[[bytes, bytes], bytes | None] | None, kind: str, body: dict) -> dict:
    """``body`` of an outgoing message, with ``attest`` added to a reveal when this node can sign one."""
    if kind != m.REVEAL or attest is None or "attest" in body:
        return body
    sig = attest(body["job"], body["root"])
    return {**body, "attest": sig} if sig else body


def attestation_pair(ev: Evidence) -> tuple[Attestation, Attestation]:
    """Two attestations of different roots for ``ev.job_id``, each from a reveal the accused signed."""
    if ev.kind is not EvidenceKind.EQUIVOCATION:
        raise EvidenceError(f"{ev.kind.value} evidence is settled by the contract itself")
    found: dict[bytes, Attestation] = {}
    kinds = set()
    for raw in ev.items:
        try:
            msg = m.decode(raw)
        except ProtocolError as e:
            raise EvidenceError(f"an evidence item does not decode: {e}") from e
        kinds.add(msg.kind)
        if msg.sender != ev.accused or msg.job != ev.job_id:
            raise EvidenceError("an evidence item is not the accused's message about this job")
        sig = msg.body.get("attest") if msg.kind == m.REVEAL else None
        if isinstance(sig, bytes) and len(sig) == ATTESTATION_LEN:
            found.setdefault(msg.body["root"], Attestation(ev.job_id, msg.body["root"], sig))
    if len(found) < 2:
        what = "commitments carry none" if kinds == {m.COMMIT} else "the reveals do not carry two of them"
        raise EvidenceError(f"no two chain attestations of different roots ({what})")
    a, b = list(found.values())[:2]
    return a, b

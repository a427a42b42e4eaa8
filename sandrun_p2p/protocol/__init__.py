"""The sandrun-p2p protocol as pure, deterministic code (no I/O, no clock, no randomness).

Modules: :mod:`encoding` (canonical CBOR, hashing), :mod:`identity` (Ed25519 node keys),
:mod:`messages` (signed wire format), :mod:`jobspec` (manifest, spec, job id),
:mod:`pricing` (quotes), :mod:`claiming` (eligibility, HRW ranking, fallback, shards),
:mod:`trace` (proof-of-compute trace), :mod:`verification` (commit/reveal, quorum,
evidence), :mod:`events` and :mod:`node` (the NodeCore state machine).
"""

from .errors import ProtocolError, SpecError

__all__ = ["ProtocolError", "SpecError"]

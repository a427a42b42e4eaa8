"""The one error type the protocol core raises for bad input."""

from __future__ import annotations


class ProtocolError(ValueError):
    """Anything malformed, oversized, unsigned, stale, replayed or otherwise invalid.

    ``reason`` is a short machine-readable tag (e.g. ``"bad-signature"``); ``str(err)``
    is a sentence a person can act on.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class SpecError(ProtocolError):
    """A job manifest or job spec that cannot be accepted."""

    def __init__(self, detail: str) -> None:
        super().__init__("bad-spec", detail)

"""Errors raised by the executors for input they refuse (never for what a job does)."""

from __future__ import annotations

from ..protocol.errors import ProtocolError


class BundleError(ProtocolError):
    """A code bundle or job directory that cannot be run (traversal, links, devices, no entrypoint)."""

    def __init__(self, detail: str) -> None:
        super().__init__("bad-bundle", detail)


class ExecError(ProtocolError):
    """The executor cannot run this job here (unmet GPU requirement, unsafe host, backend failure)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason, detail)

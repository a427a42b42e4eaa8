"""sandrun-p2p: a peer-to-peer marketplace for sandboxed compute."""

__version__ = "0.1.0"

"""Executors: the local bubblewrap sandbox (default) and a sandrun HTTP client; capabilities; checkpoints."""

from .capabilities import capabilities, check_gpu
from .checkpoint import Checkpoint
from .errors import BundleError, ExecError
from .result import ExecResult
from .sandbox import LocalExecutor

__all__ = [
    "BundleError",
    "Checkpoint",
    "ExecError",
    "ExecResult",
    "LocalExecutor",
    "capabilities",
    "check_gpu",
]

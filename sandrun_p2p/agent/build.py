"""Assemble an :class:`~sandrun_p2p.agent.runtime.Agent` from its configuration (executor, store, chain, key)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from .config import AgentConfig

log = logging.getLogger("sandrun_p2p.agent")


def make_executor(cfg: AgentConfig) -> Any:
    if cfg.sandrun_url:
        from ..exec.sandrun import SandrunExecutor

        return SandrunExecutor(cfg.sandrun_url, results_root=cfg.data_dir / "exec" / "results")
    from ..exec.sandbox import LocalExecutor

    executor = LocalExecutor(
        work_root=cfg.data_dir / "exec",
        allow_unsafe=cfg.allow_unsafe_sandbox,
        gpu_indices=cfg.gpus,
        runtimes=cfg.job_runtimes,
    )
    if executor.swept:  # run directories (and tmpfs mounts) a SIGKILLed earlier agent left behind
        log.info("event=swept-stale-runs count=%d", executor.swept)
    return executor


def build_agent(cfg: AgentConfig) -> tuple[Any, Any]:
    """The agent and the capability detector it re-runs periodically."""
    from ..exec.capabilities import capabilities
    from ..net.keys import load_or_create_key
    from ..store import open_store
    from .ports import load_chain
    from .runtime import Agent

    cfg.validate()
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    key = load_or_create_key(cfg.data_dir)
    executor = make_executor(cfg)

    def detect() -> dict[str, Any]:
        return capabilities(executor)

    store = open_store(str(cfg.data_dir / "store"), cfg.ipfs_api)
    options = {"data_dir": str(cfg.data_dir), "rpc": cfg.blockchain_rpc, **cfg.chain}
    chain = load_chain(cfg.chain_factory, options)
    agent = Agent(cfg, key=key, executor=executor, store=store, chain=chain, exec_caps=detect())
    return agent, detect


def setup_logging(cfg: AgentConfig) -> None:
    """One line per event: ``<iso time> <level> <logger> event=... job=...``."""
    handler: logging.Handler = (
        logging.FileHandler(cfg.log_file) if cfg.log_file else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("sandrun_p2p")
    root.handlers[:] = [handler]
    root.propagate = False
    root.setLevel(cfg.log_level.upper())
    lib = logging.getLogger("libp2p")
    lib.handlers[:] = [handler]
    lib.setLevel(logging.WARNING)


def data_dir_default() -> Path:
    from ..store import default_data_dir

    return default_data_dir()

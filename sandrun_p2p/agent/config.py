"""Agent configuration: defaults, a TOML file (``--config``), then command-line flags, in that order.

A config file uses the same names as the flags (underscores), plus three tables::

    listen = ["/ip4/0.0.0.0/tcp/4001"]
    bootstrap = ["/ip4/10.0.0.5/tcp/4001/p2p/12D3Koo..."]
    max_jobs = 2
    [core]      # protocol parameters (protocol.node.CoreConfig); every node of a network must agree
    fallback_interval = 2.0
    [caps]      # override detected capabilities (cpus, mem_mb, disk_mb, gpus, max_jobs)
    cpus = 4
    [chain]     # options passed to the chain factory (e.g. addresses_file, account_index)
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..protocol.node import CoreConfig
from .ports import DEFAULT_CHAIN_FACTORY


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the setting."""


def core_settings(values: dict[str, Any], where: str) -> dict[str, Any]:
    """Protocol parameters (``CoreConfig`` fields) checked by name and type (an int is taken for a float), so a
    typo or a wrong value is a clear error here and not an exception in a running node; ``where`` names their
    source in the message (``[core]`` of the config file, ``--core``)."""
    fields = {f.name: f for f in dataclasses.fields(CoreConfig)}
    out = dict(values)
    for key, val in values.items():
        f = fields.get(key)
        if f is None:
            raise ConfigError(
                f"{where} has unknown setting {key}: no such protocol parameter; known: {', '.join(sorted(fields))}"
            )
        want = type(f.default)
        if want is float and isinstance(val, int) and not isinstance(val, bool):
            out[key] = float(val)
        elif not isinstance(val, want) or (want is int and isinstance(val, bool)):
            raise ConfigError(f"{where} {key}={val!r}: expected a {want.__name__}")
    return out


@dataclass
class AgentConfig:
    data_dir: Path
    listen: list[str] = field(default_factory=lambda: ["/ip4/127.0.0.1/tcp/0"])
    bootstrap: list[str] = field(default_factory=list)
    mdns: bool = True
    max_jobs: int = 0  # 0: one per CPU
    sandrun_url: str | None = None
    blockchain_rpc: str | None = None
    ipfs_api: str | None = None
    control_host: str = "127.0.0.1"
    control_port: int = 0  # 0: any free port (written to data_dir/control.json)
    shards: list[int] = field(default_factory=lambda: [0])
    core: dict[str, Any] = field(default_factory=dict)
    caps: dict[str, Any] = field(default_factory=dict)
    chain: dict[str, Any] = field(default_factory=dict)
    chain_factory: str = DEFAULT_CHAIN_FACTORY
    allow_unsafe_sandbox: bool = False
    gpus: list[int] | None = None  # NVML indices of the GPUs this node offers (None: all it has; []: none)
    # folders jobs see read-only, their bin first on PATH (e.g. a Python environment with PyTorch)
    job_runtimes: list[str] = field(default_factory=list)
    shutdown_grace_s: float = 10.0
    # keep the history (events, executions, transactions) of final jobs this long, this node's own ones too
    history_s: float = 7 * 86400.0
    fetch_timeout_s: float = 60.0
    chain_poll_s: float = 0.25
    tx_timeout_s: float = 7200.0  # a settle/refund may wait for the chain's reveal window
    caps_refresh_s: float = 60.0
    publish_batch_window_s: float = 0.0  # wait this long after a message is queued to batch more with it
    inline_code_max: int = 4096  # announce a job's code inline when its root block is this small (0: never)
    log_level: str = "info"
    log_file: str | None = None
    test_faulty_executor: bool = False  # test-only: report a wrong trace root

    def core_config(self) -> CoreConfig:
        return CoreConfig(**core_settings(self.core, "[core]"))

    def validate(self) -> None:
        for name, f in _FIELDS.items():  # every numeric setting (counts, ports, seconds) is a number >= 0
            if isinstance(f.default, int | float) and not isinstance(f.default, bool):
                v = getattr(self, name)
                if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                    raise ConfigError(f"{name} must be a number >= 0, not {v!r}")
        if not 0 <= self.publish_batch_window_s <= 1:
            raise ConfigError("publish_batch_window_s must be between 0 and 1 second")
        if not 0 <= self.control_port <= 65535:
            raise ConfigError("control_port must be a TCP port number")
        if self.control_host not in ("127.0.0.1", "localhost", "::1"):
            raise ConfigError("the control API only listens on loopback (control_host 127.0.0.1)")
        if self.gpus is not None and (
            not isinstance(self.gpus, list)
            or any(not isinstance(g, int) or isinstance(g, bool) or g < 0 for g in self.gpus)
        ):
            raise ConfigError("gpus must be a list of GPU indices (as nvidia-smi numbers them), e.g. [0, 2]")
        if not isinstance(self.job_runtimes, list) or any(
            not isinstance(r, str) or not r.startswith("/") for r in self.job_runtimes
        ):
            raise ConfigError(
                'job_runtimes must be a list of absolute folder paths, e.g. ["/opt/torch/.venv"]'
            )
        if not self.shards or any(not isinstance(s, int) or s < 0 for s in self.shards):
            raise ConfigError("shards must be a non-empty list of shard numbers")
        bits = self.core_config().shard_bits
        if any(s >= 2**bits for s in self.shards):
            raise ConfigError(f"shards {self.shards} out of range for shard_bits={bits}")
        from ..net.host import validate_multiaddr  # imports libp2p; only when validating for real

        for a in self.listen:
            validate_multiaddr(a)
        for b in self.bootstrap:
            validate_multiaddr(b, need_peer=True)


_FIELDS = {f.name: f for f in dataclasses.fields(AgentConfig)}


def load_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting(s) {unknown}")
    return data


def build(data_dir: Path, file_values: dict[str, Any], overrides: dict[str, Any]) -> AgentConfig:
    """Defaults <- file <- overrides (None in overrides means "not given")."""
    values: dict[str, Any] = {}
    for src in (file_values, {k: v for k, v in overrides.items() if v is not None}):
        for k, v in src.items():
            if k not in _FIELDS:
                raise ConfigError(f"unknown setting {k!r}")
            values[k] = v
    values.pop("data_dir", None)
    cfg = AgentConfig(data_dir=Path(data_dir).expanduser(), **values)
    for name in ("listen", "bootstrap", "shards"):
        if not isinstance(getattr(cfg, name), list):
            raise ConfigError(f"{name} must be a list")
    for name in ("core", "caps", "chain"):
        if not isinstance(getattr(cfg, name), dict):
            raise ConfigError(f"[{name}] must be a table")
    return cfg

"""``sandrun-p2p agent``: run a node agent (join the mesh, advertise, claim, execute, verify, settle)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir", type=Path, help="node key, journal, store (default $SANDRUN_P2P_HOME or ~/.sandrun-p2p)"
    )
    p.add_argument("--config", type=Path, help="TOML file with the same settings (flags override it)")
    p.add_argument(
        "--listen", action="append", help="multiaddr to listen on (repeatable; default /ip4/127.0.0.1/tcp/0)"
    )
    p.add_argument("--bootstrap", action="append", help="peer multiaddr ending in /p2p/<id> (repeatable)")
    p.add_argument("--no-mdns", action="store_true", help="do not discover peers on the local network")
    p.add_argument("--max-jobs", type=int, help="concurrent executions (default: one per CPU)")
    p.add_argument("--sandrun-url", help="run jobs on this sandrun server instead of the local sandbox")
    p.add_argument("--blockchain-rpc", help="JSON-RPC URL of the settlement chain (default: embedded chain)")
    p.add_argument("--ipfs-api", help="IPFS RPC API (multiaddr or URL) instead of the embedded store")
    p.add_argument(
        "--gpus",
        type=_gpu_list,
        metavar="LIST",
        help="GPUs this node offers, by index as nvidia-smi numbers them: '0,2', or 'none' "
        "(default: all it has)",
    )
    p.add_argument(
        "--job-runtime",
        action="append",
        metavar="DIR",
        help="a folder jobs see read-only, its bin first on their PATH, e.g. a Python environment with "
        "PyTorch (repeatable; never one holding the node's data dir)",
    )
    p.add_argument("--control-port", type=int, help="local control API port on 127.0.0.1 (default: any free)")
    p.add_argument(
        "--allow-unsafe-sandbox",
        action="store_true",
        default=None,
        help="run jobs even where the sandbox cannot isolate the network (testing only)",
    )
    p.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-file", help="write logs here instead of stderr")
    p.add_argument("--test-faulty-executor", action="store_true", default=None, help=argparse.SUPPRESS)


def _gpu_list(text: str) -> list[int]:
    if text.strip().lower() == "none":
        return []
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give GPU indices like 0,2 or 'none'") from None
    if not out or min(out) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give GPU indices like 0,2 or 'none'")
    return out


def config_from_args(args: argparse.Namespace):  # -> AgentConfig
    from .build import data_dir_default
    from .config import build, load_toml

    file_values = load_toml(args.config) if args.config else {}
    data_dir = args.data_dir or Path(file_values.pop("data_dir", None) or data_dir_default())
    overrides = {
        "listen": args.listen,
        "bootstrap": args.bootstrap,
        "mdns": False if args.no_mdns else None,
        "max_jobs": args.max_jobs,
        "sandrun_url": args.sandrun_url,
        "blockchain_rpc": args.blockchain_rpc,
        "ipfs_api": args.ipfs_api,
        "control_port": args.control_port,
        "allow_unsafe_sandbox": args.allow_unsafe_sandbox,
        "gpus": args.gpus,
        "job_runtimes": args.job_runtime,
        "log_level": args.log_level,
        "log_file": args.log_file,
        "test_faulty_executor": args.test_faulty_executor,
    }
    return build(data_dir, file_values, overrides)


def run(args: argparse.Namespace) -> int:
    from .config import ConfigError

    try:
        cfg = config_from_args(args)
        cfg.validate()
    except (ConfigError, ValueError) as e:
        print(f"sandrun-p2p agent: {e}", file=sys.stderr)
        return 2
    import trio

    from .build import build_agent, setup_logging

    setup_logging(cfg)
    try:
        agent, detect = build_agent(cfg)
    except Exception as e:
        print(f"sandrun-p2p agent: cannot start: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    trio.run(lambda: agent.run(detect_caps=detect))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sandrun-p2p agent")
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

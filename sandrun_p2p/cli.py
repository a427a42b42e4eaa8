"""`sandrun-p2p` (also installed as `sandrun-pool`): one entry point, one module per subcommand.

Each subcommand lives in the package that owns it, as a module with
``add_arguments(parser)`` and ``run(args) -> int``. A subcommand whose module is not
installed says so and exits 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import __version__

#: subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "agent": (
        "sandrun_p2p.agent.cli_agent",
        "run a node agent: join the mesh, claim, execute, verify, settle",
    ),
    "submit": ("sandrun_p2p.client_cli", "submit a job through a peer and pay on a verified result"),
    "status": ("sandrun_p2p.agent.cli_status", "this node and the mesh as it sees them"),
    "nodes": ("sandrun_p2p.agent.cli_nodes", "known nodes with their capabilities"),
    "jobs": ("sandrun_p2p.agent.cli_jobs", "the job queue as this node sees it, and your submitted jobs"),
    "testnet": ("sandrun_p2p.agent.testnet", "start a local network of agents on loopback"),
    "exec": ("sandrun_p2p.exec.cli", "run one job locally in the configured executor and print its trace"),
    "store": ("sandrun_p2p.store.cli", "add, cat and get content by CID"),
    "deploy-contracts": (
        "sandrun_p2p.chain.cli",
        "deploy the settlement contracts and write their addresses",
    ),
    "sim": ("sims.cli", "run network simulations of the protocol (see sims/)"),
    "selfcheck": ("sandrun_p2p.selfcheck", "run the protocol core through one job on an in-memory network"),
}


class _Unavailable:
    """Stand-in for a subcommand whose module is not present in this build."""

    def __init__(self, name: str, module: str, error: Exception) -> None:
        self.name, self.module, self.error = name, module, error

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def run(self, args: argparse.Namespace) -> int:
        print(
            f"sandrun-p2p {self.name}: not available yet in this build ({self.module}: {self.error})",
            file=sys.stderr,
        )
        return 2


def _load(name: str, module: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):
            return _Unavailable(name, module, e)
        raise


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sandrun-p2p",
        description="Peer-to-peer marketplace for sandboxed compute.",
    )
    parser.add_argument("--version", action="version", version=f"sandrun-p2p {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if only == name:
            mod = _load(name, module)
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Only the chosen subcommand's module is imported, so `--help` and unrelated commands stay fast.
    chosen = next((a for a in argv if not a.startswith("-")), None)
    if chosen in SUBCOMMANDS:
        mod = _load(chosen, SUBCOMMANDS[chosen][0])
        if isinstance(mod, _Unavailable):
            return mod.run(argparse.Namespace())
    parser = build_parser(chosen if chosen in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

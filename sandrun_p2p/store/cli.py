"""``sandrun-p2p store ...``: add, cat and get content with the embedded store or an IPFS daemon.

The top-level CLI calls :func:`add_arguments` on its ``store`` sub-parser and :func:`run` with the
parsed arguments. Also runnable alone: ``python -m sandrun_p2p.store.cli add PATH``.

Exit status: 0 success, 1 store error (message on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import trio

from . import default_data_dir, open_store
from .errors import StoreError
from .importer import cid_of_path


def _common(p: argparse.ArgumentParser) -> None:
    # SUPPRESS: a value given to a parent parser (e.g. a global --data-dir) is not overwritten.
    p.add_argument(
        "--ipfs-api",
        metavar="ADDR",
        default=argparse.SUPPRESS,
        help="use the IPFS daemon at this RPC API (multiaddr /ip4/127.0.0.1/tcp/5001 or http://HOST:PORT) "
        "instead of the embedded store",
    )
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="node data directory (default: $SANDRUN_P2P_HOME or ~/.sandrun-p2p)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Install the ``add`` / ``cat`` / ``get`` sub-commands on the ``store`` parser."""
    _common(parser)
    sub = parser.add_subparsers(dest="store_command", metavar="{add,cat,get}")
    sub.required = True
    p = sub.add_parser("add", help="store a file or directory and print its CID")
    p.add_argument("path", help="file or directory")
    p.add_argument("--no-pin", action="store_true", help="do not pin (the next gc may remove it)")
    p.add_argument("--only-hash", action="store_true", help="print the CID without storing anything")
    _common(p)
    p = sub.add_parser("cat", help="write the file CID to stdout")
    p.add_argument("cid")
    _common(p)
    p = sub.add_parser("get", help="write the file or directory CID to DEST")
    p.add_argument("cid")
    p.add_argument(
        "dest", help="destination path (must not exist; an empty directory is fine for a directory)"
    )
    _common(p)


async def _main(args: argparse.Namespace) -> int:
    cmd = args.store_command
    if cmd == "add" and args.only_hash:
        print(await trio.to_thread.run_sync(cid_of_path, args.path))
        return 0
    data_dir = getattr(args, "data_dir", None) or default_data_dir()
    api = getattr(args, "ipfs_api", None) or None
    async with open_store(str(data_dir), api) as store:
        if cmd == "add":
            print(await store.put_path(args.path, pin=not args.no_pin))
        elif cmd == "cat":
            data = await store.get(args.cid)
            out = sys.stdout.buffer
            out.write(data)
            out.flush()
        elif cmd == "get":
            kind = await store.get_path(args.cid, Path(args.dest))
            print(f"{args.dest}: {kind}", file=sys.stderr)
        else:  # pragma: no cover - argparse enforces the choices
            return 2
    return 0


def run(args: argparse.Namespace) -> int:
    """Execute a parsed ``store`` command; returns the exit status."""
    try:
        return trio.run(_main, args)
    except StoreError as e:
        print(f"sandrun-p2p store: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 1
    except OSError as e:
        print(f"sandrun-p2p store: error: {e}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sandrun-p2p store", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

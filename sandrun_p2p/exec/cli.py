"""``sandrun-p2p exec``: run one job in the configured executor and print its trace.

Exit status: 0 when the job ran to an outcome (whatever its own exit code), 2 for a bad manifest
or bundle (one-line reason on stderr), 1 when this node cannot run it (unsafe host, unmet GPU
requirement, unreachable sandrun server).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import trio

from ..protocol.encoding import sha256, tagged_hash
from ..protocol.errors import ProtocolError
from ..protocol.jobspec import Manifest
from .bundles import pack_dir
from .errors import BundleError, ExecError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--code", required=True, type=Path, help="job directory or tar/tar.gz bundle")
    p.add_argument("--manifest", required=True, type=Path, help="job manifest (JSON)")
    p.add_argument("--checkpoint", type=Path, help="resume from this checkpoint directory")
    p.add_argument("--json", action="store_true", help="print the trace as one JSON object")
    p.add_argument("--sandrun-url", help="run on this sandrun server instead of the local sandbox")
    p.add_argument(
        "--allow-unsafe",
        action="store_true",
        help="run even where the host cannot isolate the network (NOT for untrusted jobs)",
    )
    p.add_argument("--work-root", type=Path, help="where runs and results are kept")
    p.add_argument(
        "--job-runtime",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder the job sees read-only, its bin first on PATH (e.g. a Python environment with PyTorch)",
    )


def _load(args: argparse.Namespace) -> tuple[Manifest, Path | bytes, bytes]:
    try:
        raw = json.loads(args.manifest.read_text())
    except OSError as e:
        raise BundleError(f"cannot read manifest {args.manifest}: {e.strerror}") from None
    except ValueError as e:
        raise BundleError(f"manifest {args.manifest} is not valid JSON ({e})") from None
    manifest = Manifest.from_dict(raw)
    code: Path | bytes
    if args.code.is_dir():
        code = args.code
        code_hash = sha256(pack_dir(args.code))
    elif args.code.is_file():
        code = args.code.read_bytes()
        code_hash = sha256(code)
    else:
        raise BundleError(f"--code {args.code} is neither a directory nor a file")
    if args.checkpoint is not None and not args.checkpoint.is_dir():
        raise BundleError(f"--checkpoint {args.checkpoint} is not a directory")
    job_id = tagged_hash("exec-cli", [code_hash, manifest.to_dict()])
    return manifest, code, job_id


async def _run(args: argparse.Namespace, manifest: Manifest, code: Path | bytes, job_id: bytes) -> dict:
    if args.sandrun_url:
        from .sandrun import SandrunExecutor

        ex = SandrunExecutor(args.sandrun_url, results_root=args.work_root)
    else:
        from .sandbox import LocalExecutor

        ex = LocalExecutor(
            work_root=args.work_root, allow_unsafe=args.allow_unsafe, runtimes=args.job_runtime
        )
    result = await ex.run(code, manifest, job_id, checkpoint_from=args.checkpoint)
    return result.summary(ex.enforced)


def run(args: argparse.Namespace) -> int:
    try:
        manifest, code, job_id = _load(args)
        summary = trio.run(_run, args, manifest, code, job_id)
    except ExecError as e:
        print(f"sandrun-p2p exec: cannot run here: {e}", file=sys.stderr)
        return 1
    except ProtocolError as e:
        print(f"sandrun-p2p exec: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary, sort_keys=True))
        return 0
    print(f"trace_root  {summary['trace_root']}")
    print(f"status      {summary['status']} (exit code {summary['exit_code']})")
    print(f"stdout      {summary['stdout_sha256']}  {summary['stdout_path']}")
    print(f"stderr      {summary['stderr_sha256']}  {summary['stderr_path']}")
    for path, h in summary["outputs"].items():
        print(f"output      {h}  {path}")
    for c in summary["checkpoints"]:
        print(f"checkpoint  {c}")
    print(f"outputs in  {summary['outputs_dir']}")
    print("enforced    " + ", ".join(f"{k}={v}" for k, v in summary["enforced"].items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sandrun-p2p exec", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

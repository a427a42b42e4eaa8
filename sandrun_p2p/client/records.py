"""The client's local job records: one JSON file per job under ``<home>/client/jobs/`` (mode 0600).

A record holds what only the submitter may know: the per-job escrow key (to claim refunds), the bundle
key of an encrypted job, the per-job result key (the Ed25519 seed whose public key is ``spec.result_key``;
executors seal the result to it), the spec (to recompute the job id and the output hashes) and the peer the job
went through. Nothing here is ever sent anywhere.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..private_files import write_private
from ..protocol.jobspec import JobSpec
from .errors import UnknownJob


def client_home() -> Path:
    """``$SANDRUN_P2P_HOME/client`` or ``~/.sandrun-p2p/client``."""
    env = os.environ.get("SANDRUN_P2P_HOME")
    base = Path(env).expanduser() if env else Path.home() / ".sandrun-p2p"
    return base / "client"


@dataclass
class JobRecord:
    job_id: str
    spec: dict[str, Any]  # JobSpec.to_dict() with the nonce in hex
    peer: str  # control API URL or agent data dir the job was published through
    created: float = field(default_factory=time.time)
    code: str = ""  # the path that was packed
    bundle_key: str = ""  # hex; empty for a plaintext bundle
    result_seed: str = ""  # hex Ed25519 seed of the per-job result key; empty when results are not sealed
    escrow_address: str = ""  # the fresh per-job account that posted the escrow
    escrow_key: str = ""  # its private key (hex): needed to claim refunds
    funder: str = ""  # the funding wallet's address (refunds go back there)
    chain: dict[str, Any] = field(default_factory=dict)  # {"rpc", "market", "chain_id", "kind"}
    txs: list[dict[str, Any]] = field(default_factory=list)  # {"kind", "hash", "wei"}
    state: str = "new"  # last state seen
    reason: str = ""
    accepted_root: str = ""
    paid_wei: int = 0
    refunded_wei: int = 0
    result_dir: str = ""
    notes: list[str] = field(default_factory=list)  # e.g. why the peer escrowed instead of a fresh key

    def job_spec(self) -> JobSpec:
        d = dict(self.spec)
        d["nonce"] = bytes.fromhex(d.get("nonce", ""))
        if "result_key" in d:
            d["result_key"] = bytes.fromhex(d["result_key"])
        if "executors" in d:
            d["executors"] = [bytes.fromhex(x) for x in d["executors"]]
        return JobSpec.from_dict(d)

    @staticmethod
    def spec_dict(spec: JobSpec) -> dict[str, Any]:
        d = spec.to_dict()
        d["nonce"] = spec.nonce.hex()
        if spec.result_key:
            d["result_key"] = spec.result_key.hex()
        if spec.executors:
            d["executors"] = [x.hex() for x in spec.executors]
        return d

    def public(self) -> dict[str, Any]:
        """The record without its secrets (for --json and `jobs`)."""
        d = asdict(self)
        for secret in ("escrow_key", "bundle_key", "result_seed"):
            d.pop(secret)
        d["encrypted"] = bool(self.bundle_key)
        return d


class RecordStore:
    """Job records of this client, in ``root`` (default :func:`client_home`)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else client_home()
        self.jobs_dir = self.root / "jobs"

    def _ensure(self) -> None:
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        for d in (self.root, self.jobs_dir):
            os.chmod(d, 0o700)

    def path(self, job_id: str) -> Path:
        if len(job_id) != 64 or any(c not in "0123456789abcdef" for c in job_id):
            raise UnknownJob(f"{job_id!r} is not a job id (64 lowercase hex characters)")
        return self.jobs_dir / f"{job_id}.json"

    def save(self, rec: JobRecord) -> None:
        """Write atomically with mode 0600 (the record holds the escrow, bundle and result keys)."""
        self._ensure()
        final = self.path(rec.job_id)
        write_private(final, json.dumps(asdict(rec), indent=1, sort_keys=True))

    def load(self, job_id: str) -> JobRecord:
        job_id = job_id.lower().removeprefix("0x")
        p = self.path(job_id) if len(job_id) == 64 else self._by_prefix(job_id)
        try:
            d = json.loads(p.read_text())
        except FileNotFoundError:
            raise UnknownJob(
                f"no local record of job {job_id} in {self.jobs_dir}; only the client that submitted a job "
                "can fetch its result or refund it (set SANDRUN_P2P_HOME to that client's home)"
            ) from None
        known = set(JobRecord.__dataclass_fields__)
        return JobRecord(**{k: v for k, v in d.items() if k in known})

    def _by_prefix(self, prefix: str) -> Path:
        hits = [p for p in self.jobs_dir.glob(f"{prefix}*.json")] if prefix and self.jobs_dir.exists() else []
        if len(hits) != 1:
            why = "no job" if not hits else f"{len(hits)} jobs"
            raise UnknownJob(f"{why} in {self.jobs_dir} start with {prefix!r}; give more of the job id")
        return hits[0]

    def all(self) -> list[JobRecord]:
        """Every record, newest first."""
        if not self.jobs_dir.exists():
            return []
        recs = [self.load(p.stem) for p in self.jobs_dir.glob("*.json")]
        return sorted(recs, key=lambda r: r.created, reverse=True)

"""Everything that can be wrong with a job is refused before the peer or the chain is asked for anything."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from sandrun_p2p.client import (
    BadJob,
    Client,
    InsufficientPayment,
    NoEligibleNode,
    PeerUnavailable,
    RecordStore,
    quote,
)
from sandrun_p2p.client.bundle import prepare
from sandrun_p2p.client.peer import PeerError
from sandrun_p2p.client.records import JobRecord
from sandrun_p2p.protocol.claiming import shard_of
from sandrun_p2p.protocol.jobspec import JobSpec, Manifest
from sandrun_p2p.store import crypto
from sandrun_p2p.store.errors import DecryptionError

GOOD = {"entrypoint": "main.py", "outputs": ["out.txt"], "timeout": 20, "memory_mb": 128}
CPU_NODE = {
    "node_id": "aa" * 32,
    "fresh": True,
    "caps": {
        "cpus": 4,
        "mem_mb": 4096,
        "disk_mb": 1000,
        "gpus": [],
        "enforced": ["network", "memory"],
        "executor": "local",
        "max_jobs": 2,
    },
}


class RecordingPeer:
    """Stands in for a peer; records every call. ``announce`` answers like an agent that supports it."""

    url = "http://127.0.0.1:9"

    def __init__(self, nodes: list[dict[str, Any]] | None = None) -> None:
        self.calls: list[str] = []
        self._nodes = nodes if nodes is not None else [CPU_NODE]

    async def status(self) -> dict[str, Any]:
        self.calls.append("status")
        return {"chain": "anvil"}

    async def nodes(self) -> list[dict[str, Any]]:
        self.calls.append("nodes")
        return self._nodes

    async def announce(self, spec: dict[str, Any], bundle_key: str = "") -> dict[str, Any]:
        self.calls.append("announce")
        raise PeerError(404, "no endpoint POST /v1/announce")

    async def put_blob(self, data: bytes) -> str:
        self.calls.append("put_blob")
        return "bafkreiabcdefgh"

    async def aclose(self) -> None:
        pass


@pytest.fixture
def code(tmp_path: Path) -> Path:
    d = tmp_path / "job"
    d.mkdir()
    (d / "main.py").write_text("open('out.txt','w').write('42')\n")
    return d


def client_with(peer: RecordingPeer, tmp_path: Path) -> Client:
    c = Client(records=RecordStore(tmp_path / "home"))
    c._peers[None] = peer  # type: ignore[assignment]
    return c


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ({"interpreter": "python3"}, "missing 'entrypoint'"),
        ({**GOOD, "timeout": 0}, "timeout must be between"),
        ({**GOOD, "memory_mb": 1}, "memory_mb must be between"),
        ({**GOOD, "entrypoint": "../x.py"}, "relative path inside the job directory"),
        ({**GOOD, "interpreter": "ruby"}, "interpreter must be one of"),
        ({**GOOD, "env": {"SANDRUN_X": "1"}}, "reserved"),
        ({**GOOD, "gpu": {"required": True, "count": 99}}, "gpu.count"),
        ({**GOOD, "surprise": 1}, "unknown field"),
        ({**GOOD, "entrypoint": "other.py"}, "not in the code bundle"),
    ],
)
async def test_bad_manifests_never_reach_peer_or_chain(
    tmp_path: Path, code: Path, manifest: dict, message: str
) -> None:
    peer = RecordingPeer()
    with pytest.raises(BadJob, match=message):
        await client_with(peer, tmp_path).submit(code, manifest)
    assert peer.calls == []
    assert RecordStore(tmp_path / "home").all() == []


async def test_manifest_file_errors(tmp_path: Path, code: Path) -> None:
    peer = RecordingPeer()
    c = client_with(peer, tmp_path)
    with pytest.raises(BadJob, match="does not exist"):
        await c.submit(code, tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(BadJob, match="not valid JSON"):
        await c.submit(code, tmp_path / "bad.json")
    with pytest.raises(BadJob, match="code .* does not exist"):
        await c.submit(tmp_path / "missing", GOOD)
    with pytest.raises(BadJob, match="redundancy must be between 1 and 5"):
        await c.submit(code, GOOD, redundancy=6)
    assert peer.calls == []


async def test_insufficient_payment_names_the_quote(tmp_path: Path, code: Path) -> None:
    peer = RecordingPeer()
    q = quote(GOOD, 2)
    with pytest.raises(InsufficientPayment) as ei:
        await client_with(peer, tmp_path).submit(code, GOOD, payment_wei=q.wei - 1, redundancy=2)
    assert ei.value.quote.wei == q.wei
    assert "below the quote" in str(ei.value) and "--payment" in str(ei.value)
    assert peer.calls == []


async def test_no_eligible_node_is_refused_before_paying(tmp_path: Path, code: Path) -> None:
    peer = RecordingPeer()
    gpu = {**GOOD, "gpu": {"required": True, "min_vram_gb": 8}}
    with pytest.raises(NoEligibleNode, match="no GPU meets the requirement"):
        await client_with(peer, tmp_path).submit(code, gpu)
    assert "put_blob" not in peer.calls and "announce" not in peer.calls


async def test_peer_without_announce_is_refused_before_paying(tmp_path: Path, code: Path) -> None:
    peer = RecordingPeer()
    with pytest.raises(PeerUnavailable, match="No money moved"):
        await client_with(peer, tmp_path).submit(code, GOOD)
    assert "put_blob" not in peer.calls


async def test_peer_escrow_cannot_carry_a_bundle_key(tmp_path: Path, code: Path) -> None:
    with pytest.raises(BadJob, match="--no-encrypt"):
        await client_with(RecordingPeer(), tmp_path).submit(code, GOOD, escrow="peer")


class PeerEscrowPeer(RecordingPeer):
    """Also takes ``POST /v1/jobs`` (the peer escrows, or pays by voucher); records the body."""

    bodies: list[dict[str, Any]]

    async def submit_escrowed_by_peer(self, body: dict[str, Any]) -> dict[str, Any]:
        self.bodies = [*getattr(self, "bodies", []), body]
        from sandrun_p2p.protocol.jobspec import JobSpec

        spec = JobSpec.from_dict(
            {
                "code_cid": body["code_cid"],
                "manifest": body["manifest"],
                "redundancy": 1,
                "quorum": 1,
                "deadline": body["deadline"],
                "nonce": bytes.fromhex(body["nonce"]),
                "payment_wei": body["payment_wei"],
                **({"pay": body["pay"]} if "pay" in body else {}),
            }
        )
        return {"job_id": spec.job_id.hex()}


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"escrow": "client"}, "escrow='peer'"),
        ({"escrow": "peer", "encrypt": False, "redundancy": 2}, "redundancy 1"),
        ({"escrow": "peer", "encrypt": False, "pay_mode": "barter"}, "pay_mode must be"),
    ],
)
async def test_voucher_payment_is_refused_where_it_cannot_apply(
    tmp_path: Path, code: Path, kw: dict, message: str
) -> None:
    peer = RecordingPeer()
    redundancy = kw.pop("redundancy", 1)
    with pytest.raises(BadJob, match=message):
        await client_with(peer, tmp_path).submit(
            code, GOOD, None, redundancy, **{"pay_mode": "voucher", **kw}
        )
    assert "put_blob" not in peer.calls


async def test_voucher_payment_reaches_the_peer_and_the_job_id(tmp_path: Path, code: Path) -> None:
    peer = PeerEscrowPeer()
    c = client_with(peer, tmp_path)
    rec = await c.submit(code, GOOD, escrow="peer", encrypt=False, pay_mode="voucher")
    assert peer.bodies[-1]["pay"] == "voucher" and rec.job_spec().pay == "voucher"
    await c.submit(code, GOOD, escrow="peer", encrypt=False)
    assert "pay" not in peer.bodies[-1]  # escrow: the field a peer without vouchers would refuse is left out


def test_encrypted_bundle_opens_only_with_its_key(code: Path) -> None:
    m = Manifest.from_dict(GOOD)
    p = prepare(code, m, encrypt=True)
    assert b"out.txt" not in p.data and len(p.key) == 32
    with pytest.raises(DecryptionError):
        crypto.open_bundle(p.data, crypto.new_bundle_key())
    plain = prepare(code, m, encrypt=False)
    assert crypto.open_bundle(p.data, p.key) == plain.data  # deterministic tar inside


def test_single_file_is_packed_under_its_name(tmp_path: Path) -> None:
    f = tmp_path / "my-script.py"
    f.write_text("print(1)\n")
    p = prepare(f, Manifest.from_dict({"entrypoint": "my-script.py"}), encrypt=False)
    assert p.members == ("my-script.py",)


def test_records_are_private(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "home")
    rec = JobRecord(job_id="ab" * 32, spec={}, peer="x", escrow_key="11" * 32, bundle_key="22" * 32)
    store.save(rec)
    p = store.path(rec.job_id)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.jobs_dir).st_mode) == 0o700
    assert store.load("abab").escrow_key == "11" * 32  # prefix lookup
    assert "escrow_key" not in rec.public() and "bundle_key" not in rec.public()


class ShardedPeer(RecordingPeer):
    """A peer that serves job shard 5 of 8 and escrows the job itself; records the body it was asked to announce."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[dict[str, Any]] = []

    async def status(self) -> dict[str, Any]:
        self.calls.append("status")
        return {"chain": "anvil", "shard_bits": 3, "shards": [5]}

    async def submit_escrowed_by_peer(self, body: dict[str, Any]) -> dict[str, Any]:
        self.bodies.append(body)
        spec = JobSpec.from_dict({**body, "nonce": bytes.fromhex(body["nonce"])})
        return {"job_id": spec.job_id.hex()}


async def test_a_job_is_numbered_into_a_shard_its_peer_serves(tmp_path: Path, code: Path) -> None:
    """The peer is the job's origin and reads only its shards' topics: a job elsewhere would never see its
    claims. 1 in 8 random nonces fits; ten jobs in a row all land in shard 5."""
    peer = ShardedPeer()
    c = client_with(peer, tmp_path)
    for _ in range(10):
        rec = await c.submit(code, GOOD, escrow="peer", encrypt=False)
        assert shard_of(bytes.fromhex(rec.job_id), 3) == 5
    assert len(peer.bodies) == 10

"""End to end on loopback: a 4-node testnet with a real chain; the client SDK and CLI against it.

Most jobs here are escrowed by the submitting peer (``escrow="peer"``, the faster path); the client-escrow path
(a fresh per-job key posts the escrow, the peer only announces it with ``POST /v1/announce``) has its own tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from sandrun_p2p.client import (
    BadJob,
    Client,
    InsufficientPayment,
    NoEligibleNode,
    RecordStore,
    ResultRejected,
)
from sandrun_p2p.client.bundle import prepare
from sandrun_p2p.client.peer import Peer
from sandrun_p2p.protocol.identity import NodeKey
from sandrun_p2p.protocol.jobspec import Manifest
from sandrun_p2p.store import crypto
from sandrun_p2p.store.bundle import unpack
from sandrun_p2p.store.errors import DecryptionError, StoreError

from .conftest import ROOT, Net

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
EX = ROOT / "examples"


def manifest(name: str) -> dict:
    return json.loads((EX / name / "job.json").read_text())


async def job_count(net: Net, i: int) -> int:
    async with Peer.open(net.node(i)) as p:
        return len((await p._call("GET", "/v1/jobs"))["jobs"])


async def test_submit_via_a_executed_by_others_verified_via_b(
    testnet: Net, home: Path, tmp_path: Path
) -> None:
    a = testnet.node(0)
    async with Client(a) as c:
        rec = await c.submit(
            EX / "multi-output", manifest("multi-output"), redundancy=2, encrypt=False, escrow="peer"
        )
        states = [u.state async for u in c.watch(rec.job_id, timeout=90)]
        assert states[-1] == "settled", states
        assert "accepted" in states
        view = await c.peer().job(rec.job_id)
        winners = set(view["winners"])
        a_id = (await c.peer().status())["node_id"]
        assert len(winners) == 2 and winners - {a_id}, "executed by other nodes"
        # fetch through a node that neither submitted nor executed the job when there is one
        others = [
            i
            for i in range(1, testnet.n)
            if (await Client(testnet.node(i)).peer().status())["node_id"] not in winners
        ]
        b = testnet.node(others[0] if others else 1)
        trace = await c.result(rec.job_id, tmp_path / "out", peer=b)
    assert trace.root.hex() == view["accepted_root"] and trace.status == "exited"
    assert sorted(o.path for o in trace.outputs) == [
        "out/histogram.txt",
        "out/tables/values.csv",
        "summary.json",
    ]
    assert json.loads((tmp_path / "out/summary.json").read_text())["n"] == 2000
    assert RecordStore().load(rec.job_id).result_dir == str((tmp_path / "out").resolve())


async def test_tampered_result_is_refused_by_result(testnet: Net, home: Path, tmp_path: Path) -> None:
    async with Client(testnet.node(1)) as c:
        rec = await c.submit(EX / "primes", manifest("primes"), redundancy=1, encrypt=False, escrow="peer")
        assert (await c.wait(rec.job_id, timeout=90)).state == "settled"
        real = c.peer()
        honest_blob = real.blob

        async def tampered_blob(cid: str, *, tar: bool = False) -> bytes:
            import io
            import tarfile

            data = await honest_blob(cid, tar=tar)
            out = io.BytesIO()
            with tarfile.open(fileobj=io.BytesIO(data)) as src, tarfile.open(fileobj=out, mode="w") as dst:
                for m in src.getmembers():
                    f = src.extractfile(m) if m.isreg() else None
                    body = f.read() if f else b""
                    if m.name.endswith("primes.txt"):
                        body = body.replace(b"\n7\n", b"\n9\n")  # "changed after the trace root"
                        m.size = len(body)
                    dst.addfile(m, io.BytesIO(body) if f else None)
            return out.getvalue()

        real.blob = tampered_blob  # type: ignore[method-assign]
        with pytest.raises(ResultRejected, match="primes.txt' does not match the accepted trace root"):
            await c.result(rec.job_id, tmp_path / "bad")
        assert not (tmp_path / "bad").exists()
        real.blob = honest_blob  # type: ignore[method-assign]
        await c.result(rec.job_id, tmp_path / "good")
    assert "\n7\n" in (tmp_path / "good/primes.txt").read_text()


async def test_bad_input_moves_no_money(testnet: Net, home: Path) -> None:
    before = await job_count(testnet, 0)
    async with Client(testnet.node(0)) as c:
        with pytest.raises(BadJob, match="timeout must be between"):
            await c.submit(EX / "primes", {**manifest("primes"), "timeout": 0}, escrow="peer", encrypt=False)
        with pytest.raises(InsufficientPayment, match="below the quote"):
            await c.submit(EX / "primes", manifest("primes"), payment_wei=1, escrow="peer", encrypt=False)
        with pytest.raises(NoEligibleNode, match="no GPU meets the requirement"):
            await c.submit(EX / "gpu-matmul", manifest("gpu-matmul"), escrow="peer", encrypt=False)
    assert await job_count(testnet, 0) == before
    assert RecordStore().all() == []


async def test_job_nobody_can_run_is_refunded_with_reason(testnet: Net, home: Path) -> None:
    async with Client(testnet.node(2)) as c:
        rec = await c.submit(
            EX / "gpu-matmul", manifest("gpu-matmul"), escrow="peer", encrypt=False, force=True, deadline_s=12
        )
        ups = [u async for u in c.watch(rec.job_id, timeout=60)]
        assert ups[-1].state == "failed" and "no GPU meets the requirement" in ups[-1].detail, ups
        assert "no GPU meets the requirement" in RecordStore().load(rec.job_id).reason
        # The peer escrowed it, so the peer finalizes after the deadline, although the idle chain mines no blocks.
        later = [u async for u in c.watch(rec.job_id, timeout=60, since=ups[-1].event_id)]
        assert later and later[-1].state == "refunded", later
        ch = (await c.peer().job(rec.job_id))["chain"]
        assert (
            ch["state"] == "refunded"
            and ch["paid_wei"] == 0
            and ch["refunded_wei"] == rec.job_spec().payment_wei
        )


async def test_encrypted_bundle_is_unreadable_without_the_key(testnet: Net, home: Path) -> None:
    m = Manifest.from_dict(manifest("primes"))
    sealed = prepare(EX / "primes", m, encrypt=True)
    plain = prepare(EX / "primes", m, encrypt=False)
    async with Peer.open(testnet.node(0)) as a, Peer.open(testnet.node(3)) as d:
        cid = await a.put_blob(sealed.data)
        fetched = await d.blob(cid)  # another node fetches it from its peers
    assert fetched == sealed.data
    assert b"sieve" not in fetched and b"primes.txt" not in fetched
    with pytest.raises(DecryptionError):
        crypto.open_bundle(fetched, crypto.new_bundle_key())

    granted, stranger = NodeKey.generate(), NodeKey.generate()
    wrapped = crypto.wrap_key(sealed.key, granted.node_id)  # a grant to one executor...
    with pytest.raises(DecryptionError):
        crypto.unwrap_key(wrapped, stranger)  # ...cannot be opened by another node
    assert crypto.unwrap_key(wrapped, granted) == sealed.key
    assert crypto.open_bundle(fetched, sealed.key) == plain.data


async def test_gossip_carries_no_client_identity(testnet: Net, home: Path) -> None:
    """What every node learns about a job is its spec: code CID, manifest, k, q, deadline, nonce, payment."""
    async with Client(testnet.node(3)) as c:
        rec = await c.submit(EX / "primes", manifest("primes"), escrow="peer", encrypt=False)
        await c.wait(rec.job_id, timeout=90)
        async with Peer.open(testnet.node(1)) as other:
            spec = (await other.job(rec.job_id))["spec"]
    assert set(spec) == {
        "code_cid",
        "manifest",
        "redundancy",
        "quorum",
        "deadline",
        "nonce",
        "payment_wei",
        "encrypted",
    }
    # peer mode: the client holds no chain key at all
    assert rec.escrow_address == "" and rec.escrow_key == ""


async def test_client_escrow_is_a_fresh_address_per_job(testnet: Net, home: Path) -> None:
    async with Client(testnet.node(0)) as c:
        recs = [await c.submit(EX / "primes", manifest("primes")) for _ in range(2)]
        esc = await c.escrow()
        senders = {esc.job(bytes.fromhex(r.job_id)).client for r in recs}
        assert senders == {r.escrow_address for r in recs} and len(senders) == 2
        assert esc.funder().address not in senders
        for r in recs:
            assert (await c.wait(r.job_id, timeout=90)).state == "settled"
    # a client given only the control URL (no data dir to read agent.toml from) finds the chain in /v1/status
    url = json.loads((Path(testnet.node(0)) / "control.json").read_text())["url"]
    token = (Path(testnet.node(0)) / "control.token").read_text().strip()
    async with Client(url, token=token) as by_url:
        info = (await by_url.peer().status())["chain_info"]
        found = await by_url.escrow()
    assert (
        (found.opts.rpc, found.opts.market)
        == (info["rpc"], info["market"])
        == (esc.opts.rpc, esc.opts.market)
    )
    assert info["chain_id"] == esc.chain.chain_id and info["kind"] == esc.chain.kind


async def test_encrypted_job_runs_on_granted_executors(testnet: Net, home: Path, tmp_path: Path) -> None:
    """Default submit: encrypted bundle and a result sealed to the client's per-job key. No node can read the
    stored result (the key never leaves the client); the client's result() opens and verifies it."""
    async with Client(testnet.node(0)) as c:
        rec = await c.submit(EX / "monte-carlo-pi", manifest("monte-carlo-pi"), redundancy=3)
        spec = rec.job_spec()
        assert rec.result_seed and spec.result_key == bytes(
            SigningKey(bytes.fromhex(rec.result_seed)).verify_key
        )
        assert RecordStore().path(rec.job_id).stat().st_mode & 0o777 == 0o600
        assert (await c.wait(rec.job_id, timeout=120)).state == "settled"
        view = await c.peer().job(rec.job_id)
        async with Peer.open(testnet.node(3)) as d:  # a node the result key was never given to
            cids = (await d.job(rec.job_id))["result_cids"]
            stored = [await d.blob(cid, tar=True) for cid in cids]
        assert len(cids) >= 2  # every executor sealed on its own: ciphertexts (and CIDs) differ
        for data in stored:
            assert data.startswith(crypto.SEALED_MAGIC) and b"pi.json" not in data
            with pytest.raises(StoreError):
                unpack(data, tmp_path / "not-a-tar")
            with pytest.raises(DecryptionError):
                crypto.open_sealed(data, NodeKey.generate())
        trace = await c.result(rec.job_id, tmp_path / "pi", peer=testnet.node(1))
        assert trace.root.hex() == view["accepted_root"]  # the root is over the plaintext
        assert json.loads((tmp_path / "pi/pi.json").read_text())["samples"] == 400000
        r = await c.refund(rec.job_id)
        assert r["refunded_wei"] >= 0


def test_cli_submit_wait_json(testnet: Net, home: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sandrun_p2p.cli",
            "submit",
            "--code",
            str(EX / "monte-carlo-pi" / "pi.py"),
            "--manifest",
            str(EX / "monte-carlo-pi" / "job.json"),
            "--redundancy",
            "3",
            "--escrow",
            "auto",
            "--peer",
            testnet.node(1),
            "--wait",
            "--out",
            str(tmp_path / "pi"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=150,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr + out.stdout
    d = json.loads(out.stdout)
    assert d["state"] == "settled" and d["status"] == "exited" and list(d["outputs"]) == ["pi.json"]
    money = d["money"]
    # --escrow auto picked a fresh per-job key: the peer announces
    assert money["escrow_from"].startswith("0x")
    # 2-of-3
    assert money["state"] == "settled" and len([p for p in money["payouts"] if p["paid_wei"] > 0]) >= 2
    assert json.loads((tmp_path / "pi/pi.json").read_text())["samples"] == 400000

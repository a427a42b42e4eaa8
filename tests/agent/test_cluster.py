"""Multi-process agents on loopback: mesh, adverts, a k=2 job end to end, a GPU job refunded, a faulty
executor outvoted and slashed in a k=3 job. One 4-node cluster (node 3 runs the test-only faulty executor)."""

from __future__ import annotations

import base64
import hashlib
import time

import pytest

from sandrun_p2p.protocol.claiming import rank
from sandrun_p2p.protocol.jobspec import JobSpec
from sandrun_p2p.store import cid_of_bytes

from .cluster import HELLO, Cluster, hello_job, running_cluster, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

FAULTY = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Cluster:
    with running_cluster(tmp_path_factory.mktemp("cluster"), 4, faulty=(FAULTY,)) as c:
        yield c


def fake_seed(job_id: bytes) -> bytes:
    return hashlib.sha256(job_id + b"fake-chain-seed").digest()


def k1_job_off_node0(
    cluster: Cluster, code: bytes, manifest: dict, tag: bytes, deadline_s: float
) -> tuple[dict, bytes, list[bytes]]:
    """A k=1 job body (``code`` as a bundle's bytes) whose HRW top rank under the fake chain's seed is not node 0
    (the origin a test watches); (body, job id, ranking)."""
    ids = [n.node_id for n in cluster.nodes]
    deadline = int(time.time() + deadline_s)
    for i in range(200):
        nonce = tag + i.to_bytes(4, "big")
        fields = {"redundancy": 1, "deadline": deadline, "payment_wei": 10**15}
        spec = JobSpec.from_dict(
            {"code_cid": cid_of_bytes(code), "manifest": manifest, "nonce": nonce, **fields}
        )
        order = rank(spec.job_id, fake_seed(spec.job_id), ids)
        if order[0] != ids[0]:
            body = {"manifest": manifest, "bundle_b64": base64.b64encode(code).decode(), "nonce": nonce.hex()}
            return {**body, **fields}, spec.job_id, order
    raise AssertionError("no nonce found")


def pick_job(cluster: Cluster, k: int, want_faulty_in_top: bool, **extra) -> tuple[dict, bytes, list[bytes]]:
    """A job body whose HRW top-k (under the fake chain's seed) does / does not include the faulty node."""
    ids = [n.node_id for n in cluster.nodes]
    deadline = int(time.time()) + 90
    body = hello_job(redundancy=k, deadline=deadline, payment_wei=10**15, **extra)
    body.pop("deadline_s", None)
    manifest = body["manifest"]
    for i in range(200):
        nonce = i.to_bytes(4, "big")
        spec = JobSpec.from_dict(
            {
                "code_cid": cid_of_bytes(HELLO),
                "manifest": manifest,
                "redundancy": k,
                "deadline": deadline,
                "nonce": nonce,
                "payment_wei": 10**15,
            }
        )
        top = rank(spec.job_id, fake_seed(spec.job_id), ids)[:k]
        if (cluster.nodes[FAULTY].node_id in top) == want_faulty_in_top:
            return {**body, "nonce": nonce.hex()}, spec.job_id, top
    raise AssertionError("no nonce gives the wanted ranking")


def test_mesh_and_adverts(cluster: Cluster) -> None:
    for n in cluster.nodes:
        st = n.api.status()
        assert st["node_id"] == n.node_id.hex()
        assert len(st["peers"]) >= 1
        assert st["mesh"]["/sandrun-p2p/1/jobs/0"] >= 1
        nodes = {d["node_id"]: d for d in n.api.nodes()}
        assert set(nodes) == {m.node_id.hex() for m in cluster.nodes}
        for d in nodes.values():
            assert d["caps"]["cpus"] >= 1 and "network" in d["caps"]["enforced"]


def test_k2_job_claimed_by_top_two_and_paid(cluster: Cluster) -> None:
    body, job_id, top = pick_job(cluster, 2, want_faulty_in_top=False)
    origin = cluster.nodes[0].api
    r = origin.submit(**body)
    assert r["job_id"] == job_id.hex()
    j = origin.wait_job(r["job_id"], ("settled", "refunded", "failed"), 60)
    assert j["state"] == "settled", j
    # the chain may report the settlement before the reveals reach the origin on gossip (a client waits too)
    wait_for(lambda: origin.job(r["job_id"])["accepted_root"], 30, "the origin to learn the accepted root")
    j = origin.job(r["job_id"])
    summary = {k: j.get(k) for k in ("claims", "winners", "commits", "events")}
    assert sorted(j["claims"]) == sorted(n.hex() for n in top), summary  # nobody else claimed
    assert sorted(j["winners"]) == sorted(n.hex() for n in top), summary
    assert sorted(j["commits"]) == sorted(n.hex() for n in top), summary
    roots = {v["root"] for v in j["reveals"].values()}
    assert roots == {j["accepted_root"]}
    assert sorted(j["chain"]["paid"]) == sorted(n.hex() for n in top), j["chain"]
    assert j["chain"]["paid_wei"] > 0
    # the result can be fetched through any node, as a tar of outputs/stdout/stderr/trace
    import io
    import tarfile

    data = cluster.nodes[1].api.blob(j["result_cids"][0], tar=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        out = tf.extractfile("outputs/out.txt").read()  # type: ignore[union-attr]
    assert out == b"42"
    # every executor logged the job with its id (structured one-line logs)
    for n in cluster.nodes:
        if n.node_id in top:
            assert f"event=executed job={job_id.hex()[:16]}" in (n.data_dir / "agent.log").read_text()


def test_gpu_job_in_cpu_mesh_is_refunded_with_reason(cluster: Cluster) -> None:
    api = cluster.nodes[1].api
    body = hello_job(redundancy=1, deadline_s=12)
    body["manifest"]["gpu"] = {"required": True, "min_vram_gb": 8}
    r = api.submit(**body)
    j = api.wait_job(r["job_id"], ("refunded", "settled"), 60)
    assert j["state"] == "refunded"
    assert j["chain"]["state"] == "refunded"
    assert "no GPU meets the requirement" in j["chain"]["reason"]
    assert "no GPU" in j["reason"] or any("no GPU" in e["detail"] for e in j["events"])
    listed = {x["job_id"]: x for x in api.jobs()}
    assert listed[r["job_id"]]["state"] == "refunded"


def test_faulty_executor_outvoted_and_slashed(cluster: Cluster) -> None:
    body, job_id, top = pick_job(cluster, 3, want_faulty_in_top=True)
    api = cluster.nodes[0].api
    r = api.submit(**body)
    j = api.wait_job(r["job_id"], ("settled", "refunded", "failed"), 60)
    assert j["state"] == "settled", j
    faulty = cluster.nodes[FAULTY].node_id.hex()
    # the job settles with the quorum's reveals; the third (the faulty one's) may reach the origin just after

    def all_revealed() -> dict | None:
        x = api.job(r["job_id"])
        return x if len(x["reveals"]) == 3 else None

    j = wait_for(all_revealed, 30, "the origin to have all 3 reveals")
    roots = {n: v["root"] for n, v in j["reveals"].items()}
    assert roots[faulty] != j["accepted_root"]
    assert sum(1 for v in roots.values() if v == j["accepted_root"]) == 2
    assert faulty not in j["chain"]["paid"]

    def slashed():
        return [s for s in cluster.chain_state()["slashes"] if s["job"] == job_id.hex()]

    s = wait_for(slashed, 30, "the faulty node to be slashed on chain")
    assert [x["node"] for x in s] == [faulty]
    assert s[0]["kind"] == "dissent"


def test_bad_submissions_get_clear_errors(cluster: Cluster) -> None:
    from sandrun_p2p.client.peer import PeerError

    api = cluster.nodes[0].api
    with pytest.raises(PeerError, match="HTTP 400.*timeout"):
        api.submit(
            manifest={"entrypoint": "main.py", "timeout": 0}, bundle_b64=base64.b64encode(HELLO).decode()
        )
    with pytest.raises(PeerError, match="exactly one of code_cid or bundle_b64"):
        api.submit(manifest={"entrypoint": "main.py"})
    with pytest.raises(PeerError, match="unknown field"):
        api.submit(manifest={"entrypoint": "main.py"}, code_cid="bafkxxxxxxxx", colour="red")
    with pytest.raises(PeerError, match="HTTP 400.*executors\\[\\] must be 32 bytes"):
        api.submit(manifest={"entrypoint": "main.py"}, code_cid="bafkxxxxxxxx", executors=["ab"])
    with pytest.raises(PeerError, match="HTTP 400.*executors must be a list"):
        api.submit(manifest={"entrypoint": "main.py"}, code_cid="bafkxxxxxxxx", executors="ab")
    with pytest.raises(PeerError, match="HTTP 400.*fewer than redundancy"):
        api.submit(
            manifest={"entrypoint": "main.py"},
            code_cid="bafkxxxxxxxx",
            redundancy=2,
            executors=[cluster.nodes[1].node_id.hex()],
        )
    with pytest.raises(PeerError, match="HTTP 404"):
        api.job("00" * 32)
    with pytest.raises(PeerError, match="HTTP 400.*hex"):
        api.job("zz")


def test_batch_submission_settles_every_job_and_checks_every_body_first(cluster: Cluster) -> None:
    from sandrun_p2p.client.peer import PeerError

    api = cluster.nodes[1].api
    known = {j["job_id"] for j in api.jobs()}
    good = [hello_job(nonce=f"ba{i:02d}") for i in range(3)]
    with pytest.raises(PeerError, match=r"HTTP 400.*jobs\[1\].*timeout"):
        api.submit_many([good[0], hello_job(manifest={"entrypoint": "main.py", "timeout": 0}), good[2]])
    with pytest.raises(PeerError, match="same job twice"):
        api.submit_many([good[0], good[0]])
    assert {j["job_id"] for j in api.jobs()} == known  # nothing was escrowed or announced
    answers = api.submit_many(good)
    assert [a.get("error") for a in answers] == [None] * 3
    for a in answers:
        assert api.wait_job(a["job_id"], ("settled", "refunded", "failed"), 90)["state"] == "settled"
    assert api.status()["net"]["batches_out"] >= 1  # the three announcements left batched


def test_cli_status_nodes_jobs(cluster: Cluster) -> None:
    import json
    import subprocess
    import sys

    d = str(cluster.nodes[0].data_dir)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "sandrun_p2p", *args], capture_output=True, text=True, timeout=60
        )

    st = json.loads(cli("status", "--data-dir", d, "--json").stdout)
    assert st["node_id"] == cluster.nodes[0].node_id.hex() and st["chain"] == "fake"
    assert "network" in st["enforced"] and st["gpus"] == []
    text = cli("status", "--data-dir", d).stdout
    assert "peers" in text and "sandbox" in text and "gpus      none" in text
    assert (
        st["vouchers_blocked"] == {}
    )  # (no voucher payer here; shown when an executor's batch failed its audit)
    from sandrun_p2p.agent.cli_status import render

    st["vouchers_blocked"] = {"0x" + "ab" * 20: "its batch 3 could not be verified"}
    assert f"no vouchers for 0x{'ab' * 20}: its batch 3 could not be verified" in render(st)
    nodes = json.loads(cli("nodes", "--data-dir", d, "--json").stdout)["nodes"]
    assert len(nodes) == len(cluster.nodes)
    jobs = json.loads(cli("jobs", "--data-dir", d, "--json").stdout)["jobs"]
    assert all("reason" in j and "state" in j for j in jobs)
    assert "job" in cli("jobs", "--data-dir", d).stdout
    bad = cli("status", "--data-dir", str(cluster.root / "nowhere"))
    assert bad.returncode == 1 and "no running agent in" in bad.stderr


def _announce(api, body: dict) -> dict:
    return api._call("POST", "/v1/announce", json=body)


def _client_spec(cluster: Cluster, code_cid: str, exclude: set[int], **extra) -> JobSpec:
    """A k=1 spec (as a client builds it) whose HRW winner under the fake seed is not in ``exclude``."""
    ids = [n.node_id for n in cluster.nodes]
    banned = {cluster.nodes[i].node_id for i in exclude}
    deadline = int(time.time()) + 90
    for i in range(200):
        spec = JobSpec.from_dict(
            {
                "code_cid": code_cid,
                "manifest": hello_job()["manifest"],
                "redundancy": 1,
                "deadline": deadline,
                "nonce": b"announce" + i.to_bytes(4, "big"),
                "payment_wei": 10**15,
                **extra,
            }
        )
        if rank(spec.job_id, fake_seed(spec.job_id), ids)[0] not in banned:
            return spec
    raise AssertionError("no nonce gives the wanted ranking")


def _fund(cluster: Cluster, spec: JobSpec, payment: int) -> None:
    """Escrow as a client would (straight on the fake chain, not through any node)."""
    import httpx

    r = httpx.post(
        cluster.chain_url + "/fund",
        json={
            "job": spec.job_id.hex(),
            "payment": payment,
            "k": spec.redundancy,
            "q": spec.quorum,
            "deadline": spec.deadline,
            "origin": "00" * 32,
        },
        timeout=10,
    )
    assert r.status_code == 200, r.text


def _wire(spec: JobSpec) -> dict:
    d = spec.to_dict()
    d["nonce"] = spec.nonce.hex()
    return d


def test_announce_client_escrowed_encrypted_job(cluster: Cluster) -> None:
    """POST /v1/announce: 400 probe, 409 until funded as the spec says, then the origin grants the bundle key
    to a winner elsewhere, which opens the bundle and runs it; the seed is the chain's."""
    import os
    import stat

    from sandrun_p2p.client.peer import PeerError
    from sandrun_p2p.store import crypto

    origin = cluster.nodes[0]
    api = origin.api
    with pytest.raises(PeerError, match="HTTP 400.*spec"):
        _announce(api, {})
    key = crypto.new_bundle_key()
    code_cid = api.put_blob(crypto.seal_bundle(HELLO, key))
    spec = _client_spec(cluster, code_cid, {0, FAULTY}, encrypted=True)
    with pytest.raises(PeerError, match="HTTP 400.*bundle_key"):
        _announce(api, {"spec": _wire(spec)})  # encrypted, no key: nobody could run it
    with pytest.raises(PeerError, match="HTTP 400.*bundle_key must be"):
        _announce(api, {"spec": _wire(spec), "bundle_key": "zz"})
    with pytest.raises(PeerError, match="HTTP 400.*nonce must be hex"):
        _announce(api, {"spec": {**_wire(spec), "nonce": "xyz"}, "bundle_key": key.hex()})
    with pytest.raises(PeerError, match="HTTP 409.*not funded"):
        _announce(api, {"spec": _wire(spec), "bundle_key": key.hex()})
    cheap = _client_spec(cluster, code_cid, set(), encrypted=True, payment_wei=2 * 10**15)
    _fund(cluster, cheap, 10**15)
    with pytest.raises(PeerError, match=r"HTTP 409.*not funded.*escrow: chain 1000000000000000 wei"):
        _announce(api, {"spec": _wire(cheap), "bundle_key": key.hex()})

    _fund(cluster, spec, spec.payment_wei)
    r = _announce(api, {"spec": _wire(spec), "bundle_key": key.hex()})
    assert r == {"job_id": spec.job_id.hex(), "seed": fake_seed(spec.job_id).hex(), "deadline": spec.deadline}
    kf = origin.data_dir / "keys" / f"{spec.job_id.hex()}.key"
    assert kf.read_bytes() == key and stat.S_IMODE(os.stat(kf).st_mode) == 0o600
    with pytest.raises(PeerError, match="HTTP 409.*already known"):
        _announce(api, {"spec": _wire(spec), "bundle_key": key.hex()})
    j = api.wait_job(spec.job_id.hex(), ("settled", "refunded", "failed"), 60)
    assert j["state"] == "settled", j
    assert j["winners"] not in ([origin.node_id.hex()], [cluster.nodes[FAULTY].node_id.hex()])
    assert j["origin"] == origin.node_id.hex()
    winner = next(n for n in cluster.nodes if n.node_id.hex() == j["winners"][0])
    assert f"event=granted job={spec.job_id.hex()[:16]}" in (origin.data_dir / "agent.log").read_text()
    assert not (winner.data_dir / "keys").exists()  # an executor keeps no key on disk
    assert not kf.exists()  # nor the origin once the job ended


def test_status_names_the_chain(cluster: Cluster) -> None:
    info = cluster.nodes[0].api.status()["chain_info"]
    assert info == {"rpc": cluster.chain_url, "market": None, "kind": "fake", "chain_id": None}

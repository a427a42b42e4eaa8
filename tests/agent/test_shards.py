"""S = 64 job shards (shard_bits = 6) with real agent processes: a job travels only on its shard's topic, is run
by the nodes that serve that shard and settles as with S = 1; a node serving another shard never sees it."""

from __future__ import annotations

import base64
import time

import pytest

from sandrun_p2p.protocol.claiming import shard_of
from sandrun_p2p.protocol.jobspec import JobSpec
from sandrun_p2p.store import cid_of_bytes

from .cluster import HELLO, hello_job, start_cluster, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

BITS = 6


def test_job_settles_on_its_shard_of_64(tmp_path) -> None:
    deadline = int(time.time()) + 200
    manifest = hello_job()["manifest"]
    spec = JobSpec.from_dict(
        {
            "code_cid": cid_of_bytes(HELLO),
            "manifest": manifest,
            "redundancy": 2,
            "deadline": deadline,
            "nonce": b"shards",
            "payment_wei": 10**15,
        }
    )
    s = shard_of(spec.job_id, BITS)
    # node 0 (the origin) serves all 64 shards, node 1 the job's shard and another, node 2 another one only
    shards = {0: list(range(2**BITS)), 1: sorted({s, (s + 7) % 2**BITS}), 2: [(s + 1) % 2**BITS]}
    cluster = start_cluster(tmp_path / "net", 3, core={"shard_bits": BITS}, shards=shards)
    try:
        cluster.wait_ready(90)
        cluster.wait_mesh(60)
        origin, runner, outsider = cluster.nodes
        adverts = {d["node_id"]: d for d in origin.api.nodes()}
        assert adverts[outsider.node_id.hex()]["shards"] == [(s + 1) % 2**BITS]
        body = {
            "manifest": manifest,
            "bundle_b64": base64.b64encode(HELLO).decode(),
            "redundancy": 2,
            "deadline": deadline,
            "nonce": b"shards".hex(),
            "payment_wei": 10**15,
        }
        r = origin.api.submit(**body)
        assert r["job_id"] == spec.job_id.hex()
        j = origin.api.wait_job(r["job_id"], ("settled", "refunded", "failed"), 120)
        assert j["state"] == "settled", [(e["state"], e["node"][:12], e["detail"][:50]) for e in j["events"]]
        # the two nodes that serve the shard ran it (k = 2 of exactly two eligible) and were paid
        assert sorted(j["chain"]["paid"]) == sorted([origin.node_id.hex(), runner.node_id.hex()])
        wait_for(
            lambda: runner.api.job(r["job_id"])["state"] == "settled", 30, "the runner to see the settlement"
        )
        # the node of another shard: not eligible, and the job's messages never reached it
        assert all(x["job_id"] != r["job_id"] for x in outsider.api.jobs())
        assert outsider.api.events(job=r["job_id"])["events"] == []
    finally:
        cluster.stop()

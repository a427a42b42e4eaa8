"""Equivocation evidence on chain: reveals carry the executor's chain attestation, and two conflicting reveals
seen by NodeCore become a ``slashEquivocation`` transaction that takes the executor's whole stake."""

from __future__ import annotations

import pytest
import trio

from sandrun_p2p.agent.chainlink import ChainLink
from sandrun_p2p.agent.evidence import EvidenceError, attestation_pair, with_attestation
from sandrun_p2p.chain.errors import ChainError
from sandrun_p2p.protocol import messages as m
from sandrun_p2p.protocol.errors import ProtocolError
from sandrun_p2p.protocol.events import Received, SubmitJob, SubmitTx
from sandrun_p2p.protocol.identity import NodeKey
from sandrun_p2p.protocol.memnet import CPU, make_spec
from sandrun_p2p.protocol.node import CoreConfig, NodeCore
from sandrun_p2p.protocol.verification import commitment

pytestmark = pytest.mark.timeout(120)

SEED = b"\x07" * 32
ROOT_A, ROOT_B, SALT = b"\xaa" * 32, b"\xbb" * 32, b"\x5a" * 32


def reveal_body(jid: bytes, root: bytes) -> dict:
    return {"job": jid, "root": root, "salt": SALT, "trace_cid": "t", "result_cid": "r"}


def test_reveals_carry_an_attestation_and_other_messages_do_not() -> None:
    jid = b"\x01" * 32
    calls = []

    def attest(job: bytes, root: bytes) -> bytes:
        calls.append((job, root))
        return b"\x11" * 65

    assert with_attestation(attest, m.REVEAL, reveal_body(jid, ROOT_A))["attest"] == b"\x11" * 65
    assert calls == [(jid, ROOT_A)]
    commit = {"job": jid, "commitment": b"\x01" * 32}
    assert with_attestation(attest, m.COMMIT, commit) == commit
    assert with_attestation(None, m.REVEAL, reveal_body(jid, ROOT_A)) == reveal_body(jid, ROOT_A)
    key = NodeKey.from_seed(b"\x03" * 32)
    m.decode(m.encode(key, m.REVEAL, reveal_body(jid, ROOT_A), 1, 0))  # old reveals (no attest) stay valid
    with pytest.raises(ProtocolError):
        m.encode(key, m.REVEAL, {**reveal_body(jid, ROOT_A), "attest": b"\x11" * 64}, 2, 0)


def equivocation_seen_by_core(offender: NodeKey, attest) -> tuple[SubmitTx, bytes]:
    """An observer's NodeCore sees ``offender`` claim, commit to ROOT_A, reveal it, then reveal ROOT_B."""
    me = NodeKey.from_seed(b"\x01" * 32)
    core = NodeCore(me.node_id, CPU, CoreConfig())
    spec = make_spec(7, k=1)
    jid = spec.job_id
    seq = iter(range(1, 100))

    def send(kind: str, body: dict, at: float) -> list:
        body = with_attestation(attest, kind, body)
        return core.handle(Received(m.decode(m.encode(offender, kind, body, next(seq), 0))), at)

    send(
        m.ADVERT,
        {"caps": CPU.to_dict(), "shard_bits": 0, "shards": [], "eth": b"", "interval": 10, "load": 0},
        0,
    )
    core.caps = None  # the offender is the only eligible node
    core.handle(SubmitJob(spec, SEED), 0.0)
    send(m.CLAIM, {"job": jid, "caps": CPU.to_dict()}, 0.1)
    send(m.COMMIT, {"job": jid, "commitment": commitment(jid, offender.node_id, ROOT_A, SALT)}, 1.0)
    send(m.REVEAL, reveal_body(jid, ROOT_A), 1.1)
    out = send(m.REVEAL, reveal_body(jid, ROOT_B), 1.2)
    slashes = [a for a in out if isinstance(a, SubmitTx) and a.kind == "slash"]
    assert len(slashes) == 1 and slashes[0].args["kind"] == "equivocation"
    return slashes[0], me.node_id


def test_conflicting_reveals_slash_the_executor_on_chain() -> None:
    link = ChainLink({})  # the reporter, on an embedded chain with its own deployment
    offender_key = NodeKey.from_seed(b"\x02" * 32)
    offender = link.market.as_(link.chain.dev_signers()[2])
    offender.register(offender_key.node_id, link.stake)
    tx, reporter_id = equivocation_seen_by_core(
        offender_key, lambda job, root: offender.attest(job, root).signature
    )
    client = link.market.as_(link.chain.dev_signers()[3])
    client.post_job(tx.job_id, 1, 1, link.chain.now() + 500, 10**15)

    async def main() -> None:
        receipt = await link.submit(reporter_id, tx)
        assert receipt.startswith("0x"), receipt
        updates = [u for u in await link.poll() if u.kind == "slashed"]
        assert [(u.job_id, u.node, u.data["reason"]) for u in updates] == [
            (tx.job_id, offender_key.node_id, "equivocation")
        ]
        # a second observer posting the same evidence is told it was first posted by another node
        assert "first" in await link.submit(reporter_id, tx)

    trio.run(main)
    assert offender.node().stake == 0


def test_reveals_without_attestations_are_not_provable_on_chain() -> None:
    tx, _ = equivocation_seen_by_core(NodeKey.from_seed(b"\x04" * 32), None)
    with pytest.raises(EvidenceError, match="no two chain attestations"):
        attestation_pair(tx.args["evidence"])
    link = ChainLink({})
    with pytest.raises(ChainError, match="not provable on chain"):
        trio.run(link.submit, b"\x01" * 32, tx)

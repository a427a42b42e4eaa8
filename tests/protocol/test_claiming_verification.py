"""Claim ranking and fallback; commit/reveal; the quorum rule."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandrun_p2p.protocol import claiming
from sandrun_p2p.protocol.claiming import Capabilities, Gpu
from sandrun_p2p.protocol.errors import ProtocolError
from sandrun_p2p.protocol.jobspec import Manifest
from sandrun_p2p.protocol.verification import Decision, Outcome, commitment, decide, reveal_matches

h32 = st.binary(min_size=32, max_size=32)
SAFE = frozenset({"network"})


@given(h32, h32, st.lists(h32, min_size=1, max_size=30, unique=True), st.randoms(use_true_random=False))
def test_every_order_of_the_same_view_gives_the_same_ranking(job, seed, nodes, rnd):
    shuffled = list(nodes)
    rnd.shuffle(shuffled)
    assert claiming.rank(job, seed, nodes) == claiming.rank(job, seed, shuffled)
    assert claiming.top_claimants(job, seed, shuffled, 2) == claiming.rank(job, seed, nodes)[:2]


def test_ranking_depends_on_the_seed_the_client_cannot_choose():
    nodes = [bytes([i]) * 32 for i in range(20)]
    a = claiming.rank(b"j" * 32, b"\x01" * 32, nodes)
    b = claiming.rank(b"j" * 32, b"\x02" * 32, nodes)
    assert sorted(a) == sorted(b) and a != b


def test_a_set_ranked_in_any_order_is_ranked_once_and_repeated_ids_are_kept():
    job, seed = b"m" * 32, b"\x03" * 32
    nodes = [bytes([i]) * 32 for i in range(20)]
    a = claiming.rank(job, seed, nodes)
    assert claiming.rank(job, seed, nodes[::-1]) is a  # shared by the nodes of a shard (in one process)
    assert claiming.rank(job, seed, nodes[::-1], frozenset(nodes)) is a  # a caller may pass the set it keeps
    assert a == sorted(nodes, key=lambda n: claiming.hrw_score(job, seed, n), reverse=True)
    assert sorted(claiming.rank(job, seed, nodes[:3] + nodes[:1])) == sorted(nodes[:3] + nodes[:1])


def test_fallback_schedule():
    assert [claiming.claim_delay(p, 2, 1.5) for p in range(5)] == [0, 0, 1.5, 3.0, 4.5]


def test_shards_split_by_job_id_prefix():
    assert claiming.shard_of(b"\xff\xff" + b"\x00" * 30, 0) == 0
    assert claiming.shard_of(b"\xff\xff" + b"\x00" * 30, 6) == 63
    assert claiming.shard_of(b"\x04\x00" + b"\x00" * 30, 6) == 1


def test_eligibility_checks_enforcement_resources_and_gpus():
    cpu_job = Manifest.from_dict({"entrypoint": "a.py", "memory_mb": 2048, "cpu": 2})
    gpu_job = Manifest.from_dict(
        {
            "entrypoint": "a.py",
            "gpu": {"required": True, "min_vram_gb": 16, "compute_capability": "8.0", "cuda_version": "12.0"},
        }
    )
    small = Capabilities(cpus=1, mem_mb=4096, enforced=SAFE)
    unsafe = Capabilities(cpus=8, mem_mb=8192)
    t4 = Capabilities(cpus=8, mem_mb=8192, gpus=(Gpu("T4", 16384, "7.5", "12.2"),), enforced=SAFE)
    a100 = Capabilities(cpus=8, mem_mb=8192, gpus=(Gpu("A100", 81920, "8.0", "12.2"),), enforced=SAFE)
    assert claiming.ineligibility(small, cpu_job) == "1 CPUs < 2"
    assert claiming.ineligibility(unsafe, cpu_job) == "does not enforce network"
    assert claiming.ineligibility(small, gpu_job) == "no GPU meets the requirement"
    assert claiming.ineligibility(t4, gpu_job) == "0 fitting GPU(s) < 1"
    assert claiming.eligible(a100, gpu_job) and claiming.eligible(a100, cpu_job)


@given(h32, h32, h32, h32, h32)
def test_a_copied_commitment_never_verifies_for_the_copier(job, honest, copier, root, salt):
    if honest == copier:
        return
    c = commitment(job, honest, root, salt)
    assert reveal_matches(c, job, honest, root, salt)
    assert not reveal_matches(c, job, copier, root, salt)


def test_commitment_rejects_wrong_lengths():
    with pytest.raises(ProtocolError):
        commitment(b"j" * 31, b"n" * 32, b"r" * 32, b"s" * 32)
    assert not reveal_matches(b"x" * 32, b"j" * 31, b"n" * 32, b"r" * 32, b"s" * 32)


@given(
    st.integers(1, 5).flatmap(
        lambda k: st.tuples(
            st.just(k),
            st.integers(k // 2 + 1, k),
            st.lists(st.sampled_from([b"A" * 32, b"B" * 32, b"C" * 32]), max_size=k),
            st.booleans(),
        )
    )
)
def test_quorum_never_accepts_a_minority_result(case):
    k, q, roots, final = case
    reveals = {bytes([i]) * 32: r for i, r in enumerate(roots)}
    d = decide(reveals, k, q, final)
    if d.outcome is Outcome.ACCEPTED:
        votes = sum(1 for r in roots if r == d.root)
        assert votes >= q and votes * 2 > k
        assert set(d.agreeing) == {n for n, r in reveals.items() if r == d.root}
        assert set(d.dissenting) == set(reveals) - set(d.agreeing)
    elif d.outcome is Outcome.PENDING:
        assert not final


def test_decide_cases():
    a, b, c = (bytes([i]) * 32 for i in range(3))
    assert decide({a: b"R" * 32}, 1, 1).outcome is Outcome.ACCEPTED
    assert decide({a: b"R" * 32}, 3, 2).outcome is Outcome.PENDING
    d = decide({a: b"R" * 32, b: b"S" * 32}, 3, 2)
    assert d.outcome is Outcome.PENDING
    d = decide({a: b"R" * 32, b: b"S" * 32, c: b"T" * 32}, 3, 2)
    assert d.outcome is Outcome.FAILED and "best agreement 1" in d.reason
    d = decide({a: b"R" * 32, b: b"S" * 32, c: b"R" * 32}, 3, 2)
    assert (d.outcome, d.root, d.dissenting) == (Outcome.ACCEPTED, b"R" * 32, (b,))
    assert decide({a: b"R" * 32}, 3, 2, final=True).outcome is Outcome.FAILED
    # no reveal yet (the shortcut): pending, or failed once final
    assert decide({}, 3, 2) == Decision(Outcome.PENDING, None, (), ())
    d = decide({}, 1, 1, final=True)
    assert (
        d.outcome is Outcome.FAILED and d.reason == "no quorum: 0 of 1 revealed, best agreement 0, quorum 1"
    )
    with pytest.raises(ProtocolError):
        decide({}, 3, 1)


def test_widened_seed_depends_on_job_and_chain_seed():
    a = claiming.widen_seed(b"j" * 32, b"\x01" * 8)
    assert len(a) == 32
    assert a != claiming.widen_seed(b"k" * 32, b"\x01" * 8) != claiming.widen_seed(b"j" * 32, b"\x02" * 8)


def test_computation_digest_ignores_only_the_job_id():
    from sandrun_p2p.protocol.trace import OutputFile, Trace, computation_digest

    a = Trace(b"\x01" * 32, b"e" * 32, "exited", 0, b"o" * 32, b"r" * 32, (OutputFile("x", 1, b"h" * 32),))
    same_run_other_job = Trace(
        b"\x02" * 32,
        *[
            getattr(a, f)
            for f in ("env_digest", "status", "exit_code", "stdout_sha256", "stderr_sha256", "outputs")
        ],
    )
    assert a.root != same_run_other_job.root
    assert computation_digest(a) == computation_digest(same_run_other_job)
    other_output = Trace(
        b"\x01" * 32, b"e" * 32, "exited", 0, b"o" * 32, b"r" * 32, (OutputFile("x", 1, b"i" * 32),)
    )
    assert computation_digest(other_output) != computation_digest(a)


def test_in_shards_picks_a_nonce_in_a_served_shard_deterministically():
    from sandrun_p2p.protocol.jobspec import JobSpec

    fields = {
        "code_cid": "bafkreiexamplecode",
        "manifest": {"entrypoint": "main.py"},
        "deadline": 2_000_000_000,
        "nonce": b"\x01" * 16,
    }
    spec = JobSpec.from_dict(fields)
    served = {claiming.shard_of(spec.job_id, 4) ^ 1}  # not the shard the first nonce gives
    got = claiming.in_shards(spec, fields, 4, served.__contains__)
    assert claiming.shard_of(got.job_id, 4) in served and got.nonce != spec.nonce
    # the next nonces hash from the first
    assert claiming.in_shards(spec, fields, 4, served.__contains__) == got
    assert claiming.in_shards(spec, fields, 4, lambda s: True) is spec  # already fits: unchanged

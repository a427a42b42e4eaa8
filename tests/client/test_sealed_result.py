"""Results sealed to the client's per-job key: the agent seals (agent.grants.seal_result), the client opens
(client.verify.open_result) and then verifies the plaintext against the accepted trace root."""

from __future__ import annotations

from pathlib import Path

import pytest
from nacl.signing import SigningKey

from sandrun_p2p.agent.grants import seal_result
from sandrun_p2p.client.errors import ResultRejected
from sandrun_p2p.client.records import JobRecord
from sandrun_p2p.client.verify import open_result, verify_and_write
from sandrun_p2p.store import crypto
from sandrun_p2p.store.bundle import unpack
from sandrun_p2p.store.errors import StoreError

from .helpers import make_result, spec_for, tar_of

SEED = b"\x11" * 32
PUB = bytes(SigningKey(SEED).verify_key)


def sealed_job(tmp: Path) -> tuple:
    spec = spec_for(result_key=PUB)
    stage, trace = make_result(tmp, spec)
    return spec, stage, trace, seal_result(stage, spec.result_key)


def test_sealed_result_opens_and_verifies_against_the_plaintext_root(tmp_path: Path) -> None:
    spec, stage, trace, sealed = sealed_job(tmp_path)
    assert sealed.startswith(crypto.SEALED_MAGIC)
    with pytest.raises(StoreError, match="not a readable tar"):  # the stored bytes are not a tar
        unpack(sealed, tmp_path / "x")
    assert b"alpha" not in sealed and b"trace.cbor" not in sealed
    plain = open_result(sealed, spec, SEED)
    assert plain == tar_of(stage)  # the deterministic tar of exactly what the unsealed path stores
    got = verify_and_write(plain, spec, trace.root, tmp_path / "dest")
    assert got.root == trace.root and (tmp_path / "dest/out/a.txt").read_text() == "alpha\n"


def test_sealing_twice_gives_different_ciphertexts_of_the_same_plaintext(tmp_path: Path) -> None:
    spec, stage, _, sealed = sealed_job(tmp_path)
    again = seal_result(stage, spec.result_key)
    assert again != sealed  # ephemeral sender key: the CIDs differ, the trace root does not
    assert open_result(again, spec, SEED) == open_result(sealed, spec, SEED)


def test_a_record_whose_key_is_not_the_specs_is_refused(tmp_path: Path) -> None:
    spec, _, _, sealed = sealed_job(tmp_path)
    with pytest.raises(ResultRejected, match="not the one the job spec names"):
        open_result(sealed, spec, b"\x22" * 32)


def test_a_result_sealed_to_another_key_is_refused(tmp_path: Path) -> None:
    spec, stage, _, _ = sealed_job(tmp_path)
    other = seal_result(stage, bytes(SigningKey(b"\x33" * 32).verify_key))
    with pytest.raises(ResultRejected, match="cannot be opened with this job's result key"):
        open_result(other, spec, SEED)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda b: b[:-1] + bytes([b[-1] ^ 1]),  # a flipped ciphertext bit
        lambda b: b[: len(b) // 2],  # truncated
        lambda b: b[len(crypto.SEALED_MAGIC) :],  # header stripped
    ],
)
def test_tampered_ciphertext_is_refused(tmp_path: Path, tamper) -> None:
    spec, _, _, sealed = sealed_job(tmp_path)
    with pytest.raises(ResultRejected, match="cannot be opened with this job's result key"):
        open_result(tamper(sealed), spec, SEED)


def test_a_plaintext_result_for_a_sealed_job_is_refused(tmp_path: Path) -> None:
    """An executor that ignored result_key and stored the tar in the clear is not accepted."""
    spec, stage, _, _ = sealed_job(tmp_path)
    with pytest.raises(ResultRejected, match="not a sealed result"):
        open_result(tar_of(stage), spec, SEED)


def test_the_record_keeps_the_key_and_the_spec_round_trips(tmp_path: Path) -> None:
    spec = spec_for(result_key=PUB)
    rec = JobRecord(
        job_id=spec.job_id.hex(), spec=JobRecord.spec_dict(spec), peer="x", result_seed=SEED.hex()
    )
    assert rec.spec["result_key"] == PUB.hex()  # JSON-safe
    assert rec.job_spec() == spec and rec.job_spec().job_id == spec.job_id
    assert "result_seed" not in rec.public()

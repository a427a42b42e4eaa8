"""JobSpec.result_key: the client's per-job key that executors seal results to (issue 4, item 4)."""

import pytest
from nacl.signing import SigningKey

from sandrun_p2p.protocol.encoding import tagged_hash
from sandrun_p2p.protocol.errors import SpecError
from sandrun_p2p.protocol.jobspec import JobSpec

BASE = {
    "code_cid": "bafkreiabcdefgh",
    "manifest": {"entrypoint": "main.py"},
    "deadline": 10**9,
    "nonce": b"n",
}
KEY = bytes(SigningKey(b"\x07" * 32).verify_key)


def test_absent_result_key_leaves_the_job_id_unchanged():
    s = JobSpec.from_dict(BASE)
    assert s.result_key == b""
    assert "result_key" not in s.to_dict()
    # the id a spec without the field had before the field existed: the tagged hash of the same dict
    legacy = {
        **BASE,
        "manifest": s.manifest.to_dict(),
        "redundancy": 1,
        "quorum": 1,
        "payment_wei": 0,
        "encrypted": False,
    }
    assert s.job_id == tagged_hash("job", legacy)


def test_result_key_round_trips_and_changes_the_job_id():
    s = JobSpec.from_dict({**BASE, "result_key": KEY})
    assert s.result_key == KEY and s.to_dict()["result_key"] == KEY
    assert JobSpec.from_dict(s.to_dict()) == s
    other = bytes(SigningKey(b"\x08" * 32).verify_key)
    ids = {JobSpec.from_dict(BASE).job_id, s.job_id, JobSpec.from_dict({**BASE, "result_key": other}).job_id}
    assert len(ids) == 3


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (KEY[:31], "32-byte Ed25519 public key, got 31 bytes"),
        (KEY + b"\x00", "got 33 bytes"),
        (b"", "got 0 bytes"),
        (b"\x00" * 32, "not a valid Ed25519 public key"),
        (KEY.hex(), "'result_key' must be bytes"),
    ],
)
def test_bad_result_keys_are_refused_with_a_reason(value, message):
    with pytest.raises(SpecError, match=message):
        JobSpec.from_dict({**BASE, "result_key": value})

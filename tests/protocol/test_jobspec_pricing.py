"""Job manifests and specs: validation errors people can act on; stable job ids; price quotes."""

from fractions import Fraction

import pytest
from nacl.signing import SigningKey

from sandrun_p2p.protocol.errors import SpecError
from sandrun_p2p.protocol.jobspec import JobSpec, Manifest
from sandrun_p2p.protocol.pricing import PriceTable, quote, usage_charge

BASE = {"code_cid": "bafkreiabcdefgh", "manifest": {"entrypoint": "main.py"}, "deadline": 10**9}


def spec(**over):
    d = {**BASE, **over}
    return JobSpec.from_dict(d)


def test_job_id_is_stable_and_covers_every_field():
    a = spec(redundancy=3, nonce=b"1")
    assert a.job_id == spec(redundancy=3, nonce=b"1").job_id
    assert JobSpec.from_dict(a.to_dict()) == a
    others = [
        spec(redundancy=3, nonce=b"2"),
        spec(redundancy=2, nonce=b"1"),
        spec(redundancy=3, nonce=b"1", deadline=5),
    ]
    assert len({a.job_id, *(o.job_id for o in others)}) == 4
    assert a.quorum == 2


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ({}, "missing 'entrypoint'"),
        ({"entrypoint": 5}, "'entrypoint' must be str"),
        ({"entrypoint": "../x.py"}, "relative path"),
        ({"entrypoint": "/etc/passwd"}, "relative path"),
        ({"entrypoint": "a.py", "timeout": 0}, "timeout must be between"),
        ({"entrypoint": "a.py", "timeout": 10**9}, "timeout must be between"),
        ({"entrypoint": "a.py", "timeout": True}, "got bool"),
        ({"entrypoint": "a.py", "memory_mb": 10**9}, "memory_mb must be between"),
        ({"entrypoint": "a.py", "cpu": 0}, "cpu must be between"),
        ({"entrypoint": "a.py", "interpreter": "perl"}, "interpreter must be one of"),
        ({"entrypoint": "a.py", "env": {"1BAD": "x"}}, "not a valid variable name"),
        ({"entrypoint": "a.py", "env": {"SANDRUN_KEY": "x"}}, "reserved"),
        ({"entrypoint": "a.py", "env": {"A": 1}}, "must be a string"),
        ({"entrypoint": "a.py", "outputs": "*.txt"}, "'outputs' must be list"),
        ({"entrypoint": "a.py", "gpu": {"required": True, "min_vram_gb": -1}}, "min_vram_gb"),
        ({"entrypoint": "a.py", "gpu": {"compute_capability": "eight"}}, "compute_capability"),
        ({"entrypoint": "a.py", "colour": "red"}, "unknown field(s) colour"),
        ({"entrypoint": "a.py", "compare": {"digits": 40}}, "digits"),
    ],
)
def test_bad_manifests_are_explained(manifest, message):
    with pytest.raises(SpecError) as e:
        Manifest.from_dict(manifest)
    assert message in str(e.value)


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"redundancy": 0}, "redundancy must be between 1 and 5"),
        ({"redundancy": 6}, "redundancy must be between 1 and 5"),
        ({"redundancy": 3, "quorum": 1}, "strict majority"),
        ({"redundancy": 2, "quorum": 1}, "strict majority"),
        ({"redundancy": 3, "quorum": 4}, "strict majority"),
        ({"code_cid": "not a cid!"}, "is not a CID"),
        ({"nonce": b"x" * 33}, "nonce"),
        ({"payment_wei": -1}, "payment_wei"),
        ({"deadline": -5}, "deadline"),
        ({"deadline": 0}, "deadline"),
        ({"manifest": []}, "'manifest' must be dict"),
    ],
)
def test_bad_specs_are_explained(over, message):
    with pytest.raises(SpecError) as e:
        spec(**over)
    assert message in str(e.value)


def test_sandrun_environment_field_is_accepted_as_env():
    assert Manifest.from_dict({"entrypoint": "a.py", "environment": {"X": "1"}}).env == (("X", "1"),)


def test_quote_follows_the_rate_table():
    cpu = Manifest.from_dict({"entrypoint": "a.py", "timeout": 100, "memory_mb": 500})
    q = quote(cpu, redundancy=3, usd_per_eth=2000)
    # (100 s x $0.001 + 500 MB x $0.0001) x 3 = $0.45
    assert q.usd == Fraction(45, 100)
    assert q.wei == 45 * 10**16 // 2000 * 1  # $0.45 / $2000 per ETH
    prio = Manifest.from_dict({"entrypoint": "a.py", "timeout": 100, "memory_mb": 500, "priority": True})
    assert quote(prio, 1).usd == Fraction(3, 10)
    t4 = Manifest.from_dict(
        {"entrypoint": "a.py", "timeout": 10, "memory_mb": 100, "gpu": {"required": True, "min_vram_gb": 8}}
    )
    assert (quote(t4, 1).usd, quote(t4, 1).gpu_class) == (Fraction(11, 100), "T4")
    a100 = Manifest.from_dict(
        {
            "entrypoint": "a.py",
            "timeout": 10,
            "memory_mb": 100,
            "gpu": {"required": True, "compute_capability": "8.0"},
        }
    )
    assert (quote(a100, 1).usd, quote(a100, 1).gpu_class) == (Fraction(51, 100), "A100")


def test_operator_price_table_and_impossible_gpu():
    table = PriceTable.from_dict({"cpu_usd_per_s": "0.002"})
    m = Manifest.from_dict({"entrypoint": "a.py", "timeout": 10, "memory_mb": 16})
    assert quote(m, 1, table=table).usd == Fraction(2, 100) + Fraction(16, 10000)
    huge = Manifest.from_dict({"entrypoint": "a.py", "gpu": {"required": True, "min_vram_gb": 500}})
    with pytest.raises(SpecError, match="no priced GPU class"):
        quote(huge, 1)


def test_usage_charge_prices_the_time_used_capped_by_the_share_and_nothing_for_limit_hits():
    m = Manifest.from_dict({"entrypoint": "a.py", "timeout": 100, "memory_mb": 100})
    pay = quote(m, 2).wei  # two executions at the full timeout
    used_10s = quote(Manifest.from_dict({"entrypoint": "a.py", "timeout": 10, "memory_mb": 100}), 1).wei
    assert usage_charge(m, 2, pay, "exited", 9.2) == used_10s < pay // 2
    assert usage_charge(m, 2, pay, "exited", 1000.0) == pay // 2  # never more than the share
    assert usage_charge(m, 2, pay, "oom", 3.0) == 0
    assert usage_charge(m, 2, pay, "timeout", 100.0) == 0


RESULT_KEY = bytes(SigningKey(b"\x05" * 32).verify_key)


@pytest.mark.parametrize(
    "over",
    [
        {},
        {"redundancy": 3, "nonce": b"\x00\x01"},
        {"manifest": {"entrypoint": "a.py", "env": {"A": "1"}, "outputs": ["*.txt"], "args": ["-v"]}},
        {"manifest": {"entrypoint": "a.py", "gpu": {"required": True, "min_vram_gb": 16, "count": 2}}},
        {
            "manifest": {
                "entrypoint": "a.py",
                "timeout": 7,
                "compare": {"digits": 3, "round_files": ["o.csv"]},
            }
        },
        {"executors": [b"\x01" * 32, b"\x02" * 32], "result_key": RESULT_KEY},
        {"pay": "voucher", "payment_wei": 10**15},
    ],
)
def test_job_id_is_the_tagged_hash_of_the_whole_canonical_spec(over):
    """The id embeds the manifest's encoding made once per manifest: the same bytes as encoding it in place."""
    from sandrun_p2p.protocol.encoding import canonical, tagged_hash

    s = spec(**over)
    whole = s.to_dict()
    assert s.job_id == tagged_hash("job", whole)
    assert s.manifest.encoded.raw == canonical(whole["manifest"])


def test_canonical_still_refuses_what_cbor_cannot_carry():
    from sandrun_p2p.protocol.encoding import canonical

    with pytest.raises(Exception, match="cannot serialize type object"):
        canonical({"x": object()})

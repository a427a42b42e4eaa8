"""Bounded memo tables (protocol/memo.py): the oldest entry goes first, a known key never evicts."""

from collections import OrderedDict

from sandrun_p2p.protocol.memo import remember


def test_the_oldest_entry_goes_when_a_new_key_would_exceed_the_size():
    t: OrderedDict[str, int] = OrderedDict()
    for i, k in enumerate("abc"):
        assert remember(t, k, i, 3) == i
    remember(t, "b", 10, 3)  # a known key: replaced in place, nothing dropped
    assert dict(t) == {"a": 0, "b": 10, "c": 2}
    remember(t, "d", 3, 3)
    assert list(t) == ["b", "c", "d"]


def test_a_primed_spec_is_cached_only_when_the_dict_parses_back_to_it():
    """An origin primes the parse cache with the spec it announces; a dict that does not parse, or parses to
    another spec, is not cached: parsing it still fails with the reason, or gives its own spec."""
    import pytest

    from sandrun_p2p.protocol.errors import SpecError
    from sandrun_p2p.protocol.jobspec import JobSpec
    from sandrun_p2p.protocol.memnet import make_spec
    from sandrun_p2p.protocol.node import _ParseCache

    cache = _ParseCache(JobSpec.from_dict)
    a, b = make_spec(1, k=1), make_spec(2, k=1)
    good = a.to_dict()
    cache.prime(good, a)
    assert cache(good) is a  # the very object (its job id computed once)
    bad = {**a.to_dict(), "redundancy": 99}
    cache.prime(bad, a)
    with pytest.raises(SpecError, match="redundancy"):
        cache(bad)
    other = b.to_dict()
    cache.prime(other, a)
    assert cache(other) == b and cache(other) is not a

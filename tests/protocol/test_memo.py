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

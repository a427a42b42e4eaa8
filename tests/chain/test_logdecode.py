"""The raw-log decoder's direct reading of 32-byte words: the same values as eth_abi, and a word that is not its
type's padded form refused as eth_abi refuses it (the fast path never accepts what eth_abi would not)."""

from __future__ import annotations

import pytest
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import to_checksum_address

from sandrun_p2p.chain import artifacts
from sandrun_p2p.chain.logdecode import decode_raw_log, event_shapes, topic_of
from sandrun_p2p.chain.market import CONTRACT

SHAPES = event_shapes(artifacts.load(CONTRACT)["abi"])
ADDR = to_checksum_address("0x" + "ab" * 20)


def _log(name: str, topics: list[bytes], data: bytes) -> dict:
    return {
        "topics": [topic_of(SHAPES, name)] + ["0x" + t.hex() for t in topics],
        "data": "0x" + data.hex(),
    }


def test_every_static_field_reads_as_eth_abi_decodes_it() -> None:
    job = bytes(range(32))
    data_types = ["uint8", "uint8", "uint32", "uint256", "bytes8"]
    values = [3, 2, 4_000_000_000, 2**255 + 7, b"\x01" * 8]
    data = abi_encode(data_types, values)
    name, args = decode_raw_log(SHAPES, _log("JobPosted", [job, abi_encode(["address"], [ADDR])], data))
    assert name == "JobPosted" and SHAPES[topic_of(SHAPES, "JobPosted")].static
    assert args["jobId"] == job and args["client"] == ADDR
    assert [args[k] for k, _ in SHAPES[topic_of(SHAPES, "JobPosted")].data] == list(
        abi_decode(data_types, data)
    )


def test_a_dynamic_event_still_goes_through_eth_abi() -> None:
    shape = SHAPES[topic_of(SHAPES, "JobClosed")]
    assert not shape.static
    values = [2, b"\x11" * 20, 1, 10**18, [5, 6, 7]]
    _, args = decode_raw_log(
        SHAPES, _log("JobClosed", [b"\x22" * 32], abi_encode(list(shape.data_types), values))
    )
    assert [args[k] for k, _ in shape.data] == [2, b"\x11" * 20, 1, 10**18, (5, 6, 7)]


@pytest.mark.parametrize(
    "word",
    [
        (256).to_bytes(32, "big"),  # a uint8 over 255
        b"\x01" + b"\x00" * 31,  # ... or with its high bytes set
    ],
)
def test_a_word_out_of_its_type_is_refused_as_eth_abi_refuses_it(word: bytes) -> None:
    data = word + abi_encode(["bytes32", "uint96"], [b"\x00" * 32, 1])
    with pytest.raises(Exception) as fast:
        decode_raw_log(SHAPES, _log("Committed", [b"\x33" * 32, (1).to_bytes(32, "big")], data))
    with pytest.raises(Exception) as slow:
        abi_decode(["uint8", "bytes32", "uint96"], data)
    assert type(fast.value) is type(slow.value)


def test_an_address_topic_with_high_bytes_set_is_refused() -> None:
    bad = b"\x01" + b"\x00" * 11 + bytes.fromhex("ab" * 20)
    with pytest.raises(Exception) as fast:
        decode_raw_log(
            SHAPES,
            _log(
                "JobPosted",
                [b"\x00" * 32, bad],
                abi_encode(["uint8"] * 2 + ["uint32", "uint256", "bytes8"], [1, 1, 1, 1, b"\x00" * 8]),
            ),
        )
    with pytest.raises(Exception) as slow:
        abi_decode(["address"], bad)
    assert type(fast.value) is type(slow.value)

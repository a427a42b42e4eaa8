"""Calldata built from the ABI tables is byte for byte what web3 builds, for every function of the market, and
arguments of the wrong type, size or number are refused."""

from __future__ import annotations

import pytest
from web3 import Web3

from sandrun_p2p.chain import artifacts
from sandrun_p2p.chain.abi import Calls, canonical_type
from sandrun_p2p.chain.market import CONTRACT

ABI = artifacts.load(CONTRACT)["abi"]
ADDR = "0x" + "Ab" * 20


def _sample(t: str, seed: int):
    if t.endswith("[]"):
        return [_sample(t[:-2], seed + i) for i in range(2)]
    if t.startswith("("):
        return tuple(_sample(x, seed + i) for i, x in enumerate(_split(t[1:-1])))
    if t == "address":
        return Web3.to_checksum_address("0x" + f"{seed:02x}" * 20)
    if t == "bytes":
        return bytes([seed % 256]) * 37
    if t.startswith("bytes"):
        return bytes([seed % 256]) * int(t[5:])
    if t.startswith("uint"):
        return (seed * 7919 + 1) % 2 ** int(t[4:])
    raise AssertionError(f"no sample for {t}")


def _split(inner: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur += ch
    return [*out, cur] if cur else out


def test_every_function_encodes_as_web3_does() -> None:
    contract = Web3().eth.contract(abi=ABI)
    calls = Calls(ABI)
    fns = [f for f in ABI if f.get("type") == "function"]
    assert fns and all(f["name"] in calls for f in fns)
    for n, f in enumerate(fns):
        args = tuple(_sample(canonical_type(i), n + j) for j, i in enumerate(f["inputs"]))
        want = getattr(contract.functions, f["name"])(*args)._encode_transaction_data()
        assert calls.data(f["name"], args) == want, f["name"]


@pytest.mark.parametrize(
    "args",
    [
        (b"\x01" * 33, 1, 1, 10),  # a bytes32 too long
        (b"\x01" * 31, 1, 1, 10),  # ... or too short (eth_abi alone would pad it)
        (b"\x01" * 32, 256, 1, 10),  # a uint8 out of range
        (b"\x01" * 32, 1, 1),  # one argument short
        ("not bytes", 1, 1, 10),
    ],
)
def test_bad_arguments_are_refused(args) -> None:
    with pytest.raises((TypeError, ValueError)):
        Calls(ABI).data("postJob", args)


def test_a_short_bytes32_inside_a_tuple_array_is_refused() -> None:
    """postJobs takes (bytes32 jobId, ...)[]: a 31-byte job id would be padded into another id by eth_abi."""
    good = (b"\x01" * 32, 1, 1, 10, 5)
    calls = Calls(ABI)
    assert calls.data("postJobs", ([good, good],)).startswith("0x")
    with pytest.raises(ValueError, match=r"postJobs: argument 0\[1\]\.jobId is 31 bytes, bytes32 takes 32"):
        calls.data("postJobs", ([good, (b"\x01" * 31, 1, 1, 10, 5)],))
    with pytest.raises(ValueError, match=r"commitRevealMany: argument 0\[0\]\.salt is 33 bytes"):
        calls.data("commitRevealMany", ([(b"\x01" * 32, b"\x02" * 32, b"\x03" * 33, 7)],))

"""The contract's ABI read once into tables: canonical type strings, and calldata for its functions.

web3's ``contract.functions.<name>(*args)._encode_transaction_data()`` looks the function up by name and
arguments and walks its validation and normalisation steps on every call (~0.29 ms of CPU); an agent builds the
calldata of ~2 transactions per job. :class:`Calls` keeps, per function whose name is not overloaded, its selector
and input types, and encodes with ``eth_abi`` directly (~0.01 ms): the same bytes (tested); arguments of the
wrong type, size or number raise ``TypeError`` / ``ValueError`` naming the function.
"""

from __future__ import annotations

from typing import Any

from eth_abi import encode as abi_encode
from eth_abi.exceptions import EncodingError
from eth_utils import keccak

#: Sizes of the elementary static types: ``bytesN`` in bytes, ``uintN`` in bits.
FIXED_BYTES = {f"bytes{n}": n for n in range(1, 33)}
UINT_BITS = {f"uint{n}": n for n in range(8, 257, 8)}


def canonical_type(item: dict[str, Any]) -> str:
    """An ABI input's type as it appears in signatures (tuples spelled out as ``(t1,t2,...)``)."""
    t = item["type"]
    if t.startswith("tuple"):
        inner = ",".join(canonical_type(c) for c in item["components"])
        return f"({inner}){t[5:]}"
    return t


class Calls:
    """Calldata of the functions of ``abi`` (those with one definition; an overloaded name is left to web3)."""

    def __init__(self, abi: list[dict[str, Any]]) -> None:
        seen: dict[str, int] = {}
        for item in abi:
            if item.get("type") == "function":
                seen[item["name"]] = seen.get(item["name"], 0) + 1
        self._fns: dict[str, tuple[bytes, list[str], list[dict[str, Any]]]] = {}
        for item in abi:
            if item.get("type") != "function" or seen[item["name"]] != 1:
                continue
            types = [canonical_type(i) for i in item["inputs"]]
            selector = keccak(text=f"{item['name']}({','.join(types)})")[:4]
            self._fns[item["name"]] = (selector, types, item["inputs"])

    def __contains__(self, name: str) -> bool:
        return name in self._fns

    def data(self, name: str, args: tuple[Any, ...]) -> str:
        """``0x``-hex calldata of ``name(*args)``; KeyError for a function not in the table."""
        selector, types, inputs = self._fns[name]
        if len(args) != len(types):
            raise TypeError(f"{name} takes {len(types)} arguments, not {len(args)}")
        for i, (item, v) in enumerate(zip(inputs, args, strict=True)):
            _check_sizes(item, v, f"{name}: argument {i}")
        try:
            return "0x" + (selector + abi_encode(types, list(args))).hex()
        except EncodingError as e:
            raise ValueError(f"{name}: {e}") from None


def _check_sizes(item: dict[str, Any], v: Any, where: str) -> None:
    """Refuse a ``bytesN`` value of another length, also inside tuples and arrays (eth_abi would pad a short
    value; web3, strict, refuses it: so does this). Other mismatches are left to eth_abi."""
    t = item["type"]
    if t.endswith("]"):
        if isinstance(v, list | tuple):
            element = {**item, "type": t[: t.rindex("[")]}
            for j, x in enumerate(v):
                _check_sizes(element, x, f"{where}[{j}]")
    elif t == "tuple":
        if isinstance(v, list | tuple) and len(v) == len(item["components"]):
            for c, x in zip(item["components"], v, strict=True):
                _check_sizes(c, x, f"{where}.{c['name']}")
    elif (size := FIXED_BYTES.get(t)) is not None and isinstance(v, bytes | bytearray) and len(v) != size:
        raise ValueError(f"{where} is {len(v)} bytes, {t} takes {size}")

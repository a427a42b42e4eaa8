"""Decoding the contract's raw ``eth_getLogs`` entries straight from their hex fields.

web3's ``ContractEvent.process_log`` (and the result formatters ``eth.get_logs`` applies) cost ~0.6 ms per log;
an agent polls every event of the market, so with ten nodes that was ~25 ms of CPU per job. Here a table built
once from the ABI maps topic0 to (name, indexed inputs, non-indexed inputs) and a log costs one ``eth_abi``
decode of its data (~20-40 us). The result is the same :class:`~sandrun_p2p.chain.market.Event` (addresses
checksummed, ``bytesN`` as bytes, arrays as tuples) as :meth:`Market.decode_logs` gives.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import keccak, to_checksum_address

from .abi import FIXED_BYTES, UINT_BITS, canonical_type


@dataclass(frozen=True)
class EventShape:
    name: str
    indexed: tuple[tuple[str, str], ...]  # (name, type) in topic order
    data: tuple[tuple[str, str], ...]  # (name, type) in data order
    data_types: tuple[str, ...]
    static: bool = False  # every data field one 32-byte word of an elementary type (read without eth_abi)


def event_shapes(abi: list[dict[str, Any]]) -> dict[str, EventShape]:
    """topic0 (as ``0x``-prefixed lowercase hex) -> shape, for every non-anonymous event of ``abi``."""
    out = {}
    for item in abi:
        if item.get("type") != "event" or item.get("anonymous"):
            continue
        types = [canonical_type(i) for i in item["inputs"]]
        topic = "0x" + keccak(text=f"{item['name']}({','.join(types)})").hex()
        indexed = tuple((i["name"], t) for i, t in zip(item["inputs"], types, strict=True) if i["indexed"])
        data = tuple((i["name"], t) for i, t in zip(item["inputs"], types, strict=True) if not i["indexed"])
        static = all(t in UINT_BITS or t in FIXED_BYTES or t in ("address", "bool") for _, t in data)
        out[topic] = EventShape(item["name"], indexed, data, tuple(t for _, t in data), static)
    return out


def topic_of(shapes: dict[str, EventShape], name: str) -> str:
    for topic, shape in shapes.items():
        if shape.name == name:
            return topic
    raise KeyError(f"no event {name!r} in the ABI")


def _hexbytes(v: Any) -> bytes:
    if isinstance(v, str):
        return bytes.fromhex(v[2:] if v.startswith("0x") else v)
    return bytes(v)


def _int(v: Any) -> int:
    return int(v, 16) if isinstance(v, str) else int(v)


@functools.lru_cache(maxsize=4096)
def checksummed(address: str) -> str:
    """EIP-55 spelling of an address (a keccak each: the few addresses of a market recur in every log)."""
    return to_checksum_address(address)


def _fix(t: str, v: Any) -> Any:
    if t == "address":
        return checksummed(v)
    if t.endswith("]"):
        return tuple(_fix(t[: t.rindex("[")], x) for x in v)
    return v


def _word(t: str, word: bytes) -> Any:
    """One 32-byte ABI word of a static elementary type, read directly; ``_NOT_WORD`` for another type or a word
    that is not that type's padded form (left to ``eth_abi``, which then reports it)."""
    if len(word) != 32:
        return _NOT_WORD
    if t == "address":
        return _NOT_WORD if any(word[:12]) else checksummed("0x" + word[12:].hex())
    bits = UINT_BITS.get(t)
    if bits is not None:
        v = int.from_bytes(word, "big")
        return v if v >> bits == 0 else _NOT_WORD
    size = FIXED_BYTES.get(t)
    if size is not None:
        return _NOT_WORD if any(word[size:]) else word[:size]
    if t == "bool" and not any(word[:31]) and word[31] <= 1:
        return word[31] == 1
    return _NOT_WORD


_NOT_WORD = object()


def _topic_value(t: str, word: bytes) -> Any:
    if t in ("string", "bytes") or t.endswith("]") or t.startswith("("):
        return word  # dynamic indexed values are stored hashed
    v = _word(t, word)
    return _fix(t, abi_decode([t], word)[0]) if v is _NOT_WORD else v


def _data_values(shape: EventShape, data: bytes) -> tuple[Any, ...]:
    if shape.static and len(data) == 32 * len(shape.data_types):
        values = tuple(_word(t, data[32 * i : 32 * i + 32]) for i, t in enumerate(shape.data_types))
        if _NOT_WORD not in values:
            return values
    return tuple(
        _fix(t, v) for t, v in zip(shape.data_types, abi_decode(shape.data_types, data), strict=True)
    )


def decode_raw_log(shapes: dict[str, EventShape], log: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(event name, args) of one log entry (hex strings or bytes), or None for an event not in ``shapes``."""
    topics = log.get("topics") or ()
    if not topics:
        return None
    t0 = topics[0]
    key = t0.lower() if isinstance(t0, str) else "0x" + bytes(t0).hex()
    shape = shapes.get(key)
    if shape is None:
        return None
    args: dict[str, Any] = {}
    for (name, t), topic in zip(shape.indexed, topics[1:], strict=True):
        args[name] = _topic_value(t, _hexbytes(topic))
    if shape.data:
        for (name, _), v in zip(shape.data, _data_values(shape, _hexbytes(log["data"])), strict=True):
            args[name] = v
    return shape.name, args


def log_position(log: dict[str, Any]) -> tuple[int, str, int]:
    """(block number, transaction hash, log index) of a raw log entry."""
    tx = log["transactionHash"]
    tx_hex = tx.lower() if isinstance(tx, str) else "0x" + bytes(tx).hex()
    return _int(log["blockNumber"]), tx_hex, _int(log["logIndex"])

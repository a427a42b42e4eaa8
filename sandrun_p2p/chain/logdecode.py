"""Decoding the contract's raw ``eth_getLogs`` entries straight from their hex fields.

web3's ``ContractEvent.process_log`` (and the result formatters ``eth.get_logs`` applies) cost ~0.6 ms per log;
an agent polls every event of the market, so with ten nodes that was ~25 ms of CPU per job. Here a table built
once from the ABI maps topic0 to (name, indexed inputs, non-indexed inputs) and a log costs one ``eth_abi``
decode of its data (~20-40 us). The result is the same :class:`~sandrun_p2p.chain.market.Event` (addresses
checksummed, ``bytesN`` as bytes, arrays as tuples) as :meth:`Market.decode_logs` gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import keccak, to_checksum_address


@dataclass(frozen=True)
class EventShape:
    name: str
    indexed: tuple[tuple[str, str], ...]  # (name, type) in topic order
    data: tuple[tuple[str, str], ...]  # (name, type) in data order
    data_types: tuple[str, ...]


def _canonical_type(item: dict[str, Any]) -> str:
    t = item["type"]
    if t.startswith("tuple"):
        inner = ",".join(_canonical_type(c) for c in item["components"])
        return f"({inner}){t[5:]}"
    return t


def event_shapes(abi: list[dict[str, Any]]) -> dict[str, EventShape]:
    """topic0 (as ``0x``-prefixed lowercase hex) -> shape, for every non-anonymous event of ``abi``."""
    out = {}
    for item in abi:
        if item.get("type") != "event" or item.get("anonymous"):
            continue
        types = [_canonical_type(i) for i in item["inputs"]]
        topic = "0x" + keccak(text=f"{item['name']}({','.join(types)})").hex()
        indexed = tuple((i["name"], t) for i, t in zip(item["inputs"], types, strict=True) if i["indexed"])
        data = tuple((i["name"], t) for i, t in zip(item["inputs"], types, strict=True) if not i["indexed"])
        out[topic] = EventShape(item["name"], indexed, data, tuple(t for _, t in data))
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


def _fix(t: str, v: Any) -> Any:
    if t == "address":
        return to_checksum_address(v)
    if t.endswith("]"):
        return tuple(_fix(t[: t.rindex("[")], x) for x in v)
    return v


def _topic_value(t: str, word: bytes) -> Any:
    if t in ("string", "bytes") or t.endswith("]") or t.startswith("("):
        return word  # dynamic indexed values are stored hashed
    return _fix(t, abi_decode([t], word)[0])


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
        values = abi_decode(shape.data_types, _hexbytes(log["data"]))
        for (name, t), v in zip(shape.data, values, strict=True):
            args[name] = _fix(t, v)
    return shape.name, args


def log_position(log: dict[str, Any]) -> tuple[int, str, int]:
    """(block number, transaction hash, log index) of a raw log entry."""
    tx = log["transactionHash"]
    tx_hex = tx.lower() if isinstance(tx, str) else "0x" + bytes(tx).hex()
    return _int(log["blockNumber"]), tx_hex, _int(log["logIndex"])

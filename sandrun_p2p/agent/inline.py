"""Job code that travels inline in the announcement (the ``code`` field of a ``job`` message).

A job's code is a content-addressed bundle its executor fetches from a peer that has it, usually the origin: a
stream open, a request and an answer through both agents' loops, which under load took a trivial job's run
longer than the run itself (``bench/net_bench.py``: fetch 100-350 ms of a 650 ms slot at the median). When the
bundle's root block is small (the common case for a script and its inputs: a tar bundle of a few hundred bytes
of content is 10 KiB of mostly padding, ~400 bytes compressed), the origin puts that block, zlib-compressed, in
the announcement (at most :data:`~sandrun_p2p.protocol.messages.MAX_INLINE_CODE` bytes compressed and
:data:`~sandrun_p2p.protocol.messages.MAX_INLINE_BLOCK` inflated), as IPFS inlines tiny blocks in identity
CIDs; every node of the shard holds it for a while, and the executor's store takes it from here
instead of the network (a bundle of several blocks still fetches the others). The block is checked against the
job's code CID on arrival: an announcement carrying another block is refused (its sender's peer score pays).
Encrypted bundles are never inlined.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict

import trio

from ..protocol import messages as m
from ..protocol.errors import ProtocolError
from ..protocol.jobspec import JobSpec
from ..store.base import ContentStore
from ..store.cid import parse_cid
from ..store.errors import StoreError

#: Inline blocks held at most (those of the jobs most recently announced; ~2 MiB at the size cap).
MAX_HELD = 512


def check_inline(msg: m.Message, spec: JobSpec) -> bytes | None:
    """The inline code block of announcement ``msg`` for ``spec``, inflated (None without one); raise ProtocolError
    when it does not inflate within :data:`~sandrun_p2p.protocol.messages.MAX_INLINE_BLOCK` bytes, is not the
    block of the spec's code CID, or the bundle is encrypted (an inline block is never)."""
    packed = msg.body.get("code")
    if packed is None:
        return None
    if spec.encrypted:
        raise ProtocolError("bad-field", "an encrypted job's code is never inline")
    inflate = zlib.decompressobj()
    try:
        block = inflate.decompress(packed, m.MAX_INLINE_BLOCK + 1)
    except zlib.error as e:
        raise ProtocolError("bad-field", f"the inline code is not zlib data: {e}") from None
    if len(block) > m.MAX_INLINE_BLOCK or not inflate.eof or inflate.unused_data:
        raise ProtocolError(
            "bad-field", f"the inline code is not one zlib stream of at most {m.MAX_INLINE_BLOCK} bytes"
        )
    try:
        ok = parse_cid(spec.code_cid).matches(block)
    except StoreError as e:
        raise ProtocolError("bad-field", f"the job's code CID is unusable: {e}") from None
    if not ok:
        raise ProtocolError(
            "bad-field", f"the inline code does not hash to the job's code CID {spec.code_cid}"
        )
    return block


class InlineBlocks:
    """Inline code blocks held for the jobs announced here, by CID, the most recent :data:`MAX_HELD`; an
    execution's fetch takes its block out (:meth:`take`)."""

    def __init__(self, max_held: int = MAX_HELD) -> None:
        self.max_held = max_held
        self._blocks: OrderedDict[str, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._blocks)

    def keep(self, cid: str, block: bytes) -> None:
        self._blocks[cid] = block
        self._blocks.move_to_end(cid)
        while len(self._blocks) > self.max_held:
            self._blocks.popitem(last=False)

    def take(self, cid: str) -> bytes | None:
        return self._blocks.pop(cid, None)


async def block_to_inline(store: ContentStore, spec: JobSpec, limit: int) -> bytes:
    """The root block of ``spec``'s code, compressed, when the origin may put it in the announcement (at most
    ``limit`` bytes compressed, capped by the protocol's limits; not encrypted), else b""."""
    limit = min(limit, m.MAX_INLINE_CODE)
    if limit <= 0 or spec.encrypted:
        return b""
    block = b""
    try:
        with trio.move_on_after(1.0):  # (an IPFS daemon without the block would search the network)
            block = await store.get_block(spec.code_cid)
    except StoreError:
        return b""
    if not block or len(block) > m.MAX_INLINE_BLOCK:
        return b""
    packed = zlib.compress(block, 6)
    return packed if len(packed) <= limit else b""

"""A fetch opens its stream pipelined (multistream header, proposal and request in one write: one round trip),
and a peer that does not speak the fetch protocol gives a clean "not fetched" without breaking the connection."""

from __future__ import annotations

import pytest
import trio
from libp2p.utils import encode_delim

from sandrun_p2p.net import fetch as fetchproto
from sandrun_p2p.net.host import NetConfig, Network
from sandrun_p2p.protocol.identity import NodeKey

pytestmark = pytest.mark.timeout(60)


class _Stream:
    """What the requester does, in order; the peer's answers are queued as if it echoed at once."""

    def __init__(self, answer: bytes) -> None:
        self.ops: list[tuple[str, bytes]] = []
        self.answer = answer
        self.protocol = ""
        self.was_reset = False

    async def write(self, data: bytes) -> None:
        self.ops.append(("write", data))

    async def read(self, n: int) -> bytes:
        out, self.answer = self.answer[:n], self.answer[n:]
        self.ops.append(("read", out))
        return out

    async def reset(self) -> None:
        self.was_reset = True

    def set_protocol(self, p: str) -> None:
        self.protocol = p


class _Swarm:
    def __init__(self, stream: _Stream) -> None:
        self.stream = stream

    async def new_stream(self, peer_id: object) -> _Stream:
        return self.stream


async def test_request_leaves_with_the_handshake_in_one_write() -> None:
    proto = fetchproto.FETCH_PROTOCOL
    body = b"bundle bytes"
    answer = (
        encode_delim(fetchproto.MULTISTREAM)
        + encode_delim(proto.encode())
        + bytes([fetchproto.FOUND])
        + len(body).to_bytes(8, "big")
        + body
    )
    stream = _Stream(answer)
    request = fetchproto.encode_request("bafkreiexample")
    opened = await fetchproto.open_pipelined(_Swarm(stream), "peer", proto, request)
    assert await fetchproto.read_response(opened, 1 << 20) == body
    writes = [d for op, d in stream.ops if op == "write"]
    assert writes == [encode_delim(fetchproto.MULTISTREAM) + encode_delim(proto.encode()) + request]
    assert stream.ops[0][0] == "write"  # nothing read before the request left: one round trip
    assert stream.protocol == proto and not stream.was_reset


async def test_a_refused_protocol_resets_the_stream() -> None:
    stream = _Stream(encode_delim(fetchproto.MULTISTREAM) + encode_delim(b"na"))
    with pytest.raises(fetchproto.ProtocolRefused):
        await fetchproto.open_pipelined(_Swarm(stream), "peer", fetchproto.FETCH_PROTOCOL, b"\x01x")
    assert stream.was_reset


async def test_an_oversized_or_unterminated_answer_is_refused_unread() -> None:
    prefix = fetchproto._varint(1 << 40)  # announces a terabyte
    for answer, read_at_most in ((prefix + b"x" * 64, len(prefix)), (fetchproto._varint(4) + b"/mul", 5)):
        stream = _Stream(answer)
        with pytest.raises(fetchproto.ProtocolRefused):
            await fetchproto.open_pipelined(_Swarm(stream), "peer", fetchproto.FETCH_PROTOCOL, b"\x01x")
        assert stream.was_reset
        assert sum(len(d) for op, d in stream.ops if op == "read") <= read_at_most


async def test_peer_without_the_fetch_protocol(nursery) -> None:
    """Real hosts: the refused fetch is None at once (not retried), and the same connection serves a fetch after
    the peer offers the protocol again (the peer's multistream-select read the pipelined request as one more
    proposal and refused it; nothing else broke)."""
    keys = [NodeKey.generate() for _ in range(2)]
    nets = [Network(k, NetConfig(mdns=False), lambda msg, now: None) for k in keys]
    for n in nets:
        await nursery.start(n.run)
    await nets[1].connect(nets[0].addrs()[0])

    async def provider(cid: str) -> bytes | None:
        return b"code" if cid == "bafkcode" else None

    nets[0].set_provider(provider)
    handler = nets[0].host.get_mux().handlers[fetchproto.FETCH_PROTOCOL]
    nets[0].host.remove_stream_handler(fetchproto.FETCH_PROTOCOL)
    with trio.fail_after(10):
        assert await nets[1].fetch_from(keys[0].node_id, "bafkcode") is None
    assert nets[1].stats.stream_retries == 0
    nets[0].host.set_stream_handler(fetchproto.FETCH_PROTOCOL, handler)
    with trio.fail_after(10):
        assert await nets[1].fetch_from(keys[0].node_id, "bafkcode") == b"code"
        assert await nets[1].fetch_from(keys[0].node_id, "bafkother") is None  # found nowhere: "not found"
    nursery.cancel_scope.cancel()

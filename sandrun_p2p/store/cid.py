"""CIDs: parse (CIDv0, CIDv1 in base32 / base58btc / base16), normalise to CIDv1 base32, build from digests.

Only what the store needs: sha2-256 multihashes with the ``raw`` (0x55) or ``dag-pb`` (0x70) codec.
Everything else is refused with :class:`InvalidCid`, which names the offending string.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from .errors import InvalidCid

RAW = 0x55
DAG_PB = 0x70
SHA2_256 = 0x12
_CODEC_NAMES = {RAW: "raw", DAG_PB: "dag-pb"}
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}
#: Longest CID string accepted (a CIDv1 sha2-256 in base32 is 59 characters).
MAX_CID_CHARS = 128


def encode_varint(n: int) -> bytes:
    if n < 0:
        raise ValueError("varint must be non-negative")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def decode_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode an unsigned LEB128 varint at ``pos``; return (value, new position). Raises ValueError."""
    result = 0
    shift = 0
    start = pos
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            if pos - start > 1 and b == 0:
                raise ValueError("non-minimal varint")
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _b58decode(s: str) -> bytes:
    n = 0
    for ch in s:
        try:
            n = n * 58 + _B58_INDEX[ch]
        except KeyError:
            raise ValueError(f"bad base58 character {ch!r}") from None
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    pad = len(s) - len(s.lstrip("1"))
    return b"\x00" * pad + body


def _b58encode(b: bytes) -> str:
    n = int.from_bytes(b, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58[r])
    pad = len(b) - len(b.lstrip(b"\x00"))
    return "1" * pad + "".join(reversed(out))


@dataclass(frozen=True, slots=True)
class Cid:
    """A CIDv1 with a sha2-256 multihash (``codec`` is :data:`RAW` or :data:`DAG_PB`)."""

    codec: int
    digest: bytes

    def __post_init__(self) -> None:
        if self.codec not in _CODEC_NAMES:
            raise InvalidCid(f"unsupported codec 0x{self.codec:x} (only raw and dag-pb)")
        if len(self.digest) != 32:
            raise InvalidCid("a sha2-256 digest is 32 bytes")

    @classmethod
    def of_block(cls, codec: int, block: bytes) -> Cid:
        return cls(codec, hashlib.sha256(block).digest())

    @property
    def multihash(self) -> bytes:
        return bytes((SHA2_256, 32)) + self.digest

    def to_bytes(self) -> bytes:
        return b"\x01" + encode_varint(self.codec) + self.multihash

    def __str__(self) -> str:
        return "b" + base64.b32encode(self.to_bytes()).decode("ascii").lower().rstrip("=")

    def base58(self) -> str:
        return "z" + _b58encode(self.to_bytes())

    @property
    def codec_name(self) -> str:
        return _CODEC_NAMES[self.codec]

    def matches(self, block: bytes) -> bool:
        """True when ``block`` hashes to this CID's digest."""
        return hashlib.sha256(block).digest() == self.digest


def _parse_binary(raw: bytes, original: str) -> Cid:
    if len(raw) == 34 and raw[0] == SHA2_256 and raw[1] == 32:  # CIDv0: a bare multihash
        return Cid(DAG_PB, raw[2:])
    try:
        version, pos = decode_varint(raw, 0)
        if version != 1:
            raise InvalidCid(f"{original!r}: CID version {version} is not supported")
        codec, pos = decode_varint(raw, pos)
        mh_code, pos = decode_varint(raw, pos)
        mh_len, pos = decode_varint(raw, pos)
    except ValueError as e:
        raise InvalidCid(f"{original!r} is not a CID ({e})") from None
    if mh_code != SHA2_256:
        raise InvalidCid(f"{original!r}: multihash 0x{mh_code:x} is not supported (only sha2-256)")
    if mh_len != 32 or len(raw) - pos != 32:
        raise InvalidCid(f"{original!r}: bad sha2-256 digest length")
    if codec not in _CODEC_NAMES:
        raise InvalidCid(f"{original!r}: codec 0x{codec:x} is not supported (only raw and dag-pb)")
    return Cid(codec, raw[pos:])


def parse_cid(value: str | Cid) -> Cid:
    """Parse a CID string (CIDv0 ``Qm...``, CIDv1 ``b...``/``B...``/``z...``/``f...``/``F...``)."""
    if isinstance(value, Cid):
        return value
    if not isinstance(value, str):
        raise InvalidCid(f"a CID is a string, not {type(value).__name__}")
    s = value.strip()
    if not s or len(s) > MAX_CID_CHARS or not s.isascii():
        raise InvalidCid(f"{value[:80]!r} is not a CID")
    try:
        if len(s) == 46 and s.startswith("Qm"):
            raw = _b58decode(s)
        elif s[0] in "bB":
            body = s[1:].upper()
            raw = base64.b32decode(body + "=" * (-len(body) % 8))
        elif s[0] == "z":
            raw = _b58decode(s[1:])
        elif s[0] in "fF":
            raw = bytes.fromhex(s[1:])
        else:
            raise InvalidCid(f"{value!r} is not a CID (unknown multibase prefix {s[0]!r})")
    except InvalidCid:
        raise
    except ValueError as e:  # binascii.Error is a ValueError
        raise InvalidCid(f"{value!r} is not a CID ({e})") from None
    return _parse_binary(raw, value)


def normalize_cid(value: str | Cid) -> str:
    """The canonical form used everywhere in sandrun-p2p: CIDv1, base32 lower case."""
    return str(parse_cid(value))

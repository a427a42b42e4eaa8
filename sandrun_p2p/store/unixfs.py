"""The few UnixFS / dag-pb pieces the embedded store needs, byte-compatible with ``ipfs add``.

Layout reproduced (Kubo and js-ipfs defaults with ``--cid-version 1 --raw-leaves --chunker size-262144``):

* a file of at most one chunk (262,144 bytes, including the empty file) is a single ``raw`` block;
* a larger file is a balanced tree of dag-pb nodes, at most 174 links each, whose leaves are ``raw``
  blocks of 262,144 bytes (the last one shorter); every node carries UnixFS ``Data{Type: File,
  filesize, blocksizes}`` and links with an empty name and the child's cumulative size (``Tsize``);
* a directory is one dag-pb node with UnixFS ``Data{Type: Directory}`` and one link per entry,
  sorted by the UTF-8 bytes of the name; no mode or mtime is stored (``ipfs add`` default).

CIDs of files are cross-checked at run time against :mod:`aleph_cid` in the test-suite, and both against
fixed vectors produced by a real js-ipfs daemon (tests/fixtures/store/cid_vectors.json).
HAMT-sharded directories (more than ~256 KiB of links) are refused rather than produced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .cid import DAG_PB, RAW, Cid, _parse_binary, decode_varint, encode_varint
from .errors import CorruptObject, UnsafePath, Unsupported

CHUNK_SIZE = 262_144
MAX_LINKS = 174
#: Kubo and js-ipfs switch a directory to a HAMT shard when the estimated size of its links
#: (sum of name bytes + CID bytes) exceeds 256 KiB. We refuse well before that boundary.
DIR_SHARD_THRESHOLD = 262_144
DIR_SAFE_LIMIT = 200_000

# UnixFS Data.Type
T_RAW, T_DIRECTORY, T_FILE, T_METADATA, T_SYMLINK, T_HAMT = 0, 1, 2, 3, 4, 5
_TYPE_NAMES = {0: "raw", 1: "directory", 2: "file", 3: "metadata", 4: "symlink", 5: "HAMT shard"}


# ---------------------------------------------------------------- protobuf bits
def _key(field_no: int, wire: int) -> bytes:
    return encode_varint((field_no << 3) | wire)


def _bytes_field(field_no: int, value: bytes) -> bytes:
    return _key(field_no, 2) + encode_varint(len(value)) + value


def _varint_field(field_no: int, value: int) -> bytes:
    return _key(field_no, 0) + encode_varint(value)


def _iter_fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield (field number, wire type, value) of a protobuf message; ValueError on malformed input."""
    pos = 0
    n = len(buf)
    while pos < n:
        key, pos = decode_varint(buf, pos)
        field_no, wire = key >> 3, key & 7
        if field_no == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value, pos = decode_varint(buf, pos)
            yield field_no, wire, value
        elif wire == 2:
            length, pos = decode_varint(buf, pos)
            if pos + length > n:
                raise ValueError("truncated length-delimited field")
            yield field_no, wire, buf[pos : pos + length]
            pos += length
        else:
            raise ValueError(f"unsupported wire type {wire}")


# ---------------------------------------------------------------- dag-pb
@dataclass(frozen=True, slots=True)
class Link:
    cid: Cid
    name: str
    tsize: int


@dataclass(slots=True)
class DagNode:
    links: list[Link] = field(default_factory=list)
    data: bytes | None = None


def encode_node(node: DagNode) -> bytes:
    """Canonical dag-pb: links first (field 2), then data (field 1); link = Hash, Name, Tsize."""
    out = bytearray()
    for link in node.links:
        body = (
            _bytes_field(1, link.cid.to_bytes())
            + _bytes_field(2, link.name.encode("utf-8"))
            + _varint_field(3, link.tsize)
        )
        out += _bytes_field(2, body)
    if node.data is not None:
        out += _bytes_field(1, node.data)
    return bytes(out)


def decode_node(block: bytes, where: str = "") -> DagNode:
    """Decode a dag-pb block. Malformed input raises :class:`CorruptObject` naming ``where``."""
    try:
        node = DagNode()
        for fno, wire, value in _iter_fields(block):
            if fno == 2 and wire == 2:
                h = name = None
                tsize = 0
                for lf, lw, lv in _iter_fields(bytes(value)):  # type: ignore[arg-type]
                    if lf == 1 and lw == 2:
                        h = lv
                    elif lf == 2 and lw == 2:
                        name = bytes(lv).decode("utf-8")  # type: ignore[arg-type]
                    elif lf == 3 and lw == 0:
                        tsize = lv  # type: ignore[assignment]
                    else:
                        raise ValueError(f"unexpected link field {lf}")
                if h is None:
                    raise ValueError("link without hash")
                node.links.append(Link(_parse_binary(bytes(h), "link"), name or "", int(tsize)))
            elif fno == 1 and wire == 2:
                node.data = bytes(value)  # type: ignore[arg-type]
            else:
                raise ValueError(f"unexpected node field {fno}")
        return node
    except (ValueError, UnicodeDecodeError) as e:  # InvalidCid is a ValueError too
        raise CorruptObject(f"malformed dag-pb node {where}: {e}") from None


# ---------------------------------------------------------------- UnixFS Data
@dataclass(slots=True)
class UnixFsData:
    type: int
    data: bytes | None = None
    filesize: int | None = None
    blocksizes: list[int] = field(default_factory=list)

    def encode(self) -> bytes:
        out = _varint_field(1, self.type)
        if self.data:
            out += _bytes_field(2, self.data)
        if self.filesize is not None:
            out += _varint_field(3, self.filesize)
        for b in self.blocksizes:
            out += _varint_field(4, b)
        return out

    @classmethod
    def decode(cls, buf: bytes, where: str = "") -> UnixFsData:
        try:
            t = None
            d = None
            fs = None
            bs: list[int] = []
            for fno, wire, value in _iter_fields(buf):
                if fno == 1 and wire == 0:
                    t = value
                elif fno == 2 and wire == 2:
                    d = value
                elif fno == 3 and wire == 0:
                    fs = value
                elif fno == 4 and wire == 0:
                    bs.append(value)  # type: ignore[arg-type]
                elif fno == 4 and wire == 2:  # packed encoding, tolerated on read
                    p = 0
                    while p < len(value):  # type: ignore[arg-type]
                        v, p = decode_varint(value, p)  # type: ignore[arg-type]
                        bs.append(v)
                elif fno in (5, 6, 7, 8):  # hashType, fanout, mode, mtime: ignored
                    continue
                else:
                    raise ValueError(f"unexpected UnixFS field {fno}")
            if t is None:
                raise ValueError("UnixFS data without a type")
            return cls(int(t), d, fs, bs)  # type: ignore[arg-type]
        except ValueError as e:
            raise CorruptObject(f"malformed UnixFS data {where}: {e}") from None

    @property
    def type_name(self) -> str:
        return _TYPE_NAMES.get(self.type, f"type {self.type}")


# ---------------------------------------------------------------- building files
@dataclass(frozen=True, slots=True)
class Built:
    """A block just produced by a builder."""

    cid: Cid
    block: bytes


@dataclass(slots=True)
class _Entry:
    cid: Cid
    tsize: int  # cumulative encoded size of the subtree
    filesize: int  # bytes of file content below


class FileBuilder:
    """Streaming importer: feed bytes, get blocks (through ``emit``) and finally the root CID.

    ``emit(cid, block)`` is called for every block in dependency order (children before parents).
    """

    def __init__(self, emit: Callable[[Cid, bytes], None]) -> None:
        self._emit = emit
        self._buf = bytearray()
        self._levels: list[list[_Entry]] = [[]]
        self._chunks = 0
        self.size = 0
        self._done = False

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if self._done:
            raise RuntimeError("FileBuilder already finished")
        self.size += len(data)
        self._buf += data
        while len(self._buf) > CHUNK_SIZE:  # keep a full last chunk until we know more comes
            self._leaf(bytes(self._buf[:CHUNK_SIZE]))
            del self._buf[:CHUNK_SIZE]

    def _leaf(self, chunk: bytes) -> None:
        cid = Cid.of_block(RAW, chunk)
        self._emit(cid, chunk)
        self._chunks += 1
        self._push(0, _Entry(cid, len(chunk), len(chunk)))

    def _push(self, level: int, entry: _Entry) -> None:
        while len(self._levels) <= level:
            self._levels.append([])
        self._levels[level].append(entry)
        if len(self._levels[level]) == MAX_LINKS:
            parent = self._parent(self._levels[level])
            self._levels[level] = []
            self._push(level + 1, parent)

    def _parent(self, children: list[_Entry]) -> _Entry:
        data = UnixFsData(T_FILE, None, sum(c.filesize for c in children), [c.filesize for c in children])
        node = DagNode([Link(c.cid, "", c.tsize) for c in children], data.encode())
        block = encode_node(node)
        cid = Cid.of_block(DAG_PB, block)
        self._emit(cid, block)
        return _Entry(cid, len(block) + sum(c.tsize for c in children), data.filesize or 0)

    def finish(self) -> tuple[Cid, int]:
        """Flush; return (root CID, cumulative size of all blocks)."""
        if self._done:
            raise RuntimeError("FileBuilder already finished")
        self._done = True
        if self._buf or self._chunks == 0:
            self._leaf(bytes(self._buf))
            self._buf.clear()
        if self._chunks == 1:  # a single chunk is its own root (a raw block)
            e = self._levels[0][0]
            return e.cid, e.tsize
        lvl = 0
        while True:
            items = self._levels[lvl]
            higher = any(self._levels[h] for h in range(lvl + 1, len(self._levels)))
            if items:
                if len(items) == 1 and not higher:
                    return items[0].cid, items[0].tsize
                parent = self._parent(items)
                self._levels[lvl] = []
                if lvl + 1 == len(self._levels):
                    self._levels.append([])
                self._levels[lvl + 1].append(parent)
            lvl += 1


# ---------------------------------------------------------------- directories
def check_name(name: str | bytes, where: str = "") -> str:
    """A directory entry name must be one non-empty UTF-8 path component."""
    if isinstance(name, bytes):
        try:
            name = name.decode("utf-8")
        except UnicodeDecodeError:
            raise UnsafePath(f"entry name {name!r} {where} is not UTF-8") from None
    if name in ("", ".", "..") or "/" in name or "\x00" in name or "\\" in name:
        raise UnsafePath(f"unsafe entry name {name!r} {where}")
    return name


def dir_node(entries: list[tuple[str, Cid, int]], where: str = "") -> tuple[Cid, bytes, int]:
    """Build a directory node from (name, child CID, child Tsize). Returns (cid, block, Tsize)."""
    names = [check_name(n, where) for n, _, _ in entries]
    if len(set(names)) != len(names):
        raise UnsafePath(f"duplicate entry names in directory {where}")
    estimate = sum(len(n.encode()) + len(c.to_bytes()) for n, c, _ in entries)
    if estimate > DIR_SAFE_LIMIT:
        raise Unsupported(
            f"directory {where} has {len(entries)} entries ({estimate} bytes of links); IPFS would store it as "
            f"a HAMT shard above {DIR_SHARD_THRESHOLD} bytes, which this store does not produce - split it up"
        )
    ordered = sorted(entries, key=lambda e: e[0].encode("utf-8"))
    node = DagNode([Link(c, n, t) for n, c, t in ordered], UnixFsData(T_DIRECTORY).encode())
    block = encode_node(node)
    return Cid.of_block(DAG_PB, block), block, len(block) + sum(t for _, _, t in entries)


def decode_unixfs(cid: Cid, block: bytes) -> tuple[DagNode | None, UnixFsData]:
    """(node, UnixFS data) of a verified block. A raw block is a file chunk (node is None)."""
    if cid.codec == RAW:
        return None, UnixFsData(T_RAW, block, len(block))
    node = decode_node(block, f"in {cid}")
    if node.data is None:
        raise CorruptObject(f"dag-pb node {cid} has no UnixFS data")
    return node, UnixFsData.decode(node.data, f"in {cid}")

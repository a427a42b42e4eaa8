"""Embedded store: round trips, directories, gc, pins, peer fetch, and bad input of every kind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from store_helpers import tree_of

from sandrun_p2p.store import (
    CorruptObject,
    EmbeddedStore,
    InvalidCid,
    Limits,
    NotAFile,
    NotFound,
    StoreError,
    StoreTimeout,
    TooLarge,
    UnsafePath,
    cid_of_bytes,
    open_store,
    parse_cid,
)
from sandrun_p2p.store.cid import DAG_PB, Cid, _b58encode
from sandrun_p2p.store.unixfs import T_DIRECTORY, DagNode, Link, UnixFsData, encode_node

MB = 1024 * 1024


def blob(n: int, seed: int = 1) -> bytes:
    import hashlib

    return hashlib.shake_256(seed.to_bytes(4, "big")).digest(n)


def block_files(store: EmbeddedStore) -> list[Path]:
    return sorted(p for p in (store.repo.blocks).rglob("*") if p.is_file())


# ---------------------------------------------------------------- basics
async def test_open_store_defaults_to_embedded(tmp_path: Path) -> None:
    s = open_store(str(tmp_path))
    assert isinstance(s, EmbeddedStore)
    assert (tmp_path / "store" / "blocks").is_dir()
    await s.close()
    with pytest.raises(StoreError, match="closed"):
        await s.put_bytes(b"x")


async def test_roundtrip_and_dedup(store: EmbeddedStore) -> None:
    data = blob(3 * MB + 17)
    c1 = await store.put_bytes(data)
    n = len(block_files(store))
    c2 = await store.put_bytes(data)
    assert c1 == c2 and len(block_files(store)) == n == 12 + 1 + 1  # 12 full leaves, 1 short, root
    assert await store.get(c1) == data
    assert await store.has(c1)
    assert not list(store.repo.tmp.iterdir())  # staging cleaned up


async def test_get_accepts_other_cid_spellings(store: EmbeddedStore) -> None:
    cid = await store.put_bytes(b"hello world")
    c = parse_cid(cid)
    assert await store.get(c.base58()) == b"hello world"  # base58btc CIDv1, as js-ipfs prints
    assert await store.get(cid.upper()) == b"hello world"  # multibase 'B': base32 upper case
    big = await store.put_bytes(blob(300_000))
    cidv0 = _b58encode(parse_cid(big).multihash)
    assert cidv0.startswith("Qm") and await store.get(cidv0) == blob(300_000)


async def test_put_file_and_get_file(store: EmbeddedStore, tmp_path: Path) -> None:
    src = tmp_path / "in.bin"
    src.write_bytes(blob(700_000))
    cid = await store.put_file(src)
    assert cid == cid_of_bytes(blob(700_000))
    await store.get_file(cid, tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == blob(700_000)
    with pytest.raises(StoreError, match="already exists"):
        await store.get_file(cid, tmp_path / "out.bin")
    assert await store.get_path(cid, tmp_path / "out2.bin") == "file"


async def test_directory_roundtrip_keeps_hidden_and_empty(store: EmbeddedStore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / ".hidden").write_bytes(b"h")
    (src / "a" / "b" / "big").write_bytes(blob(600_000))
    (src / "a" / "zero").write_bytes(b"")
    cid = await store.put_dir(src)
    dest = tmp_path / "dest"
    dest.mkdir()  # an empty directory is an acceptable destination
    await store.get_dir(cid, dest)
    assert tree_of(dest) == tree_of(src)
    with pytest.raises(StoreError, match="not an empty directory"):
        await store.get_dir(cid, dest)
    with pytest.raises(NotAFile):
        await store.get(cid)
    fcid = await store.put_bytes(b"file")
    with pytest.raises(NotAFile):
        await store.get_dir(fcid, tmp_path / "x")
    assert not (tmp_path / "x").exists()


async def test_empty_directory(store: EmbeddedStore, tmp_path: Path) -> None:
    (tmp_path / "e").mkdir()
    cid = await store.put_dir(tmp_path / "e")
    assert cid == "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"  # ipfs's empty UnixFS dir
    await store.get_dir(cid, tmp_path / "o")
    assert list((tmp_path / "o").iterdir()) == []


async def test_concurrent_puts(store: EmbeddedStore) -> None:
    results: list[str] = []

    async def put(i: int) -> None:
        results.append(await store.put_bytes(blob(400_000, i % 3)))

    async with trio.open_nursery() as n:
        for i in range(12):
            n.start_soon(put, i)
    assert len(set(results)) == 3
    for i in range(3):
        assert await store.get(cid_of_bytes(blob(400_000, i))) == blob(400_000, i)


# ---------------------------------------------------------------- pins and gc
async def test_gc_removes_only_unreferenced(store: EmbeddedStore) -> None:
    shared = blob(262_144, 9)
    a = await store.put_bytes(shared + blob(300_000, 1))  # shares its first leaf with b
    b = await store.put_bytes(shared + blob(300_000, 2))
    c = await store.put_bytes(blob(1000, 3), pin=True)
    d = await store.put_bytes(blob(1000, 4))
    stats = await store.gc([a])
    assert await store.has(a) and await store.has(c)
    assert not await store.has(b) and not await store.has(d)
    assert stats.removed_blocks == 4  # b's root and its 2 own leaves (the first is shared), and d
    assert await store.get(a) == shared + blob(300_000, 1)
    await store.unpin(c)
    assert await store.pins() == set()
    await store.gc([])
    assert block_files(store) == []


async def test_a_put_of_stored_blocks_writes_nothing_and_renews_their_grace(store: EmbeddedStore) -> None:
    data = blob(600_000, 5)
    cid = await store.put_bytes(data)
    before = {p: p.stat().st_ino for p in block_files(store)}
    old = 1_000_000.0  # long past any grace
    for p in before:
        os.utime(p, (old, old))
    assert await store.put_bytes(data, pin=False) == cid
    after = {p: p.stat() for p in block_files(store)}
    assert {p: st.st_ino for p, st in after.items()} == before  # the same files: nothing written again
    assert all(st.st_mtime > old for st in after.values())  # ... but each one's mtime renewed
    stats = await store.gc([], grace_s=3600)  # so the put is covered by gc's grace, as a new one is
    assert stats.removed_blocks == 0 and await store.get(cid) == data
    assert not list(store.repo.tmp.iterdir())  # and no directory or file left in staging


async def test_a_put_rewrites_a_stored_block_of_the_wrong_size(store: EmbeddedStore) -> None:
    cid = await store.put_bytes(b"some content")
    path = store.repo.block_path(parse_cid(cid))
    path.write_bytes(b"some conten")  # truncated on disk
    assert await store.put_bytes(b"some content") == cid
    assert path.read_bytes() == b"some content" and await store.get(cid) == b"some content"


async def test_gc_grace_protects_recent_writes(store: EmbeddedStore) -> None:
    cid = await store.put_bytes(b"fresh")
    stats = await store.gc([], grace_s=3600)
    assert stats.removed_blocks == 0 and await store.has(cid)


async def test_pin_requires_content(store: EmbeddedStore) -> None:
    with pytest.raises(NotFound):
        await store.pin(cid_of_bytes(b"never stored"))
    cid = await store.put_bytes(b"stored")
    await store.pin(cid)
    assert await store.pins() == {cid}
    await store.unpin(cid)
    await store.unpin(cid)  # idempotent


async def test_a_pin_is_a_second_name_of_the_root_block(store: EmbeddedStore) -> None:
    cid = await store.put_bytes(b"pinned by link", pin=True)
    block = store.repo.block_path(parse_cid(cid))
    pin = store.repo.pins_dir / cid
    assert pin.stat().st_ino == block.stat().st_ino  # no inode of its own
    await store.pin(cid)  # pinning again is a no-op
    assert await store.pins() == {cid}
    old = 1_000_000.0
    os.utime(block, (old, old))
    assert (await store.gc([], grace_s=0)).removed_blocks == 0 and await store.get(cid) == b"pinned by link"
    await store.unpin(cid)
    assert (await store.gc([], grace_s=0)).removed_blocks == 1 and not await store.has(cid)
    # the repo's pin of a block it lacks (a CLI pin, then a fetch): a plain file
    store.repo.pin(parse_cid(cid))
    assert pin.is_file() and pin.stat().st_nlink == 1 and await store.pins() == {cid}


async def test_the_block_shard_directories_are_made_once_and_kept(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path)
    shards = sorted(p.name for p in store.repo.blocks.iterdir() if p.is_dir())
    assert len(shards) == 32 * 32 and shards[0] == "22" and shards[-1] == "zz"
    cid = await store.put_bytes(b"x" * 1000)
    await store.gc([], grace_s=0)  # gc empties the block's shard but keeps the directory
    assert not await store.has(cid) and len([p for p in store.repo.blocks.iterdir() if p.is_dir()]) == 1024
    shard = store.repo.block_path(parse_cid(cid)).parent
    shard.rmdir()  # removed by hand: a put makes it again
    assert await store.put_bytes(b"x" * 1000) == cid and await store.get(cid) == b"x" * 1000
    for p in store.repo.blocks.iterdir():
        if p.is_dir() and p != shard:
            p.rmdir()
    EmbeddedStore(tmp_path)  # reopened: the marker says the layout was made, nothing is made again
    assert [p.name for p in store.repo.blocks.iterdir() if p.is_dir()] == [shard.name]


# ---------------------------------------------------------------- bad input
BAD_CIDS = [
    "",
    "hello",
    "bafy",
    "QmShort",
    "bafkqaaa",  # identity multihash
    "bafyreigbtj4x7ip5legnfznufuopl4sg4knzc2cof6duas4b3q2fy6swua",  # dag-cbor codec
    "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz0",  # bad base58 char
    "b" + "a" * 200,
    "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyk",  # one char short
]


@pytest.mark.parametrize("bad", BAD_CIDS)
async def test_wrong_cid_strings(store: EmbeddedStore, bad: str) -> None:
    with pytest.raises(InvalidCid):
        parse_cid(bad)
    with pytest.raises(InvalidCid):
        await store.get(bad)
    with pytest.raises(InvalidCid):
        await store.has(bad)
    with pytest.raises(InvalidCid):
        await store.gc([bad])


async def test_non_string_cid(store: EmbeddedStore) -> None:
    with pytest.raises(InvalidCid):
        await store.get(b"bafkrei")  # type: ignore[arg-type]


async def test_nonexistent_cid(store: EmbeddedStore, tmp_path: Path) -> None:
    missing = cid_of_bytes(b"nobody stored this")
    with trio.fail_after(5):
        with pytest.raises(NotFound, match=missing):
            await store.get(missing)
        with pytest.raises(NotFound):
            await store.get_dir(missing, tmp_path / "d")
        assert not await store.has(missing)
    assert not (tmp_path / "d").exists()


async def test_corrupted_block_on_disk(store: EmbeddedStore) -> None:
    data = blob(600_000)
    cid = await store.put_bytes(data)
    leaf = next(p for p in block_files(store) if p.name.startswith("bafk"))
    raw = bytearray(leaf.read_bytes())
    raw[100] ^= 0xFF
    leaf.write_bytes(bytes(raw))
    with pytest.raises(CorruptObject, match=leaf.name) as ei:
        await store.get(cid)
    assert "corrupted" in str(ei.value)
    assert not leaf.exists()  # moved aside ...
    assert any(store.repo.corrupt.iterdir())  # ... to corrupt/
    assert not await store.has(cid)
    await store.put_bytes(data)  # adding it again repairs it
    assert await store.get(cid) == data


async def test_corrupted_root_and_truncated_block(store: EmbeddedStore) -> None:
    cid = await store.put_bytes(blob(600_000))
    root = store.repo.block_path(parse_cid(cid))
    root.write_bytes(root.read_bytes()[:-3])
    with pytest.raises(CorruptObject):
        await store.stat(cid)
    small = await store.put_bytes(b"tiny")
    store.repo.block_path(parse_cid(small)).write_bytes(b"tinY")
    with pytest.raises(CorruptObject):
        await store.get(small)


async def test_size_limits(tmp_path: Path) -> None:
    s = EmbeddedStore(tmp_path / "n", limits=Limits(max_object_bytes=1000, max_entries=3, max_depth=2))
    with pytest.raises(TooLarge):
        await s.put_bytes(b"x" * 1001)
    with pytest.raises(TooLarge):
        await s.put_bytes(memoryview(b"x" * 1001))
    with pytest.raises(TypeError, match="takes bytes"):
        await s.put_bytes("text")  # type: ignore[arg-type]
    (tmp_path / "big").write_bytes(b"x" * 300_000)
    with pytest.raises(TooLarge):
        await s.put_file(tmp_path / "big")
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"f{i}").write_bytes(b"x")
    with pytest.raises(TooLarge, match="entries"):
        await s.put_dir(src)
    deep = tmp_path / "deep" / "a" / "b" / "c" / "d"
    deep.mkdir(parents=True)
    with pytest.raises(TooLarge, match="deeper"):
        await s.put_dir(tmp_path / "deep")
    # nothing half-written: no blocks, no staging leftovers
    assert block_files(s) == [] and list(s.repo.tmp.iterdir()) == []
    cid = await s.put_bytes(b"y" * 1000)
    with pytest.raises(TooLarge):
        await s.get(cid, max_bytes=999)
    # an object stored by a store with a bigger limit is refused on read by this one
    big = EmbeddedStore(tmp_path / "n", limits=Limits())
    bcid = await big.put_bytes(b"z" * 5000)
    with pytest.raises(TooLarge):
        await s.get(bcid)


async def test_symlinks_devices_refused_on_import(store: EmbeddedStore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok").write_bytes(b"ok")
    (src / "escape").symlink_to("/etc/passwd")
    with pytest.raises(UnsafePath, match="escape"):
        await store.put_dir(src)
    (src / "escape").unlink()
    (src / "dirlink").symlink_to(tmp_path)
    with pytest.raises(UnsafePath, match="dirlink"):
        await store.put_dir(src)
    (src / "dirlink").unlink()
    os.mkfifo(src / "fifo")
    with pytest.raises(UnsafePath, match="fifo"):
        await store.put_dir(src)
    (src / "fifo").unlink()
    link = tmp_path / "link-to-file"
    link.symlink_to(src / "ok")
    with pytest.raises(UnsafePath):
        await store.put_file(link)
    with pytest.raises(UnsafePath):
        await store.put_dir(link)
    assert block_files(store) == []


def _dir_with_names(names: list[str], child: Cid, tsize: int) -> tuple[str, bytes]:
    node = DagNode([Link(child, n, tsize) for n in names], UnixFsData(T_DIRECTORY).encode())
    block = encode_node(node)
    return str(Cid.of_block(DAG_PB, block)), block


@pytest.mark.parametrize(
    "name", ["../evil", "..", ".", "", "/etc/evil", "a/../../evil", "sub/evil", "a\x00b"]
)
async def test_path_traversal_in_stored_directory(store: EmbeddedStore, tmp_path: Path, name: str) -> None:
    child = await store.put_bytes(b"payload")
    cid, block = _dir_with_names(["fine.txt", name], parse_cid(child), 7)
    await store.put_block(cid, block)  # a well-hashed but hostile directory from a peer
    dest = tmp_path / "work" / "dest"
    with pytest.raises(UnsafePath):
        await store.get_dir(cid, dest)
    assert not dest.exists()
    assert list((tmp_path / "work").iterdir()) == []  # the partial tree was removed
    assert not (tmp_path / "work" / "evil").exists() and not (tmp_path / "evil").exists()


async def test_duplicate_names_in_stored_directory(store: EmbeddedStore, tmp_path: Path) -> None:
    child = await store.put_bytes(b"x")
    cid, block = _dir_with_names(["a", "a"], parse_cid(child), 1)
    await store.put_block(cid, block)
    with pytest.raises(CorruptObject, match="twice"):
        await store.get_dir(cid, tmp_path / "d")


async def test_put_block_checks_hash(store: EmbeddedStore) -> None:
    cid = cid_of_bytes(b"right")
    with pytest.raises(CorruptObject):
        await store.put_block(cid, b"wrong")
    assert await store.put_block(cid, b"right") == cid
    assert await store.get_block(cid) == b"right"


async def test_garbage_dag_pb_block(store: EmbeddedStore) -> None:
    junk = b"\xff\xff\xff\xff garbage"
    cid = str(Cid.of_block(DAG_PB, junk))
    await store.put_block(cid, junk)
    with pytest.raises(CorruptObject, match="malformed"):
        await store.get(cid)


# ---------------------------------------------------------------- peer fetch hook
async def test_fetch_from_peer(tmp_path: Path) -> None:
    peer = EmbeddedStore(tmp_path / "peer")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f").write_bytes(blob(900_000))
    dcid = await peer.put_dir(src)
    fcid = await peer.put_bytes(blob(2 * MB, 5))
    asked: list[str] = []

    async def fetcher(cid: str) -> bytes | None:
        asked.append(cid)
        return await peer.block_reader()(cid)

    me = EmbeddedStore(tmp_path / "me", fetcher=fetcher)
    assert await me.get(fcid) == blob(2 * MB, 5)
    assert await me.has(fcid)  # now stored locally
    n = len(asked)
    assert await me.get(fcid) == blob(2 * MB, 5)
    assert len(asked) == n  # second read is local
    await me.get_dir(dcid, tmp_path / "out")
    assert tree_of(tmp_path / "out") == tree_of(src)
    await me.pin(await peer.put_bytes(b"pin me"))


async def test_a_fetch_hops_to_a_worker_thread_once_per_level(tmp_path: Path, monkeypatch) -> None:
    """A thread hop costs an agent more CPU than reading a small block: a fetched one-block object (a job's
    script) takes two (the local attempt, then storing it and reading it), a deeper DAG one more per level."""
    peer = EmbeddedStore(tmp_path / "peer")
    small = await peer.put_bytes(b"print('hi')")
    big = await peer.put_bytes(blob(2 * MB, 6))  # a root and its leaves: two levels
    other = await peer.put_bytes(b"pin me")

    async def fetcher(cid: str) -> bytes:  # (the peer's blocks read here, not in a thread hop of the peer's)
        return peer.repo.read_block(parse_cid(cid))

    me = EmbeddedStore(tmp_path / "me", fetcher=fetcher)
    hops = 0
    real = trio.to_thread.run_sync

    async def counted(*a, **kw):
        nonlocal hops
        hops += 1
        return await real(*a, **kw)

    monkeypatch.setattr(trio.to_thread, "run_sync", counted)
    assert await me.get(small) == b"print('hi')" and hops == 2
    hops = 0
    assert await me.get(big) == blob(2 * MB, 6) and hops == 3
    hops = 0
    assert await me.get(big) == blob(2 * MB, 6) and hops == 1  # held now: one read
    hops = 0
    await me.pin(other)
    assert hops == 1 + 1 + 1  # has, which blocks are missing, then store them and pin in one call


async def test_lying_peer_is_refused(tmp_path: Path) -> None:
    async def liar(cid: str) -> bytes:
        return b"not what you asked for"

    me = EmbeddedStore(tmp_path / "me", fetcher=liar)
    cid = cid_of_bytes(b"the real content")
    with pytest.raises(CorruptObject, match="hash to something else"):
        await me.get(cid)
    assert block_files(me) == []


async def test_peer_fetch_heals_corruption(tmp_path: Path) -> None:
    peer = EmbeddedStore(tmp_path / "peer")
    cid = await peer.put_bytes(blob(500_000))
    me = EmbeddedStore(tmp_path / "me", fetcher=peer.block_reader())
    await me.put_bytes(blob(500_000))
    leaf = next(p for p in block_files(me) if p.name.startswith("bafk"))
    leaf.write_bytes(b"rot")
    assert await me.get(cid) == blob(500_000)


async def test_peer_fetch_timeout_and_absent(tmp_path: Path) -> None:
    async def hang(cid: str) -> bytes:
        await trio.sleep_forever()
        raise AssertionError

    async def nobody(cid: str) -> None:
        return None

    slow = EmbeddedStore(tmp_path / "a", fetcher=hang, fetch_timeout_s=0.2)
    with trio.fail_after(5), pytest.raises(StoreTimeout, match="no peer delivered"):
        await slow.get(cid_of_bytes(b"x"))
    none = EmbeddedStore(tmp_path / "b", fetcher=nobody)
    with pytest.raises(NotFound, match="no peer supplied"):
        await none.get(cid_of_bytes(b"x"))


async def test_oversized_block_from_peer(tmp_path: Path) -> None:
    big = b"x" * 5000

    async def fetcher(cid: str) -> bytes:
        return big

    me = EmbeddedStore(tmp_path / "me", fetcher=fetcher, limits=Limits(max_block_bytes=4096))
    with pytest.raises(TooLarge):
        await me.get(str(Cid.of_block(0x55, big)))


def test_sync_facade(tmp_path: Path) -> None:
    from sandrun_p2p.store.sync import open_store_sync

    with open_store_sync(str(tmp_path)) as s:
        cid = s.put_bytes(b"blocking")
        assert s.get(cid) == b"blocking" and s.has(cid)
        assert s.limits.max_object_bytes > 0  # plain attributes pass through

"""Against a real IPFS daemon (js-ipfs from scripts/ipfs/start.sh; SANDRUN_IPFS_API names it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest
import trio
from store_helpers import ROOT, build_tree, content, tree_of

from sandrun_p2p.store import (
    EmbeddedStore,
    StoreTimeout,
    StoreUnavailable,
    cid_of_bytes,
    open_store,
    parse_cid,
)
from sandrun_p2p.store.ipfs import IpfsStore, parse_api

pytestmark = pytest.mark.ipfs


@pytest.fixture
async def ipfs(ipfs_api: str, tmp_path: Path) -> IpfsStore:
    s = open_store(str(tmp_path / "node"), ipfs_api, block_timeout_s=2.0, timeout_s=60.0)
    assert isinstance(s, IpfsStore)
    yield s
    await s.close()


def daemon_pins(api: str) -> set[str]:
    a = parse_api(api)
    url = f"http://{a.host}:{a.port}/api/v0/pin/ls?type=recursive"
    with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=30) as r:
        return {str(parse_cid(k)) for k in json.loads(r.read()).get("Keys", {})}


async def test_file_vectors_match_daemon_and_embedded(ipfs: IpfsStore, vectors: dict, tmp_path: Path) -> None:
    emb = EmbeddedStore(tmp_path / "emb")
    for spec in vectors["files"]:
        data = content(spec)
        cid = await ipfs.put_bytes(data)  # raises CidMismatch unless the daemon agrees
        assert cid == spec["cid"] == await emb.put_bytes(data)
        assert await ipfs.get(cid) == data
        assert (await ipfs.stat(cid)).size == len(data)


async def test_directory_vector_and_get_dir(ipfs: IpfsStore, vectors: dict, tmp_path: Path) -> None:
    spec = vectors["dirs"][0]
    src = build_tree(tmp_path / "src", spec["entries"])
    cid = await ipfs.put_dir(src)
    assert cid == spec["cid"] == await EmbeddedStore(tmp_path / "emb").put_dir(src)
    await ipfs.get_dir(cid, tmp_path / "out")
    assert tree_of(tmp_path / "out") == tree_of(src)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert await ipfs.put_dir(empty) == "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"


async def test_add_cat_pin_unpin_gc(ipfs: IpfsStore, ipfs_api: str) -> None:
    a = await ipfs.put_bytes(os.urandom(300_000))
    b = await ipfs.put_bytes(os.urandom(1000), pin=True)
    assert {a, b} <= daemon_pins(ipfs_api)  # everything added is pinned on the daemon
    assert await ipfs.pins() == {b}
    assert await ipfs.has(a) and await ipfs.has(b)
    stats = await ipfs.gc([], grace_s=0)  # a is neither live nor pinned: unpinned on the daemon
    assert stats.unpinned == 1
    pins = daemon_pins(ipfs_api)
    assert a not in pins and b in pins
    await ipfs.unpin(b)
    await ipfs.gc([], grace_s=0)
    assert b not in daemon_pins(ipfs_api)
    c = await ipfs.put_bytes(b"live")
    await ipfs.gc([c], grace_s=0)
    assert c in daemon_pins(ipfs_api)
    assert await ipfs.get(c) == b"live"


async def test_nonexistent_cid_times_out_instead_of_hanging(ipfs: IpfsStore, tmp_path: Path) -> None:
    missing = cid_of_bytes(os.urandom(64))
    with trio.fail_after(30):
        with pytest.raises(StoreTimeout, match="did not return block"):
            await ipfs.get(missing)
        with pytest.raises(StoreTimeout):
            await ipfs.get_dir(missing, tmp_path / "d")
        assert not await ipfs.has(missing)
    assert not (tmp_path / "d").exists()


async def test_content_added_with_other_settings_is_verified_blockwise(
    ipfs: IpfsStore, ipfs_api: str
) -> None:
    # default `ipfs add` (CIDv0, dag-pb leaves): our chunking cannot reproduce it, so get() walks the DAG
    data = os.urandom(700_000)
    a = parse_api(ipfs_api)
    boundary = "sandrunboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    req = urllib.request.Request(
        f"http://{a.host}:{a.port}/api/v0/add?pin=false",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        qm = json.loads(r.read().decode().splitlines()[-1])["Hash"]
    assert qm.startswith("Qm")
    assert await ipfs.get(qm) == data


def _start_private_daemon(state: Path) -> tuple[str, int]:
    out = subprocess.run(
        [str(ROOT / "scripts" / "ipfs" / "start.sh"), str(state)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout.strip(), int((state / "pid").read_text())


async def test_daemon_killed_mid_test(ipfs_api: str, tmp_path: Path) -> None:
    # starts (and kills) a second daemon of its own; needs the same js-ipfs install as SANDRUN_IPFS_API
    state = tmp_path / "daemon2"
    api, pid = await trio.to_thread.run_sync(_start_private_daemon, state)
    store = IpfsStore(api, tmp_path / "node", timeout_s=20, block_timeout_s=2)
    try:
        cid = await store.put_bytes(b"before the crash")
        assert await store.get(cid) == b"before the crash"
        big = os.urandom(96 * 1024 * 1024)
        err: list[BaseException] = []

        async def upload() -> None:
            try:
                await store.put_bytes(big)
            except BaseException as e:
                err.append(e)

        async with trio.open_nursery() as n:
            n.start_soon(upload)
            await trio.sleep(0.6)  # the upload is under way (js-ipfs takes seconds for 96 MiB)
            os.kill(pid, signal.SIGKILL)
        assert err and isinstance(err[0], StoreUnavailable), f"upload ended with {err!r}"
        assert api in str(err[0]), str(err[0])
        with trio.fail_after(30):
            with pytest.raises(StoreUnavailable, match=api):
                await store.get(cid)
            with pytest.raises(StoreUnavailable, match=api):
                await store.put_bytes(b"after the crash")
        owned = {p.name for p in (tmp_path / "node" / "store-ipfs" / "owned").iterdir()}
        assert owned == {cid}  # the interrupted upload left no record behind
    finally:
        await store.close()
        subprocess.run([str(ROOT / "scripts" / "ipfs" / "stop.sh"), str(state)], check=False, timeout=60)


def test_sync_facade_over_the_daemon(ipfs_api: str, tmp_path: Path) -> None:
    from sandrun_p2p.store.sync import open_store_sync

    with open_store_sync(str(tmp_path), ipfs_api) as s:
        cid = s.put_bytes(b"blocking ipfs")
        assert s.get(cid) == b"blocking ipfs"
        assert s.put_bytes(b"second call, new trio run") == cid_of_bytes(b"second call, new trio run")

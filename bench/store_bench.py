#!/usr/bin/env python3
"""Content-store throughput: MB/s for put and get, embedded store vs IPFS daemon (median of runs).

    python bench/store_bench.py                                  # embedded only
    SANDRUN_IPFS_API=$(scripts/ipfs/start.sh) python bench/store_bench.py   # both backends
    python bench/store_bench.py --sizes 1,16,64 --runs 5 --ipfs-api /ip4/127.0.0.1/tcp/5001

put = put_bytes (chunk, hash, write every block; for IPFS also the local CID computation, the upload,
the CID check and the pin); get = get (read and re-hash every block; for IPFS: block stat, cat, re-hash).
MB = 10^6 bytes. Also prints the pure CID computation rate (no storage) for reference.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandrun_p2p.store import ContentStore, EmbeddedStore, cid_of_bytes  # noqa: E402
from sandrun_p2p.store.ipfs import IpfsStore  # noqa: E402


async def measure(store: ContentStore, data: bytes, runs: int) -> tuple[float, float]:
    puts, gets = [], []
    for i in range(runs):
        blob = hashlib.sha256(i.to_bytes(4, "big")).digest() + data  # fresh content every run
        t = time.perf_counter()
        cid = await store.put_bytes(blob)
        puts.append(time.perf_counter() - t)
        t = time.perf_counter()
        got = await store.get(cid)
        gets.append(time.perf_counter() - t)
        assert len(got) == len(blob)
    mb = (len(data) + 32) / 1e6
    return mb / statistics.median(puts), mb / statistics.median(gets)


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1,16,64", help="object sizes in MiB, comma separated")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--ipfs-api", default=os.environ.get("SANDRUN_IPFS_API"))
    args = ap.parse_args()
    sizes = [float(s) for s in args.sizes.split(",")]
    print(f"content store benchmark: median of {args.runs} runs, MB = 10^6 bytes")
    print(f"{'backend':<10} {'size MiB':>9} {'put MB/s':>10} {'get MB/s':>10}")
    results: dict[tuple[str, float], tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as d:
        backends: list[tuple[str, ContentStore]] = [("embedded", EmbeddedStore(Path(d) / "e", gc_grace_s=0))]
        if args.ipfs_api:
            backends.append(("ipfs", IpfsStore(args.ipfs_api, Path(d) / "i", timeout_s=120)))
        else:
            print(
                "(IPFS part skipped: no --ipfs-api / SANDRUN_IPFS_API; start one with scripts/ipfs/start.sh)"
            )
        for name, store in backends:
            for mib in sizes:
                data = os.urandom(int(mib * 1024 * 1024))
                put, get = await measure(store, data, args.runs)
                results[(name, mib)] = (put, get)
                print(f"{name:<10} {mib:>9g} {put:>10.1f} {get:>10.1f}")
            await store.gc([], grace_s=0)
            await store.close()
    data = os.urandom(64 * 1024 * 1024)
    t = time.perf_counter()
    cid_of_bytes(data)
    print(f"CID computation only (64 MiB): {len(data) / 1e6 / (time.perf_counter() - t):.0f} MB/s")
    if args.ipfs_api:
        for mib in sizes:
            e, i = results[("embedded", mib)], results[("ipfs", mib)]
            print(f"embedded/ipfs at {mib:g} MiB: put x{e[0] / i[0]:.1f}, get x{e[1] / i[1]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(trio.run(main))

#!/usr/bin/env python3
"""Produce (or check) tests/fixtures/store/cid_vectors.json with a real IPFS daemon.

    API=$(scripts/ipfs/start.sh)                      # js-ipfs 0.66.1, offline, loopback
    python3 scripts/ipfs/make_vectors.py --api "$API" --write    # fill in the "cid" fields
    python3 scripts/ipfs/make_vectors.py --api "$API"            # check the daemon still agrees
    scripts/ipfs/stop.sh

Standard library only, on purpose: nothing of sandrun_p2p is involved in computing the expected CIDs.
Each file is POSTed to /api/v0/add with cid-version=1, raw-leaves=true, chunker=size-262144; a
directory is POSTed as one multipart with every file under "d/..." (then the empty directories, as
application/x-directory parts: js-ipfs rejects a directory part before a file part) and its CID is the
"d" entry of the answer. Works against Kubo too (same RPC API).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "store" / "cid_vectors.json"
PARAMS = "cid-version=1&raw-leaves=true&chunker=size-262144&hash=sha2-256&pin=false&progress=false"


def content(spec: dict) -> bytes:
    if "text" in spec:
        return spec["text"].encode("utf-8")
    return hashlib.shake_256(spec["seed"].encode("utf-8")).digest(spec["size"])


def api_url(api: str) -> str:
    if api.startswith("/"):
        p = [x for x in api.split("/") if x]
        return f"http://{p[1]}:{p[3]}/api/v0"
    return api.rstrip("/") + ("" if api.rstrip("/").endswith("/api/v0") else "/api/v0")


def post_add(url: str, parts: list[tuple[str, str, bytes]]) -> list[dict]:
    boundary = uuid.uuid4().hex
    body = bytearray()
    for name, ctype, data in parts:
        body += f"--{boundary}\r\n".encode()
        body += f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n'.encode()
        body += f"Content-Type: {ctype}\r\n\r\n".encode()
        body += data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    req = urllib.request.Request(
        f"{url}/add?{PARAMS}",
        data=bytes(body),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=float(__import__("os").environ.get("MV_TIMEOUT", "300"))) as r:
        return [json.loads(line) for line in r.read().decode().splitlines() if line.strip()]


def normalise(cid: str) -> str:
    """base58btc CIDv1 (what js-ipfs answers) -> base32 CIDv1."""
    import base64

    if cid.startswith("b"):
        return cid
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    assert cid.startswith("z"), cid
    n = 0
    for ch in cid[1:]:
        n = n * 58 + alphabet.index(ch)
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return "b" + base64.b32encode(raw).decode().lower().rstrip("=")


def version(url: str) -> str:
    with urllib.request.urlopen(urllib.request.Request(f"{url}/version", method="POST"), timeout=30) as r:
        v = json.loads(r.read())
    return f"{v.get('Version')} ({'js-ipfs' if 'ipfs-core' in v else 'kubo'})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--api", required=True, help="daemon RPC API: multiaddr or http://HOST:PORT")
    ap.add_argument("--write", action="store_true", help="write the daemon's CIDs into the fixture")
    args = ap.parse_args()
    url = api_url(args.api)
    spec = json.loads(FIXTURE.read_text())
    bad = 0
    for f in spec["files"]:
        (entry,) = post_add(url, [("data", "application/octet-stream", content(f))])
        got = normalise(entry["Hash"])
        bad += report(f, got, args.write)
    for d in spec["dirs"]:
        parts = [
            (f"d/{e['path']}", "application/octet-stream", content(e))
            for e in d["entries"]
            if not e.get("dir")
        ]
        parts += [(f"d/{e['path']}", "application/x-directory", b"") for e in d["entries"] if e.get("dir")]
        entries = post_add(url, parts)
        (root,) = [e for e in entries if e["Name"] == "d"]
        bad += report(d, normalise(root["Hash"]), args.write)
    if args.write:
        spec["produced_by"] = {
            "daemon": version(url),
            "npm": "ipfs@0.66.1 (scripts/ipfs/package-lock.json)",
            "script": "scripts/ipfs/make_vectors.py --write",
        }
        FIXTURE.write_text(json.dumps(spec, indent=2, ensure_ascii=True) + "\n")
        print(f"wrote {FIXTURE}")
    return 1 if bad else 0


def report(item: dict, got: str, write: bool) -> int:
    want = item.get("cid")
    if write:
        item["cid"] = got
    status = "ok" if want == got else ("new" if want is None or write else "MISMATCH")
    print(f"{item['name']:>14}  {got}  {status}" + ("" if status != "MISMATCH" else f" (fixture: {want})"))
    return int(status == "MISMATCH")


if __name__ == "__main__":
    sys.exit(main())

"""Bundle keys of encrypted jobs: key store, GRANT bodies, opening a bundle for execution (no processes)."""

from __future__ import annotations

import os
import stat

import pytest

from sandrun_p2p.agent.grants import MAX_GRANTS, BundleKeyError, KeyStore, grant_bodies, open_for_execution
from sandrun_p2p.protocol import messages as m
from sandrun_p2p.protocol.identity import NodeKey
from sandrun_p2p.protocol.jobspec import JobSpec
from sandrun_p2p.store import cid_of_bytes, crypto

PLAIN = b"a tar"


def spec(encrypted: bool = True) -> JobSpec:
    return JobSpec.from_dict(
        {
            "code_cid": cid_of_bytes(b"x"),
            "manifest": {"entrypoint": "main.py"},
            "redundancy": 1,
            "deadline": 2_000_000_000,
            "nonce": b"n",
            "payment_wei": 1,
            "encrypted": encrypted,
        }
    )


def test_key_store_is_private(tmp_path) -> None:
    ks = KeyStore(tmp_path)
    jid, key = bytes(32), crypto.new_bundle_key()
    assert ks.get(jid) is None
    p = ks.put(jid, key)
    assert ks.get(jid) == key and p.parent == tmp_path / "keys"
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600 and stat.S_IMODE(os.stat(p.parent).st_mode) == 0o700
    with pytest.raises(ValueError, match="32 bytes"):
        ks.put(jid, b"short")


def test_keys_of_ended_jobs_are_deleted(tmp_path) -> None:
    ks = KeyStore(tmp_path)
    ended, still_open, gone_while_down = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
    for jid in (ended, still_open, gone_while_down):
        ks.put(jid, crypto.new_bundle_key())
    assert ks.delete(ended) and ks.get(ended) is None and not ks.delete(ended)
    (ks.dir / f"{still_open.hex()}.tmp").write_bytes(b"half")  # a put cut short
    (ks.dir / "README").write_text("not a key")
    # at start: keep the keys of jobs the journal still has open, delete the rest
    assert ks.sweep({still_open}) == 2
    assert ks.get(still_open) is not None and ks.get(gone_while_down) is None
    assert sorted(p.name for p in ks.dir.iterdir()) == [f"{still_open.hex()}.key", "README"]
    assert KeyStore(tmp_path / "fresh").sweep(set()) == 0


def test_a_key_write_cut_short_is_swept_even_for_an_open_job(tmp_path) -> None:
    ks = KeyStore(tmp_path)
    jid = b"\x04" * 32
    ks.put(jid, crypto.new_bundle_key())
    (ks.dir / f"{jid.hex()}.key.tmp").write_bytes(b"half")  # write_private's temporary file
    assert ks.sweep({jid}) == 1
    assert sorted(p.name for p in ks.dir.iterdir()) == [f"{jid.hex()}.key"]


def test_grant_bodies_split_by_eight_and_pass_the_validator() -> None:
    key = crypto.new_bundle_key()
    nodes = [NodeKey.generate() for _ in range(MAX_GRANTS + 3)]
    bodies = grant_bodies(b"\x01" * 32, key, [n.node_id for n in nodes])
    assert [len(b["grants"]) for b in bodies] == [MAX_GRANTS, 3]
    origin = NodeKey.generate()
    for b in bodies:
        msg = m.decode(m.encode(origin, m.GRANT, b, 1, 1))  # the wire validator accepts it
        for nid, wrapped in msg.body["grants"]:
            assert len(wrapped) == 84
            nk = next(n for n in nodes if n.node_id == nid)
            assert crypto.unwrap_key(wrapped, nk) == key


def test_open_for_execution() -> None:
    key = crypto.new_bundle_key()
    sealed = crypto.seal_bundle(PLAIN, key)
    me, other = NodeKey.generate(), NodeKey.generate()
    assert open_for_execution(PLAIN, spec(False), b"", me, None) == PLAIN
    assert open_for_execution(sealed, spec(), crypto.wrap_key(key, me.node_id), me, None) == PLAIN
    assert open_for_execution(sealed, spec(), b"", me, key) == PLAIN  # the origin's stored key
    with pytest.raises(BundleKeyError, match="granted this node no bundle key"):
        open_for_execution(sealed, spec(), b"", me, None)
    with pytest.raises(BundleKeyError, match="wrapped for a different node key"):
        open_for_execution(sealed, spec(), crypto.wrap_key(key, other.node_id), me, None)
    with pytest.raises(BundleKeyError, match="wrong bundle key"):
        open_for_execution(sealed, spec(), crypto.wrap_key(crypto.new_bundle_key(), me.node_id), me, None)

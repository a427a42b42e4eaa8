"""Calibration: claim latency read from agents' journals, and the simulator side of the comparison."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from sims.calibrate import from_journals, sim_side, table


def _node(root: Path, name: str, me: bytes, events: list[tuple[bytes, str, bytes, float]]) -> None:
    d = root / name
    d.mkdir()
    (d / "control.json").write_text(json.dumps({"node_id": me.hex()}))
    db = sqlite3.connect(d / "journal.sqlite")
    db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, job_id BLOB, state TEXT, detail TEXT, "
               "node BLOB, at REAL)")
    db.executemany("INSERT INTO events (job_id, state, detail, node, at) VALUES (?, ?, '', ?, ?)", events)
    db.commit()
    db.close()


def test_claim_latency_from_journals(tmp_path: Path) -> None:
    a, b = b"\xaa" * 32, b"\xbb" * 32
    j1, j2 = b"\x01" * 32, b"\x02" * 32
    # a announces j1 at 10.0; b claims it at 10.25 (a hears of the claim later: not the claim time)
    _node(tmp_path, "node0", a, [(j1, "announced", a, 10.0), (j1, "claimed", b, 10.4), (j2, "claimed", a, 20.5)])
    _node(tmp_path, "node1", b, [(j1, "announced", a, 10.1), (j1, "claimed", b, 10.25), (j1, "running", b, 10.25),
                                 (j1, "committed", b, 11.0), (j2, "announced", b, 20.0)])
    lat, submits, execs = from_journals(tmp_path, [j1.hex(), j2.hex()])
    assert [round(x, 6) for x in lat] == [0.25, 0.5]
    assert submits == [10.0, 20.0]
    assert [round(x, 6) for x in execs] == [0.75]


def test_sim_side_runs_the_testnet_parameters() -> None:
    lat = sim_side(5, 20, 1, rate=4.0, runtime=0.5)
    assert len(lat) == 20 and all(0 <= x < 5 for x in lat)
    out = table(lat, None)
    assert "p99" in out and "n/a" in out

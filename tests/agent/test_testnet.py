"""`sandrun-p2p testnet` end to end on the real contracts (anvil when installed, else the embedded devnet)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def run_testnet(
    *args: str, timeout: float = 280, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``sandrun-p2p testnet ARGS`` in a child process, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "sandrun_p2p", "testnet", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_testnet_three_nodes_three_jobs_k2_settle(tmp_path) -> None:
    # no --data-dir: the testnet makes its own temp dir, and removes it after a good run
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    r = run_testnet(
        "--nodes",
        "3",
        "--jobs",
        "3",
        "--redundancy",
        "2",
        "--json",
        "--timeout",
        "120",
        env={**os.environ, "TMPDIR": str(tmp)},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "sandrun-testnet-" in r.stderr and not list(tmp.glob("sandrun-testnet-*"))
    out = json.loads(r.stdout)
    assert out["chain"] in ("anvil", "embedded")
    assert out["chain"] in r.stderr  # the progress output says which chain it used
    assert out["totals"]["settled"] == 3 and out["totals"]["not_settled"] == 0
    for j in out["jobs"]:
        assert j["state"] == "settled"
        assert len(j["claimants"]) == 2
        # each claimant's own record of its claim, after the submission (one host, one clock)
        assert {c["node"] for c in j["claims"]} == set(j["claimants"])
        assert j["submitted_at"] <= j["announced_at"] <= j["claims"][0]["at"] <= j["claims"][1]["at"]
        assert {r["node"] for r in j["runs"]} <= set(j["claimants"]) and j["runs"]
        assert all(j["claims"][0]["at"] <= r["started_at"] <= r["committed_at"] for r in j["runs"])
        assert set(j["trace_roots"].values()) == {j["accepted_root"]}
        assert j["paid_wei"] > 0
    assert "mesh formed" in r.stderr and "stopping every node" in r.stderr


def test_testnet_over_quic_settles_k2_jobs(tmp_path) -> None:
    """The same network on QUIC listen and bootstrap addresses (TLS 1.3 instead of Noise over TCP)."""
    r = run_testnet(
        "--nodes",
        "3",
        "--jobs",
        "2",
        "--redundancy",
        "2",
        "--transport",
        "quic",
        "--json",
        "--timeout",
        "120",
        "--data-dir",
        str(tmp_path / "net"),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    nodes = [line for line in r.stderr.splitlines() if line.lstrip().startswith("node") and " pid " in line]
    assert len(nodes) == 3 and all("/udp/" in line and "/quic-v1/p2p/" in line for line in nodes), nodes
    out = json.loads(r.stdout)
    assert out["totals"]["settled"] == 2
    for j in out["jobs"]:  # (exactly-k claiming is the TCP test's; here a late claim may bring a fallback in)
        assert len(j["claimants"]) >= 2 and set(j["trace_roots"].values()) == {j["accepted_root"]}


def test_testnet_k1_executor_sends_one_transaction_per_job(tmp_path) -> None:
    """k = 1 with per-job escrow: after the client's postJob, the executor's one commitReveal settles the job."""
    r = run_testnet(
        "--nodes", "3", "--jobs", "3", "--redundancy", "1", "--json", "--data-dir", str(tmp_path / "net")
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["totals"]["settled"] == 3 and all(j["paid_wei"] > 0 for j in out["jobs"])
    logs = "".join((tmp_path / "net" / f"node{i}" / "agent.log").read_text() for i in range(3))
    assert logs.count("kind=commit_reveal receipt=0x") == 3
    assert "kind=commit receipt=" not in logs and "kind=reveal receipt=" not in logs
    assert "commitReveal refused" not in logs and "tx-failed" not in logs
    assert logs.count("kind=settle receipt='already closed'") == 3  # (read from the commitReveal's receipt)


def test_testnet_voucher_jobs_settle_in_batches(tmp_path) -> None:
    """k = 1 jobs paid by voucher: no per-job escrow; each settles once the executor's batch is paid out."""
    r = run_testnet(
        "--nodes",
        "3",
        "--jobs",
        "6",
        "--pay",
        "voucher",
        "--json",
        "--data-dir",
        str(tmp_path / "net"),
        "--timeout",
        "120",
        "--job-size",
        "1000",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["totals"]["settled"] == 6 and out["totals"]["not_settled"] == 0
    for j in out["jobs"]:
        assert j["state"] == "settled" and j["paid_wei"] > 0
        assert set(j["trace_roots"].values()) == {j["accepted_root"]}
    logs = "".join((tmp_path / "net" / f"node{i}" / "agent.log").read_text() for i in range(3))
    assert "kind=commit receipt='voucher job" in logs and "queued for a batch" in logs
    assert "kind=commit receipt=0x" not in logs and "kind=reveal receipt=0x" not in logs  # no per-job tx
    assert "voucher-batch-failed" not in logs
    # every batch matched the roots its executor attested on gossip: audited without a fetch or a report
    assert "voucher-audit" not in logs
    r = run_testnet("--nodes", "2", "--pay", "voucher", "--redundancy", "2", timeout=60)
    assert r.returncode == 2 and "--pay voucher is for --redundancy 1 only" in r.stderr


def test_testnet_rejects_bad_arguments() -> None:
    r = run_testnet("--nodes", "2", "--redundancy", "3", timeout=60)
    assert r.returncode == 2 and "--redundancy must be between 1 and" in r.stderr


@pytest.mark.parametrize(
    "item, said",
    [
        ("deferred_spread=abc", "deferred_spread='abc': expected a float"),
        ("no_such=1", "no_such: no such protocol parameter"),
        ("pass_when_full", "expects KEY=VALUE"),
        ("shard_bits=true", "expected a int"),
    ],
)
def test_testnet_refuses_a_bad_protocol_parameter_before_starting_anything(item: str, said: str) -> None:
    r = run_testnet("--nodes", "2", "--core", item, timeout=60)
    assert r.returncode == 2 and said in r.stderr
    assert "chain:" not in r.stdout + r.stderr  # no chain, no agent was started


def test_protocol_parameters_over_the_testnets_are_typed_like_the_core_config() -> None:
    from sandrun_p2p.agent.testnet import core_overrides

    got = core_overrides(["deferred_spread=0", "pass_when_full=true", "fallback_interval=2"])
    assert got == {"deferred_spread": 0.0, "pass_when_full": True, "fallback_interval": 2.0}
    assert isinstance(got["deferred_spread"], float) and core_overrides([]) == {}


def test_faulty_executor_slashed_by_the_contract(tmp_path) -> None:
    """k=3 on the real SandrunMarket: the faulty node's dissenting root is outvoted and the contract slashes it."""
    import argparse

    from sandrun_p2p.agent.testnet import Testnet

    from .cluster import hello_job, wait_for

    args = argparse.Namespace(
        nodes=3,
        jobs=0,
        redundancy=3,
        json=True,
        data_dir=tmp_path / "net",
        chain="auto",
        timeout=120.0,
        job_size=0,
    )
    net = Testnet(args, lambda msg: None, faulty=(2,))
    try:
        net.start()
        clients = net.wait_mesh()
        faulty = net.nodes[2]["node_id"]
        r = clients[0].submit(**hello_job(redundancy=3, deadline_s=120))
        j = clients[0].wait_job(r["job_id"], ("settled", "refunded"), 90)
        assert j["state"] == "settled", j
        roots = {n: v["root"] for n, v in j["reveals"].items()}
        assert roots[faulty] != j["accepted_root"]

        def slashed():
            evs = clients[0].events(job=r["job_id"])["events"]
            return [e for e in evs if e["state"] == "slashed"]

        s = wait_for(slashed, 30, "the contract's Slashed event")
        assert {e["node"] for e in s} == {faulty} and "dissent" in s[0]["detail"]
        chain = clients[0].job(r["job_id"])["chain"]
        assert faulty not in chain["paid"] and len(chain["paid"]) == 2
    finally:
        net.stop()


def test_sigterm_stops_every_agent_and_the_chain(tmp_path) -> None:
    """Started as a script's background job would be (SIGINT ignored), `kill -TERM` stops every PID it reported."""
    import re
    import signal
    import time

    log = tmp_path / "testnet.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sandrun_p2p",
                "testnet",
                "--nodes",
                "2",
                "--data-dir",
                str(tmp_path / "net"),
                "--timeout",
                "120",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
    try:
        deadline = time.monotonic() + 150
        while "running; press Ctrl-C" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "testnet not ready in 150 s"
            time.sleep(0.1)  # polling the log with a deadline
        text = log.read_text(errors="replace")
        pids = [int(p) for p in re.findall(r"\(pid (\d+)\)|\bpid (\d+) ", text) for p in p if p]
        assert len(pids) == 3, text  # the chain and two agents
        assert all(_alive(p) for p in pids)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text(errors="replace")[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    gone_by = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < gone_by:
        time.sleep(0.1)
    assert not [p for p in pids if _alive(p)], log.read_text(errors="replace")[-3000:]
    assert "stopping every node (by PID)" in log.read_text()


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_testnet_keeps_its_state_after_a_failure(tmp_path) -> None:
    r = run_testnet(
        "--nodes", "2", "--timeout", "0.5", timeout=120, env={**os.environ, "TMPDIR": str(tmp_path)}
    )
    assert r.returncode == 1 and "node state and logs kept in" in r.stdout + r.stderr
    kept = list(tmp_path.glob("sandrun-testnet-*"))
    assert len(kept) == 1 and (kept[0] / "node0").is_dir()

"""Network benchmark, in one run on this machine:

1. raw gossip latency p50/p99 between N processes (the agent's own py-libp2p stack, ``sandrun_p2p.net``:
   Noise, mplex, gossipsub v1.1, validators decoding every message; no NodeCore, no agent), one message at a
   time (no batching), and the CPU each delivery cost;
2. job-claim latency p50/p99 in an N-agent testnet (announce -> k claims seen by the submitting node), one
   job at a time;
3. jobs/s through the same N-agent mesh with trivial k=1 jobs, full protocol including escrow, commit and
   reveal on chain (anvil when installed) and the chain's settlement checked per job; by default each node
   gets its share in one ``POST /v1/jobs/batch``; CPU seconds of every process during this phase.

The agent phases run with two job shards by default (``--shard-bits 1``: nodes 0-4 serve job topic 0, nodes 5-9
topic 1, adverts stay global; a job's messages reach only its shard's five nodes, and each origin submits into
its own shard). ``--shard-bits 0`` is the single-topic mesh that earlier figures (before branch agent25) used.
The configuration is printed first.

    python bench/net_bench.py [--nodes 10] [--gossip-msgs 40] [--claim-jobs 20] [--jobs 100] [--json]
                              [--one-by-one] [--skip-gossip] [--profile OUT.json] [--shard-bits 1]
                              [--pay escrow|voucher|both] [--origins N] [--publish-batch-window S]
                              [--transport tcp|quic]

``--transport quic`` runs every phase over QUIC (py-libp2p's QUIC transport, TLS 1.3) instead of TCP (Noise, mplex).

Prints the figures and the ratios against the goals (claim p99 <= 2 x gossip p99; >= 25 jobs/s).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


# ----------------------------------------------------------------------------- gossip worker (one process)


def gossip_worker(d: Path, index: int, n: int, msgs: int, rate: float, transport: str = "tcp") -> None:
    import trio

    from sandrun_p2p.agent.testnet import _addr, dial_plan
    from sandrun_p2p.net.host import NetConfig, Network
    from sandrun_p2p.net.topics import job_topic
    from sandrun_p2p.protocol import messages as m
    from sandrun_p2p.protocol.identity import NodeKey

    topic = job_topic(0)
    lat: list[float] = []

    def on_msg(msg, now):
        if msg.sender != key.node_id:
            lat.append(time.time() - msg.seq / 1e6)

    key = NodeKey.generate()

    async def main() -> None:
        # the agent's own settings
        net = Network(key, NetConfig(mdns=False, listen=[_addr(transport, 0)]), on_msg)
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            (d / f"addr{index}").write_text(net.addrs()[0])
            while len(list(d.glob("addr*"))) < n:
                await trio.sleep(0.05)
            for j in dial_plan(index, n):
                await net.connect((d / f"addr{j}").read_text())
            while not net.mesh_peers(topic):
                await trio.sleep(0.05)
            (d / f"ready{index}").write_text("1")
            while not (d / "go").exists():
                await trio.sleep(0.01)
            import resource

            cpu0 = resource.getrusage(resource.RUSAGE_SELF)
            body = {
                "job": b"\x00" * 32,
                "caps": {
                    "cpus": 1,
                    "mem_mb": 1,
                    "disk_mb": 0,
                    "gpus": [],
                    "enforced": ["network"],
                    "executor": "x",
                    "max_jobs": 1,
                },
            }
            for _ in range(msgs):
                seq = time.time_ns() // 1000  # the send time, in microseconds
                await net.publish(topic, m.encode(key, m.CLAIM, body, seq, int(time.time() * 1000)))
                await trio.sleep(n / rate)
            with trio.move_on_after(10):
                while len(lat) < msgs * (n - 1):
                    await trio.sleep(0.05)
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
            cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
            (d / f"lat{index}.json").write_text(json.dumps({"lat": lat, "cpu_s": cpu}))
            nursery.cancel_scope.cancel()

    trio.run(main)


def gossip_phase(n: int, msgs: int, rate: float, transport: str = "tcp") -> dict:
    d = Path(tempfile.mkdtemp(prefix="gossip-bench-"))
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", str(d), str(i), str(n), str(msgs), str(rate), transport]
        )
        for i in range(n)
    ]
    try:
        deadline = time.monotonic() + 120
        while len(list(d.glob("ready*"))) < n:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError("gossip workers did not form a mesh")
            time.sleep(0.05)
        time.sleep(3.0)  # let a few heartbeats settle the mesh after the last node joined
        (d / "go").write_text("1")
        for p in procs:
            p.wait(timeout=180)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    results = [json.loads((d / f"lat{i}.json").read_text()) for i in range(n)]
    shutil.rmtree(d, ignore_errors=True)
    lat = [x for r in results for x in r["lat"]]
    cpu = sum(r["cpu_s"] for r in results)
    expected = msgs * n * (n - 1)
    return {
        "nodes": n,
        "messages": msgs * n,
        "deliveries": len(lat),
        "expected_deliveries": expected,
        "rate_msgs_per_s": rate,
        "p50_ms": pct(lat, 50) * 1000,
        "p99_ms": pct(lat, 99) * 1000,
        "cpu_ms_per_delivery": 1000 * cpu / max(1, len(lat)),
    }


# ----------------------------------------------------------------------------- agent phases


def trivial_bundle(i: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        data = f"echo {i} > out.txt\n".encode()
        info = tarfile.TarInfo("main.sh")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def job_body(i: int, k: int, pay: str = "escrow") -> dict:
    body = {
        "manifest": {
            "entrypoint": "main.sh",
            "interpreter": "sh",
            "outputs": ["out.txt"],
            "timeout": 20,
            "memory_mb": 64,
        },
        "bundle_b64": base64.b64encode(trivial_bundle(i)).decode(),
        "redundancy": k,
        "deadline_s": 300,
    }
    if pay != "escrow":
        body["pay"] = pay
    return body


def proc_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of a process (all its threads) and of its waited-for children (executors), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    tck = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tck, (int(fields[13]) + int(fields[14])) / tck


def main_thread_cpu(pid: int) -> float:
    """CPU seconds of a process's main thread only (the trio loop; worker threads run the chain client)."""
    try:
        fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(net) -> dict[str, float]:
    """CPU seconds so far of every agent (and, apart, the sandboxed runs it started), the chain and this
    process (the bench client and its threads)."""
    snap = {}
    for i, p in enumerate(net.procs):
        snap[f"node{i}"], snap[f"node{i}-exec"] = proc_cpu(p.pid)
        snap[f"node{i}-loop"] = main_thread_cpu(p.pid)
    if net.local is not None and getattr(net.local, "pid", None):
        snap["chain"] = sum(proc_cpu(net.local.pid))
    snap["bench"] = sum(proc_cpu(os.getpid()))
    return snap


def profile_node0(testnet_module, out: Path, gate: Path) -> None:
    """Make the testnet start node 0 under ``bench/sampler.py`` (all threads, sampled while ``gate`` exists)."""
    import types

    real = subprocess
    started = []

    def popen(argv, *a, **kw):
        if not started and "sandrun_p2p.agent.cli_agent" in argv:
            started.append(argv)
            argv = [argv[0], str(ROOT / "bench" / "sampler.py"), str(out), str(gate), *argv[1:]]
        return real.Popen(argv, *a, **kw)

    testnet_module.subprocess = types.SimpleNamespace(
        Popen=popen, STDOUT=real.STDOUT, DEVNULL=real.DEVNULL, TimeoutExpired=real.TimeoutExpired
    )


def gossip_counts(clients) -> dict[str, float]:
    """Gossip counters summed over the nodes since they started (payloads published, of which batches;
    protocol messages accepted, batches received; the claim phase's few jobs are included), and the mean number
    of mesh peers per node and topic now."""
    out = {"published": 0, "batches_out": 0, "accepted": 0, "batches_in": 0}
    mesh: list[int] = []
    for c in clients:
        st = c.status()
        for k in out:
            out[k] += int(st["net"].get(k, 0))
        mesh.extend(st.get("mesh", {}).values())
    return {**out, "mesh_peers_mean": round(statistics.mean(mesh), 2) if mesh else 0.0}


def claim_latency(api, job_id: str, k: int, timeout: float = 30) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        evs = api.events(job=job_id)["events"]
        ann = [e["at"] for e in evs if e["state"] == "announced"]
        claims = sorted(e["at"] for e in evs if e["state"] == "claimed")
        if ann and len(claims) >= k:
            return claims[k - 1] - ann[0]
        time.sleep(0.05)
    raise RuntimeError(f"job {job_id} did not get {k} claims in {timeout}s")


def run_counts(net) -> dict[str, int]:
    """Every node's executions so far by how they ended (read from the journals, read-only): ``started``, and
    the runs stopped before their end, by reason (e.g. outranked by a later, higher-ranked claim)."""
    counts: dict[str, int] = {"started": 0}
    for node in net.nodes:
        db = Path(node["data_dir"]) / "journal.sqlite"
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            rows = con.execute(
                "SELECT status, reason, count(*) FROM executions GROUP BY status, reason"
            ).fetchall()
        finally:
            con.close()
        for status, reason, c in rows:
            counts["started"] += c
            if status == "cancelled":
                key = f"cancelled: {reason}"
                counts[key] = counts.get(key, 0) + c
    return counts


STEPS = ("fetch", "prepare", "run", "store")


def run_timings(net) -> dict[str, dict[str, float]]:
    """Where the executions' time went, from every agent's ``event=executed`` log lines (claim and throughput
    phases): per step (fetching the code, preparing the sandbox, the run, storing the result) and in all
    (``secs``), the median and p90 in ms."""
    steps: dict[str, list[float]] = {k: [] for k in (*STEPS, "secs")}
    for node in net.nodes:
        log = Path(node["data_dir"]) / "agent.log"
        if not log.exists():
            continue
        for line in log.read_text(errors="replace").splitlines():
            if "event=executed " not in line:
                continue
            for k, v in re.findall(r" (fetch|prepare|run|store|secs)=([0-9.]+)", line):
                steps[k].append(float(v) * 1000)
    return {k: {"p50_ms": pct(v, 50), "p90_ms": pct(v, 90), "n": len(v)} for k, v in steps.items() if v}


def origin_nodes(n: int, origins: int) -> list[int]:
    """The nodes the throughput jobs are submitted through: ``origins`` of the ``n``, spread evenly (so one per
    block of nodes, i.e. one per shard, when ``origins`` is the number of shards)."""
    origins = max(1, min(n, origins or n))
    return sorted({i * n // origins for i in range(origins)})


def throughput(
    net,
    clients: list,
    n: int,
    jobs: int,
    batch: bool,
    pay: str,
    gate: Path,
    profile_run: int,
    origins: int = 0,
) -> dict:
    """Submit ``jobs`` trivial k=1 jobs paid by ``pay`` through ``origins`` nodes (0: all) at once; wait for
    every settlement (``settled``: the per-job escrow paid out, or the voucher batch holding the job
    finalized)."""
    cpu0 = cpu_snapshot(net)
    if profile_run == 0:
        gate.write_text("1")
    t0 = time.monotonic()
    through = origin_nodes(n, origins)
    per_node = {
        idx: [
            job_body(i + 1000 * profile_run, 1, pay) for i in range(jobs) if through[i % len(through)] == idx
        ]
        for idx in through[:jobs]
    }

    def submit(idx: int) -> list[tuple[int, str]]:
        if not batch:
            return [(idx, clients[idx].submit(**b)["job_id"]) for b in per_node[idx]]
        out = []
        for at in range(0, len(per_node[idx]), 64):
            for r in clients[idx].submit_many(per_node[idx][at : at + 64]):
                if "error" in r:
                    raise RuntimeError(f"node{idx} could not escrow {r['job_id']}: {r['error']}")
                out.append((idx, r["job_id"]))
        return out

    with ThreadPoolExecutor(max_workers=len(per_node)) as pool:
        ids = [x for xs in pool.map(submit, list(per_node)) for x in xs]
    t_sub = time.monotonic() - t0
    # wait on each origin's event stream (long polls lingering 0.2 s, so a busy stream comes in fewer answers),
    # not by hammering the job endpoint
    by_node: dict[int, set[str]] = {}
    for idx, jid in ids:
        by_node.setdefault(idx, set()).add(jid)
    states: dict[str, str] = {}
    first: dict[tuple[str, str], float] = {}  # (job, state) -> when the origin first recorded it
    deadline = time.monotonic() + 300

    def follow(idx: int) -> None:
        want, since = by_node[idx], 0
        while want - set(states) and time.monotonic() < deadline:
            r = clients[idx].events(since=since, wait=2, linger=0.2)
            since = r["last"]
            for e in r["events"]:
                if e["job_id"] in want:
                    first.setdefault((e["job_id"], e["state"]), e["at"])
                    if e["state"] in ("settled", "refunded"):
                        states[e["job_id"]] = e["state"]

    with ThreadPoolExecutor(max_workers=len(by_node)) as pool:
        list(pool.map(follow, list(by_node)))
    pending = [jid for _, jid in ids if jid not in states]
    # where a job's time goes, as its origin saw it (medians over the settled jobs, ms)
    steps = (
        ("announced", "claimed"),
        ("claimed", "committed"),
        ("committed", "accepted"),
        ("accepted", "settled"),
    )
    phases = {}
    for a_, b_ in steps:
        xs = [first[(j, b_)] - first[(j, a_)] for j in states if (j, a_) in first and (j, b_) in first]
        phases[f"{a_}->{b_}"] = round(1000 * statistics.median(xs), 1) if xs else None
    wall = time.monotonic() - t0
    cpu1 = cpu_snapshot(net)
    gate.unlink(missing_ok=True)
    gossip = gossip_counts(clients)
    cpu = {k: round(cpu1[k] - cpu0.get(k, 0.0), 2) for k in cpu1}
    settled_n = sum(1 for s in states.values() if s == "settled") or 1
    total = sum(v for k, v in cpu.items() if not k.endswith("-loop"))  # a loop is part of its agent
    cpu_summary = {
        "total_s": round(total, 2),
        "agents_s": round(sum(v for k, v in cpu.items() if k.startswith("node") and "-" not in k), 2),
        "agent_loops_s": round(sum(v for k, v in cpu.items() if k.endswith("-loop")), 2),
        "executions_s": round(sum(v for k, v in cpu.items() if k.endswith("-exec")), 2),
        "chain_s": cpu.get("chain", 0.0),
        "bench_s": cpu.get("bench", 0.0),
        "ms_per_settled_job": round(1000 * total / settled_n, 1),
        "per_process_s": cpu,
    }
    # check the chain's own record of every job the origin reports settled (who was paid, how much)
    origin_of = {jid: idx for idx, jid in ids}
    on_chain = {}
    for jid, st in states.items():
        if st == "settled":
            c = clients[origin_of[jid]].job(jid).get("chain") or {}
            on_chain[jid] = c.get("state") == "settled" and int(c.get("paid_wei", 0)) > 0
    settled = sum(1 for ok in on_chain.values() if ok)
    return {
        "pay": pay,
        "jobs": jobs,
        "settled": settled,
        "not_finished": len(pending),
        "settled_by_gossip_not_on_chain": sum(1 for ok in on_chain.values() if not ok),
        "submit_s": round(t_sub, 2),
        "wall_s": round(wall, 2),
        "submission": "batch per node" if batch else "one request per job",
        "origins": through,
        "phase_median_ms": phases,
        "jobs_per_s": settled / wall if wall else 0.0,
        "cpu": cpu_summary,
        "gossip": gossip,
    }


def agent_phases(
    n: int,
    claim_jobs: int,
    k_claim: int,
    jobs: int,
    profile: Path | None = None,
    batch: bool = True,
    claim_quiet: bool = True,
    pays: tuple[str, ...] = ("escrow",),
    shard_bits: int = 0,
    origins: int = 0,
    batch_window: float = 0.0,
    transport: str = "tcp",
    core: tuple[str, ...] = (),
) -> dict:
    from sandrun_p2p.agent import testnet
    from sandrun_p2p.agent.testnet import Testnet

    gate = Path(tempfile.mkdtemp(prefix="bench-gate-")) / "sampling"
    if profile is not None:
        profile_node0(testnet, profile, gate)

    args = argparse.Namespace(
        nodes=n,
        jobs=0,
        redundancy=1,
        json=True,
        data_dir=None,
        chain="auto",
        timeout=180.0,
        job_size=0,
        pay="escrow",
        shard_bits=shard_bits,
        publish_batch_window=batch_window,
        transport=transport,
        core=list(core),
    )
    net = Testnet(args, lambda msg: print(msg, file=sys.stderr))
    try:
        net.start()
        clients = net.wait_mesh()
        # claim latency: one job at a time, announce -> k claims as seen by the origin; with ``claim_quiet`` each
        # job waits until the previous one settled (the mesh otherwise idle, as in the gossip phase), else the
        # next job is announced while the previous one still executes, commits and settles
        lats = []
        for i in range(claim_jobs):
            api = clients[i % n]
            r = api.submit(**job_body(10_000 + i, k_claim))
            lats.append(claim_latency(api, r["job_id"], k_claim))
            if claim_quiet:
                api.wait_job(r["job_id"], ("settled", "refunded", "failed"), 60)
        runs = {
            pay: throughput(net, clients, n, jobs, batch, pay, gate, i, origins) for i, pay in enumerate(pays)
        }
        executions = run_counts(net)
        return {
            "executions": executions,
            "run_timings": run_timings(net),
            "claim": {
                "jobs": claim_jobs,
                "k": k_claim,
                "p50_ms": pct(lats, 50) * 1000,
                "after_previous_settled": claim_quiet,
                "p99_ms": pct(lats, 99) * 1000,
                "mean_ms": statistics.mean(lats) * 1000,
            },
            "throughput": runs[pays[-1]],
            "throughput_by_pay": runs,
            "chain": net.chain_kind,
        }
    finally:
        net.stop(remove_state=True)
        shutil.rmtree(gate.parent, ignore_errors=True)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        d, i, n, msgs, rate, transport = sys.argv[2:8]
        gossip_worker(Path(d), int(i), int(n), int(msgs), float(rate), transport)
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=10)
    p.add_argument("--gossip-msgs", type=int, default=40, help="messages each gossip process publishes")
    p.add_argument("--gossip-rate", type=float, default=5.0, help="total gossip messages per second")
    p.add_argument("--claim-jobs", type=int, default=20)
    p.add_argument("--claim-k", type=int, default=2)
    p.add_argument("--jobs", type=int, default=100, help="trivial k=1 jobs for the throughput phase")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--claim-overlap",
        action="store_true",
        help="announce each claim-phase job as soon as the previous one has its claims (default: once it "
        "settled, so claims are timed on an otherwise idle mesh)",
    )
    p.add_argument(
        "--one-by-one",
        action="store_true",
        help="submit the throughput jobs one request per job (default: one batch request per node)",
    )
    p.add_argument("--skip-gossip", action="store_true", help="agent phases only (no ratio against gossip)")
    p.add_argument(
        "--pay",
        choices=["escrow", "voucher", "both"],
        default="escrow",
        help="how the throughput jobs are paid: per-job escrow, vouchers settled in batches, or both "
        "(escrow first, then voucher, on the same mesh; prints the ratio)",
    )
    p.add_argument(
        "--shard-bits",
        type=int,
        default=1,
        help="agent phases: 2**B job topics, contiguous blocks of nodes serving one each (default 1: "
        "two shards of five nodes; 0: one topic for all)",
    )
    p.add_argument(
        "--publish-batch-window",
        type=float,
        default=0.0,
        help="agents' publish_batch_window_s: wait this long to batch queued gossip (default 0)",
    )
    p.add_argument(
        "--origins",
        type=int,
        default=0,
        help="submit the throughput jobs through this many nodes, spread evenly (default 0: all)",
    )
    p.add_argument(
        "--transport",
        choices=["tcp", "quic"],
        default="tcp",
        help="every phase over TCP (Noise, mplex; default) or QUIC (TLS 1.3)",
    )
    p.add_argument(
        "--core",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a protocol parameter for every agent, over the testnet's (as sandrun-p2p testnet --core), "
        "e.g. --core deferred_spread=0 for the rule before session 9; repeatable",
    )
    p.add_argument(
        "--profile",
        type=Path,
        help="sample node 0's stacks (all threads) during the throughput phase; JSON written here",
    )
    a = p.parse_args()
    from sandrun_p2p.agent.testnet import core_overrides

    try:
        core = core_overrides(a.core)
    except ValueError as e:
        p.error(str(e))
    t0 = time.monotonic()
    config = {
        "nodes": a.nodes,
        "shard_bits": a.shard_bits,
        "pay": a.pay,
        "origins": a.origins or a.nodes,
        "publish_batch_window_s": a.publish_batch_window,
        "jobs": a.jobs,
        "transport": a.transport,
        "submission": "one request per job" if a.one_by_one else "batch per node",
        **({"core": core} if core else {}),
    }
    if not a.json:
        print("configuration: " + ", ".join(f"{k} {v}" for k, v in config.items()), flush=True)
    g = (
        gossip_phase(a.nodes, a.gossip_msgs, a.gossip_rate, a.transport)
        if not a.skip_gossip
        else {
            "nodes": a.nodes,
            "messages": 0,
            "deliveries": 0,
            "expected_deliveries": 0,
            "rate_msgs_per_s": a.gossip_rate,
            "p50_ms": float("nan"),
            "p99_ms": float("nan"),
        }
    )
    pays = ("escrow", "voucher") if a.pay == "both" else (a.pay,)
    ag = agent_phases(
        a.nodes,
        a.claim_jobs,
        a.claim_k,
        a.jobs,
        a.profile,
        not a.one_by_one,
        not a.claim_overlap,
        pays,
        a.shard_bits,
        a.origins,
        a.publish_batch_window,
        a.transport,
        tuple(a.core),
    )
    out = {
        "machine": {"cpus": os.cpu_count()},
        "config": config,
        "gossip": g,
        **ag,
        "ratios": {
            "claim_p99_over_gossip_p99": ag["claim"]["p99_ms"] / g["p99_ms"],
            "jobs_per_s_over_goal_25": ag["throughput"]["jobs_per_s"] / 25,
        },
        "wall_s": round(time.monotonic() - t0, 1),
    }
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        print(
            f"gossip ({g['nodes']} processes, {g['rate_msgs_per_s']} msg/s): p50 {g['p50_ms']:.1f} ms, "
            f"p99 {g['p99_ms']:.1f} ms, delivered {g['deliveries']}/{g['expected_deliveries']}, "
            f"{g.get('cpu_ms_per_delivery', float('nan')):.2f} ms CPU per delivery"
        )
        c, t = ag["claim"], ag["throughput"]
        when = (
            "each after the previous settled"
            if c["after_previous_settled"]
            else "overlapping the previous job"
        )
        print(
            f"claim latency (k={c['k']}, {c['jobs']} jobs, {when}): p50 {c['p50_ms']:.1f} ms, "
            f"p99 {c['p99_ms']:.1f} ms"
        )
        for t in ag["throughput_by_pay"].values():
            print(
                f"throughput ({t['pay']}): {t['settled']}/{t['jobs']} trivial k=1 jobs settled in {t['wall_s']} s = "
                f"{t['jobs_per_s']:.2f} jobs/s (chain: {ag['chain']})"
            )
            cpu = t["cpu"]
            print(
                f"CPU during the throughput phase ({t['pay']}): {cpu['total_s']} s on {os.cpu_count()} cores = "
                f"{cpu['ms_per_settled_job']} ms per settled job (agents {cpu['agents_s']} s, of which their trio "
                f"loops {cpu['agent_loops_s']} s and worker threads the rest; their sandboxed runs "
                f"{cpu['executions_s']} s, chain {cpu['chain_s']} s, bench client {cpu['bench_s']} s)"
            )
            print(
                f"  through {len(t['origins'])} origin node(s); median ms per step at the origin: "
                + ", ".join(f"{k} {v}" for k, v in t["phase_median_ms"].items())
            )
            g2 = t["gossip"]
            print(
                f"gossip until the end of this run (all nodes, earlier phases included): {g2['published']} "
                f"payloads published, {g2['batches_out']} of them batches; {g2['accepted']} messages accepted, "
                f"{g2['batches_in']} batches received; {g2['mesh_peers_mean']} mesh peers per node and topic"
            )
        runs = ag["throughput_by_pay"]
        if len(runs) == 2:
            e, v = runs["escrow"], runs["voucher"]
            print(
                f"voucher / escrow: jobs/s {v['jobs_per_s'] / max(e['jobs_per_s'], 1e-9):.2f}x, CPU ms per job "
                f"{v['cpu']['ms_per_settled_job'] / max(e['cpu']['ms_per_settled_job'], 1e-9):.2f}x"
            )
        ex = dict(ag["executions"])
        print(
            f"runs on all nodes (claim and throughput phases): {ex.pop('started')} started"
            + "".join(f"; {c} {why}" for why, c in sorted(ex.items()))
        )
        tm = ag["run_timings"]
        if tm:
            print(
                "where an execution's time went (all nodes, median / p90 ms): "
                + ", ".join(
                    f"{k} {tm[k]['p50_ms']:.0f} / {tm[k]['p90_ms']:.0f}" for k in (*STEPS, "secs") if k in tm
                )
                + " (secs: the whole execution, start to result stored)"
            )
        r = out["ratios"]
        print(
            f"ratios: claim p99 / gossip p99 = {r['claim_p99_over_gossip_p99']:.2f} (goal <= 2); "
            f"jobs/s / 25 = {r['jobs_per_s_over_goal_25']:.2f} (goal >= 1)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

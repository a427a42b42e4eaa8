"""Restart semantics from the journal, in process (no network started): a stored result is re-committed
without executing again; an execution interrupted by a crash is released; the journal survives reopen."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import pytest
import trio

from sandrun_p2p.agent.config import AgentConfig, ConfigError, build
from sandrun_p2p.agent.journal import Journal
from sandrun_p2p.agent.runtime import Agent
from sandrun_p2p.exec import ExecError
from sandrun_p2p.exec.capabilities import caps_from_exec
from sandrun_p2p.net.keys import KeyFileError, load_or_create_key
from sandrun_p2p.protocol import messages as m
from sandrun_p2p.protocol.identity import NodeKey
from sandrun_p2p.protocol.jobspec import JobSpec
from sandrun_p2p.protocol.verification import commitment

CAPS = {
    "cpus": 2,
    "mem_mb": 4096,
    "disk_mb": 1000,
    "gpus": [],
    "enforced": {"network": True},
    "executor": "local",
}


class NoExecutor:
    calls = 0

    async def run(self, *a, **kw):  # pragma: no cover - must never run
        NoExecutor.calls += 1
        raise AssertionError("a journaled job must not be executed again")


class NoChain:
    kind = "none"


class NoStore:
    fetcher = None


def make_agent(data_dir: Path, key: NodeKey) -> Agent:
    cfg = AgentConfig(data_dir=data_dir, mdns=False, core={"advert_interval": 5.0})
    return Agent(cfg, key=key, executor=NoExecutor(), store=NoStore(), chain=NoChain(), exec_caps=CAPS)


def job_message(origin: NodeKey, nonce: bytes) -> tuple[bytes, bytes]:
    spec = JobSpec.from_dict(
        {
            "code_cid": "bafkreiexamplecode",
            "manifest": {"entrypoint": "main.py"},
            "redundancy": 1,
            "deadline": int(time.time()) + 600,
            "nonce": nonce,
        }
    )
    body = {"spec": spec.to_dict(), "seed": b"\x01" * 32, "origin_ts": int(time.time() * 1000)}
    raw = m.encode(origin, m.JOB, body, 1, int(time.time() * 1000))
    return spec.job_id, raw


def published(agent: Agent) -> list[m.Message]:
    out = []
    while True:
        try:
            _topic, raw = agent._pub_recv.receive_nowait()
        except trio.WouldBlock:
            return out
        out.append(m.decode(raw))


async def test_restart_recommits_stored_result_without_executing(tmp_path: Path) -> None:
    key, origin = NodeKey.generate(), NodeKey.generate()
    jid, raw = job_message(origin, b"a")
    j = Journal(tmp_path / "journal.sqlite")
    j.add_message(jid, m.JOB, raw)
    j.event(jid, "announced", "", origin.node_id)
    j.execution_started(jid)
    root, salt = b"\x02" * 32, b"\x03" * 32
    j.execution_done(jid, root, salt, "bafkreitrace", "bafyresult", 7)
    j.close()  # the "crash": nothing else survives

    agent = make_agent(tmp_path, key)
    assert agent.replay_journal() == 1
    msgs = published(agent)
    kinds = [x.kind for x in msgs]
    # k = 1: the commitment completes the k, so it travels inside the reveal (one message)
    assert m.CLAIM in kinds and m.REVEAL in kinds and m.COMMIT not in kinds
    commit = next(x for x in msgs if x.commitment is not None)
    assert commit.commitment == commitment(jid, key.node_id, root, salt)
    assert commit.body["root"] == root and commit.body["salt"] == salt
    assert NoExecutor.calls == 0
    with pytest.raises(trio.WouldBlock):
        agent._exec_recv.receive_nowait()  # nothing was sent to the executor
    agent.journal.close()


async def test_restart_releases_interrupted_execution(tmp_path: Path) -> None:
    key, origin = NodeKey.generate(), NodeKey.generate()
    jid, raw = job_message(origin, b"b")
    j = Journal(tmp_path / "journal.sqlite")
    j.add_message(jid, m.JOB, raw)
    j.execution_started(jid)  # killed while running
    j.close()

    agent = make_agent(tmp_path, key)
    agent.replay_journal()
    msgs = published(agent)
    release = [x for x in msgs if x.kind == m.RELEASE]
    assert len(release) == 1 and "restart" in release[0].body["reason"]
    assert agent.journal.execution(jid).status == "abandoned"
    with pytest.raises(trio.WouldBlock):
        agent._exec_recv.receive_nowait()
    agent.journal.close()


def test_journal_events_and_states(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    jid = b"\x09" * 32
    j.event(jid, "announced", "", b"")
    j.event(jid, "evidence", "dissent", b"\x01" * 32)  # logged, does not change the state
    assert j.job(jid)["state"] == "announced"
    j.event(jid, "settled", "", b"")
    j.event(jid, "failed", "late", b"")  # nothing moves a final job
    assert j.job(jid)["state"] == "settled" and j.job(jid)["final"]
    assert [e["state"] for e in j.events(jid)] == ["announced", "evidence", "settled", "failed"]
    assert j.open_jobs() == []
    mode = j.db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    j.close()


def test_key_file_is_private_and_stable(tmp_path: Path) -> None:
    k1 = load_or_create_key(tmp_path)
    assert (tmp_path / "node.key").stat().st_mode & 0o777 == 0o600
    assert load_or_create_key(tmp_path).node_id == k1.node_id
    (tmp_path / "node.key").chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_or_create_key(tmp_path)
    (tmp_path / "node.key").chmod(0o600)
    (tmp_path / "node.key").write_text("garbage")
    with pytest.raises(KeyFileError, match="not a sandrun-p2p key file"):
        load_or_create_key(tmp_path)


def test_config_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown setting"):
        build(tmp_path, {"colour": 1}, {})
    with pytest.raises(ConfigError, match=r"\[core\] has unknown"):
        build(tmp_path, {"core": {"nope": 1}}, {}).core_config()
    with pytest.raises(ConfigError, match=r"\[core\] deferred_spread='soon': expected a float"):
        build(
            tmp_path, {"core": {"deferred_spread": "soon"}}, {}
        ).core_config()  # (not a crash in a running node)
    assert build(tmp_path, {"core": {"fallback_interval": 3}}, {}).core_config().fallback_interval == 3.0
    with pytest.raises(ValueError, match="must end with /p2p/"):
        build(tmp_path, {}, {"bootstrap": ["/ip4/127.0.0.1/tcp/1"]}).validate()
    with pytest.raises(ValueError, match="not a multiaddr"):
        build(tmp_path, {}, {"listen": ["tcp://nope"]}).validate()
    with pytest.raises(ConfigError, match="loopback"):
        build(tmp_path, {"control_host": "0.0.0.0"}, {}).validate()
    with pytest.raises(ConfigError, match="history_s must be a number >= 0, not 'a week'"):
        build(tmp_path, {"history_s": "a week"}, {}).validate()
    with pytest.raises(ConfigError, match="max_jobs must be a number >= 0, not -1"):
        build(tmp_path, {"max_jobs": -1}, {}).validate()
    cfg = build(tmp_path, {"max_jobs": 3, "mdns": True}, {"mdns": False, "max_jobs": None})
    assert (cfg.max_jobs, cfg.mdns) == (3, False)  # flags override the file; None means "not given"


def test_caps_from_exec_maps_gpus_and_enforcement() -> None:
    caps = caps_from_exec(
        {
            **CAPS,
            "gpus": [{"model": "T4", "vram_mb": 15360, "compute_capability": "7.5", "cuda_version": "12.2"}],
            "enforced": {"network": True, "memory": "cgroup-v2", "disk": False, "probe_error": "x"},
        },
        {},
        0,
    )
    assert caps.gpus[0].cc == "7.5" and caps.gpus[0].cuda == "12.2"
    assert caps.enforced == frozenset({"network", "memory"})
    assert caps.max_jobs == 2  # one per CPU by default
    assert caps_from_exec(CAPS, {"max_jobs": 5}, 0).max_jobs == 5


def test_gpus_setting_from_file_and_flag(tmp_path: Path) -> None:
    from sandrun_p2p.agent.cli_agent import add_arguments, config_from_args

    p = argparse.ArgumentParser()
    add_arguments(p)
    assert config_from_args(p.parse_args(["--data-dir", str(tmp_path), "--gpus", "0,2"])).gpus == [0, 2]
    assert config_from_args(p.parse_args(["--data-dir", str(tmp_path), "--gpus", "none"])).gpus == []
    assert config_from_args(p.parse_args(["--data-dir", str(tmp_path)])).gpus is None  # all it has
    with pytest.raises(SystemExit):
        p.parse_args(["--gpus", "first"])
    with pytest.raises(ConfigError, match="GPU indices"):
        build(tmp_path, {"gpus": ["0"]}, {}).validate()


def test_job_runtimes_from_file_and_flag_reach_the_executor(tmp_path: Path) -> None:
    from sandrun_p2p.agent.build import make_executor
    from sandrun_p2p.agent.cli_agent import add_arguments, config_from_args

    rt = tmp_path / "venv"
    (rt / "bin").mkdir(parents=True)
    p = argparse.ArgumentParser()
    add_arguments(p)
    cfg = config_from_args(p.parse_args(["--data-dir", str(tmp_path / "d"), "--job-runtime", str(rt)]))
    assert cfg.job_runtimes == [str(rt)]
    assert build(tmp_path, {"job_runtimes": [str(rt)]}, {}).job_runtimes == [str(rt)]
    with pytest.raises(ConfigError, match="absolute folder paths"):
        build(tmp_path, {"job_runtimes": "venv"}, {}).validate()
    with pytest.raises(ConfigError, match="absolute folder paths"):
        build(tmp_path, {"job_runtimes": ["venv"]}, {}).validate()
    if shutil.which("bwrap"):
        (tmp_path / "d").mkdir()
        assert make_executor(cfg).runtimes == [str(rt.resolve())]
        with pytest.raises(ExecError, match="node's own files"):  # the data dir itself: its keys
            make_executor(build(tmp_path / "d", {"job_runtimes": [str(tmp_path)]}, {}))

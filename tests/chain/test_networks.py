"""The same client on anvil and on the embedded chain served to other processes; keys; the deploy command."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from chain_world import ETH, PARAMS, ensure_contract_packages, h

from sandrun_p2p.chain import cli
from sandrun_p2p.chain.anvil import Anvil, find_anvil
from sandrun_p2p.chain.chain import UNUSED_MIDDLEWARE, Chain, Signer, load_signer
from sandrun_p2p.chain.crypto import ResultsTree, commitment
from sandrun_p2p.chain.deployment import Deployment
from sandrun_p2p.chain.devnet import start_local_chain
from sandrun_p2p.chain.errors import ChainError
from sandrun_p2p.chain.events import EventPoller
from sandrun_p2p.chain.market import STATE_FAILED, STATE_SETTLED, Market, Opening


def _param_args() -> list[str]:
    return [
        "--min-stake", str(PARAMS.min_stake), "--fault-penalty", str(PARAMS.fault_penalty),
        "--unbonding-delay", str(PARAMS.unbonding_delay), "--reveal-window", str(PARAMS.reveal_window),
        "--max-job-duration", str(PARAMS.max_job_duration), "--challenge-window", str(PARAMS.challenge_window),
        "--deposit-delay", str(PARAMS.deposit_delay),
    ]  # fmt: skip


def lifecycle(chain: Chain, market: Market) -> None:
    """k = 3 with a dissenter, a refund after a deadline, and a batch: the same code on any chain."""
    dev = chain.dev_signers()
    nodes = []
    for i in range(3):
        m = market.as_(dev[1 + i])
        nid = h(f"net-node-{i}")
        m.register(nid, 2 * ETH)
        nodes.append((m, nid))
    client = market.as_(chain.new_account(10 * ETH, funder=dev[0]))
    job_id = h("net-job")
    client.post_job(job_id, 3, 2, chain.now() + 500, ETH)
    roots = [h("R"), h("R"), h("wrong")]
    openings = []
    for pos, ((m, nid), root) in enumerate(zip(nodes, roots, strict=True)):
        salt = os.urandom(32)
        m.commit(job_id, commitment(job_id, nid, root, salt), ETH // 4)
        openings.append(Opening(pos, root, salt, ETH // 4))
    with pytest.raises(ChainError) as e:
        nodes[0][0].commit(job_id, h("again"), 1)
    assert e.value.reason == "CommitClosed"
    res = nodes[0][0].reveal(job_id, openings)
    closed = res.event("JobClosed")
    assert closed["state"] == STATE_SETTLED and closed["agreeing"] == 2
    assert res.event("Slashed")["node"] == market.node_index(nodes[2][0].account)
    assert nodes[0][0].withdraw().event("Withdrawn")["amount"] == ETH // 4 + PARAMS.fault_penalty // 2
    assert client.claim_refund(job_id).event("RefundClaimed")["amount"] == ETH // 2

    job2 = h("net-job-2")
    client.post_job(job2, 1, 1, chain.now() + 100, ETH)
    chain.advance(200)
    assert market.as_(dev[5]).finalize(job2).event("JobClosed")["state"] == STATE_FAILED

    client.deposit(ETH)
    tree = ResultsTree([(h("b1"), h("r1")), (h("b2"), h("r2"))])
    v = client.sign_voucher(nodes[1][0].account, h("b2"), 2, 500, 1000)
    bid = nodes[1][0].settle_batch(v, tree).event("BatchSettled")["batchId"]
    chain.advance(PARAMS.challenge_window + 1)
    assert market.as_(dev[5]).finalize_batch(bid).event("BatchPaid")["amount"] == 1000
    # the raw-log poller (JSON-RPC hex fields) decodes what the receipts decoded
    polled = EventPoller(market, from_block=0, names={"JobClosed", "BatchPaid"}).poll()
    assert [(e.name, e.args.get("jobId", e.args.get("batchId"))) for e in polled] == [
        ("JobClosed", job_id),
        ("JobClosed", job2),
        ("BatchPaid", bid),
    ]
    # polls to "latest" right after reading the head (nothing mined since) answer, and find what follows
    fast = EventPoller(market, from_block=0, names={"JobClosed", "BatchPaid"}, head_every=8)
    assert len(fast.poll()) == 3 and fast.poll() == [] and fast.poll() == []
    job3 = h("net-job-3")
    client.post_job(job3, 1, 1, chain.now() + 100, ETH)
    chain.advance(200)
    market.as_(dev[5]).finalize(job3)
    assert [(e.name, e.args["jobId"]) for e in fast.poll()] == [("JobClosed", job3)] and fast.poll() == []


@pytest.mark.anvil
def test_lifecycle_on_anvil(tmp_path):
    if find_anvil() is None:
        why = ensure_contract_packages()  # CI installs it here; a developer without npm gets a skip
        if find_anvil() is None:
            pytest.skip(f"anvil is not installed (`npm ci` in contracts/ installs it): {why}")
    with Anvil() as anvil:
        out = tmp_path / "addresses.json"
        rc = cli.main(["--blockchain-rpc", anvil.url, "--dev-account", "--out", str(out), *_param_args()])
        assert rc == 0
        dep = Deployment.load(out)
        assert dep.chain_id == 31337 and dep.kind == "anvil" and dep.rpc_url == anvil.url
        market = dep.connect(None)
        assert market.chain.kind == "anvil"
        lifecycle(market.chain, market)
        pid = anvil.pid
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_embedded_chain_shared_over_json_rpc(tmp_path):
    with start_local_chain("embedded") as local:
        assert local.kind == "devnet" and local.url.startswith("http://127.0.0.1:")
        out = tmp_path / "addresses.json"
        # eth-tester's first account
        os.environ["SANDRUN_TEST_DEPLOYER"] = "0x" + (1).to_bytes(32, "big").hex()
        try:
            rc = cli.main(
                [
                    "--blockchain-rpc",
                    local.url,
                    "--key-env",
                    "SANDRUN_TEST_DEPLOYER",
                    "--out",
                    str(out),
                    *_param_args(),
                ]
            )
        finally:
            del os.environ["SANDRUN_TEST_DEPLOYER"]
        assert rc == 0
        dep = Deployment.load(out)
        market = Market(Chain.connect(local.url, kind="devnet"), dep.market_address)
        names = {name for _, name in market.chain.w3.middleware_onion.middleware}
        assert not names & set(UNUSED_MIDDLEWARE)  # the whole lifecycle runs without them
        lifecycle(market.chain, market)
        # another process sees the same chain through the addresses file
        code = (
            "import sys; from sandrun_p2p.chain.deployment import Deployment; "
            "from sandrun_p2p.chain.chain import Chain; d = Deployment.load(sys.argv[1]); "
            "m = d.market(Chain.connect(sys.argv[2], kind='devnet')); "
            "print(m.job(bytes.fromhex(sys.argv[3])).state_name)"
        )
        r = subprocess.run(
            [sys.executable, "-c", code, str(out), local.url, h("net-job").hex()],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "settled"
        pid = local.pid
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_keys_from_env_and_keystore(tmp_path, monkeypatch):
    from eth_account import Account

    key = os.urandom(32)
    monkeypatch.setenv("SANDRUN_KEY", key.hex())
    assert load_signer(key_env="SANDRUN_KEY") == Signer.from_key(key)
    monkeypatch.setenv("SANDRUN_BAD_KEY", "nope")
    with pytest.raises(ChainError):
        load_signer(key_env="SANDRUN_BAD_KEY")
    with pytest.raises(ChainError):
        load_signer(key_env="SANDRUN_UNSET_KEY")
    ks = tmp_path / "key.json"
    ks.write_text(json.dumps(Account.encrypt(key, "pw", kdf="pbkdf2", iterations=1000)))
    monkeypatch.setenv("SANDRUN_KEYSTORE_PASSWORD", "pw")
    assert load_signer(keystore=str(ks)).address == Account.from_key(key).address
    monkeypatch.setenv("SANDRUN_KEYSTORE_PASSWORD", "wrong")
    with pytest.raises(ChainError) as e:
        load_signer(keystore=str(ks))
    assert e.value.reason == "bad-password"
    assert "0x" not in repr(Signer.from_key(key)).split("(")[1][42:]  # the key is never printed


def test_deploy_command_reports_errors(tmp_path, capsys):
    rc = cli.main(
        ["--blockchain-rpc", "http://127.0.0.1:9", "--key-env", "NOPE", "--out", str(tmp_path / "x")]
    )
    assert rc == 1
    assert "no JSON-RPC node answers" in capsys.readouterr().err
    rc = cli.main(["--out", str(tmp_path / "embedded.json"), "--reveal-window", "0"])
    assert rc == 1  # BadParameter from the constructor, reported as such

"""`sandrun-p2p submit`: submit a job through a peer, follow it, fetch the verified result, get refunds.

    sandrun-p2p submit --code ./my-script.py --manifest job.json --payment 0.1 --redundancy 2 --wait --out out/
    sandrun-p2p submit --manifest job.json --redundancy 3 --quote        # price only, nothing is sent
    sandrun-p2p submit --watch JOB | --result JOB --out DIR | --refund JOB | --list
    sandrun-p2p submit --code job/ --manifest job.json --verify adaptive --value-usd 0.05 --out out/

Exit status: 0 done (submitted; with --wait: settled and the result verified), 1 the job failed or its
result was refused, 2 bad input or an unreachable peer/chain (nothing was paid unless the message says so).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_argument_group("the job")
    what.add_argument(
        "--code", help="the job's code: a script file (packed under its base name) or a directory"
    )
    what.add_argument(
        "--manifest", help="job manifest (JSON): entrypoint, interpreter, outputs, timeout, memory_mb..."
    )
    what.add_argument("--redundancy", type=int, default=1, help="executors that must run it (1-5; default 1)")
    pay = what.add_mutually_exclusive_group()
    pay.add_argument("--payment", help="escrow in ETH (default: the quote)")
    pay.add_argument("--payment-usd", help="escrow in USD, converted at --usd-per-eth")
    what.add_argument("--usd-per-eth", default="3000", help="USD/ETH rate for quotes (default 3000)")
    what.add_argument(
        "--deadline",
        type=int,
        metavar="SECONDS",
        help="settle within this many seconds (default: 2 x timeout + 180, at least 300)",
    )
    what.add_argument(
        "--no-encrypt",
        action="store_true",
        help="store the bundle in plaintext and let executors store the result in the clear "
        "(by default the bundle is encrypted and the result sealed to a per-job key)",
    )
    what.add_argument(
        "--escrow",
        choices=("client", "peer", "auto"),
        default="client",
        help="client: a fresh per-job key funded by your wallet posts the escrow (default); "
        "peer: the peer node escrows from its own account (not anonymous, plaintext bundle); "
        "auto: client when the peer supports it, else peer (says so)",
    )
    what.add_argument(
        "--pay",
        choices=("escrow", "voucher"),
        default="escrow",
        help="escrow: a per-job escrow on chain (default); voucher: k = 1 only, with --escrow peer "
        "--no-encrypt: the peer pays from its deposit by a voucher that its executor settles "
        "with many others in one batch (fewer transactions; settled once the batch is paid)",
    )
    what.add_argument(
        "--force",
        action="store_true",
        help="submit even when no known node can run it (it will be refunded with the reason)",
    )
    how = p.add_argument_group("where")
    how.add_argument(
        "--peer",
        help="a node's control API: its agent data dir, or a URL (token via --peer-token "
        "or $SANDRUN_P2P_PEER_TOKEN); default: the local agent ($SANDRUN_P2P_HOME or ~/.sandrun-p2p)",
    )
    how.add_argument("--peer-token", help=argparse.SUPPRESS)
    how.add_argument("--blockchain-rpc", help="JSON-RPC URL of the settlement chain (default: from the peer)")
    how.add_argument("--market", help="SandrunMarket contract address (default: from the peer)")
    how.add_argument(
        "--chain-file",
        help="deployment file (from deploy-contracts or testnet) naming the chain "
        "and contract (default: the peer's, when --peer is a data dir)",
    )
    how.add_argument(
        "--keystore",
        help="funding wallet keystore file (else $SANDRUN_P2P_CLIENT_KEY; on a "
        "development chain a funded dev account)",
    )
    what.add_argument(
        "--verify",
        choices=("quorum", "adaptive"),
        default="quorum",
        help="quorum (default): --redundancy executors, a majority must agree; adaptive: redundancy "
        "from --value-usd, then spot checks by re-running the job on other nodes, more often "
        "for executors this client has not verified yet (implies --wait; see README)",
    )
    what.add_argument(
        "--value-usd",
        type=float,
        help="what a wrong result would cost you, for --verify adaptive (default: the payment in USD)",
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "--wait",
        action="store_true",
        help="follow the job until it settles, fetch and verify the result, claim what is left of the escrow",
    )
    out.add_argument("--out", metavar="DIR", help="where verified outputs go (default ./sandrun-out/JOB)")
    out.add_argument("--json", action="store_true", help="one JSON object on stdout instead of text")
    out.add_argument("--timeout", type=float, help="give up following after this many seconds")
    act = p.add_argument_group("other actions (instead of submitting)").add_mutually_exclusive_group()
    act.add_argument(
        "--quote", action="store_true", help="print the price of --manifest at --redundancy and exit"
    )
    act.add_argument("--watch", metavar="JOB", help="follow a submitted job")
    act.add_argument("--result", metavar="JOB", help="fetch and verify a job's result into --out")
    act.add_argument("--refund", metavar="JOB", help="claim a job's unused escrow back to the funding wallet")
    act.add_argument("--list", action="store_true", help="list this machine's submitted jobs")


class Printer:
    """Progress for people: live status line on a terminal, plain lines otherwise; silent with --json."""

    def __init__(self, json_mode: bool) -> None:
        self.quiet = json_mode
        self.tty = sys.stderr.isatty() and not json_mode
        self.t0 = time.monotonic()
        self._status = ""

    def line(self, text: str) -> None:
        if self.quiet:
            return
        if self.tty and self._status:
            sys.stderr.write("\r\033[K")
        print(text, file=sys.stderr if self.tty else sys.stdout, flush=True)
        if self.tty and self._status:
            sys.stderr.write(self._status)
            sys.stderr.flush()

    def update(self, u: Any) -> None:
        dt = time.monotonic() - self.t0
        self.line(f"  +{dt:5.1f}s  {u.line()}")
        if self.tty:
            self._status = f"  ... {u.state} ({dt:.0f}s)"
            sys.stderr.write("\r\033[K" + self._status)
            sys.stderr.flush()

    def done(self) -> None:
        if self.tty and self._status:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self._status = ""


def _eth(wei: int) -> str:
    from sandrun_p2p.client.errors import fmt_eth

    return fmt_eth(wei)


def run(args: argparse.Namespace) -> int:
    import trio

    from sandrun_p2p.client import ClientError

    try:
        return trio.run(_main, args)
    except ClientError as e:
        kind = type(e).__name__
        if args.json:
            print(json.dumps({"error": kind, "message": str(e)}))
        else:
            print(f"sandrun-p2p submit: {kind}: {e}", file=sys.stderr)
        return EXIT_FAILED if kind in ("ResultRejected", "DeadlinePassed", "NoEligibleNode") else EXIT_USAGE


async def _main(args: argparse.Namespace) -> int:
    from sandrun_p2p.client import BadJob, ChainOptions, Client, ClientError, list_client_jobs, quote
    from sandrun_p2p.client.adaptive import AdaptiveVerifier

    out: dict[str, Any] = {}
    pr = Printer(args.json)
    if args.list:
        jobs = list_client_jobs()
        if args.json:
            print(json.dumps({"jobs": jobs}))
        else:
            print_jobs(jobs)
        return EXIT_OK
    if args.quote:
        if not args.manifest:
            raise BadJob("--quote needs --manifest")
        q = quote(args.manifest, args.redundancy, args.usd_per_eth)
        d = {
            "wei": q.wei,
            "eth": q.wei / 10**18,
            "usd": float(q.usd),
            "per_execution_usd": float(q.per_execution_usd),
            "gpu_class": q.gpu_class,
            "redundancy": args.redundancy,
        }
        print(
            json.dumps(d)
            if args.json
            else f"quote: {_eth(q.wei)} ({q.usd_str()}) for redundancy {args.redundancy}"
        )
        return EXIT_OK
    chain = ChainOptions(
        rpc=args.blockchain_rpc, market=args.market, keystore=args.keystore, addresses_file=args.chain_file
    )
    adaptive = args.verify == "adaptive"
    if adaptive and args.redundancy != 1:
        raise BadJob("--verify adaptive picks the redundancy from --value-usd; leave --redundancy out")
    async with Client(args.peer, token=args.peer_token, chain=chain, usd_per_eth=args.usd_per_eth) as c:
        verifier = AdaptiveVerifier(c, timeout=args.timeout) if adaptive else None
        if args.refund:
            r = await c.refund(args.refund)
            out = {"job_id": args.refund, **r}
            pr.line(f"refunded {_eth(r['refunded_wei'])} to the funding wallet (job {r['state']})")
            return _finish(args, out, EXIT_OK)
        if args.result:
            return _finish(args, await _fetch(c, args.result, args.out, pr), EXIT_OK)
        if args.watch:
            job_id = args.watch
        else:
            if not args.code or not args.manifest:
                raise BadJob("give --code and --manifest (or --quote/--watch/--result/--refund/--list)")
            pay = _payment(args)
            kw = {
                "encrypt": not args.no_encrypt,
                "deadline_s": args.deadline,
                "escrow": args.escrow,
                "force": args.force,
                "pay_mode": args.pay,
            }
            if adaptive:
                value = args.value_usd if args.value_usd is not None else _usd(args, pay)
                rec = await verifier.submit(args.code, args.manifest, value, payment_wei=pay, **kw)
            else:
                rec = await c.submit(args.code, args.manifest, pay, args.redundancy, **kw)
            job_id = rec.job_id
            spec = rec.job_spec()
            out = {
                "job_id": job_id,
                "code_cid": spec.code_cid,
                "payment_wei": spec.payment_wei,
                "deadline": spec.deadline,
                "encrypted": spec.encrypted,
                "sealed_result": bool(spec.result_key),
                "escrow_address": rec.escrow_address,
                "peer": rec.peer,
                "notes": rec.notes,
            }
            pr.line(f"submitted job {job_id} through {rec.peer}")
            for note in rec.notes:
                pr.line(f"  note: {note}")
            payer = f"fresh address {rec.escrow_address}" if rec.escrow_address else "the peer's account"
            pr.line(
                f"  escrow {_eth(spec.payment_wei)} from {payer}; "
                f"redundancy {spec.redundancy}, quorum {spec.quorum}, "
                f"{'encrypted' if spec.encrypted else 'plaintext'} bundle {spec.code_cid[:20]}..., "
                f"{'result sealed to a per-job key' if spec.result_key else 'plaintext result'}"
            )
            if not args.wait and not adaptive:
                if not args.json:
                    print(job_id)
                return _finish(args, out, EXIT_OK)
        last = await c.wait(job_id, timeout=args.timeout, on_update=pr.update)
        pr.done()
        out.update({"job_id": job_id, "state": last.state, "detail": last.detail})
        code = EXIT_OK
        if adaptive and last.state == "settled":
            outcome = await verifier.verify(job_id)
            out["verification"] = outcome.to_dict()
            for ln in outcome_lines(outcome):
                pr.line(ln)
            if outcome.verdict == "undecided":
                code = EXIT_FAILED
            else:
                out.update(await _fetch(c, outcome.result_job, args.out, pr, retry_s=30.0))
        elif last.state in ("accepted", "settled"):
            out.update(await _fetch(c, job_id, args.out, pr, retry_s=30.0))
        else:
            code = EXIT_FAILED
            pr.line(f"job {last.state}: {last.detail or 'no reason given'}")
        rec = c.records.load(job_id)
        if rec.escrow_key:
            try:
                r = await c.refund(job_id)
                out["refund"] = r
                pr.line(f"claimed back {_eth(r['refunded_wei'])} of unused escrow")
            except ClientError as e:
                out["refund_error"] = str(e)
                pr.line(f"refund not possible yet: {e}")
        try:
            money = await c.money(job_id)
            out["money"] = money
            for ln in money_lines(money):
                pr.line(ln)
        except ClientError as e:
            pr.line(f"(could not read the settlement: {e})")
        return _finish(args, out, code)


async def _fetch(c: Any, job_id: str, dest: str | None, pr: Printer, retry_s: float = 0.0) -> dict[str, Any]:
    """Fetch and verify the result; ``retry_s``: how long to wait for the peer to know the accepted root (right
    after a settlement the chain may be ahead of the reveals the peer has seen on gossip)."""
    from pathlib import Path

    import trio

    from .client.errors import NotYet

    dest_p = Path(dest) if dest else Path("sandrun-out") / job_id[:16]
    give_up = time.monotonic() + retry_s
    while True:
        try:
            trace = await c.result(job_id, dest_p)
            break
        except NotYet:
            if time.monotonic() >= give_up:
                raise
            await trio.sleep(0.5)
    pr.line(
        f"result verified against trace root {trace.root.hex()[:16]}... (status {trace.status}, "
        f"exit {trace.exit_code}) -> {dest_p}"
    )
    for o in trace.outputs:
        pr.line(f"  {o.path}  {o.size} B  sha256 {o.sha256.hex()[:16]}...")
    return {
        "result_dir": str(dest_p),
        "trace_root": trace.root.hex(),
        "status": trace.status,
        "exit_code": trace.exit_code,
        "outputs": {o.path: o.sha256.hex() for o in trace.outputs},
    }


def _payment(args: argparse.Namespace) -> int | None:
    from sandrun_p2p.client import eth_to_wei, usd_to_wei

    if args.payment is not None:
        return eth_to_wei(args.payment)
    if args.payment_usd is not None:
        return usd_to_wei(args.payment_usd, args.usd_per_eth)
    return None


def _usd(args: argparse.Namespace, pay: int | None) -> float:
    """The job's payment in USD (the quote at redundancy 1 when no payment was given)."""
    from sandrun_p2p.client import quote

    wei = pay if pay is not None else quote(args.manifest, 1, args.usd_per_eth).wei
    return wei / 10**18 * float(args.usd_per_eth)


def outcome_lines(o: Any) -> list[str]:
    """Human lines for an adaptive-verification outcome."""
    head = (
        f"verification: spot-checked (rate {o.check_rate:.2f}) by {len(o.reruns)} re-run(s)"
        if o.checked
        else f"verification: not checked this time (rate {o.check_rate:.2f})"
    )
    lines = [f"{head}; {o.verdict}"]
    if o.caught:
        lines.append(
            f"  wrong result from {', '.join(n[:16] for n in o.caught)}: recorded, never trusted again "
            "(not slashed on chain: the contract has no fraud-proof path yet)"
        )
    if o.verdict == "overturned":
        lines.append(f"  using the result of re-run {o.result_job[:16]} instead")
    if o.verdict == "undecided":
        lines.append("  the re-runs did not agree enough to name a correct result; do not use it")
    for a in o.audits:
        what = {"released": "confirmed", "overturned": "WRONG", "undecided": "undecided"}[a["verdict"]]
        lines.append(
            f"  audit of earlier job {a['job_id'][:16]} (a caught node vouched for it): {what}"
            + (
                f"; use re-run {a['result_job']}'s result: sandrun-p2p submit --result {a['result_job']} "
                "--out DIR"
                if a["verdict"] == "overturned"
                else ""
            )
            + (f" ({a['detail']})" if a.get("detail") else "")
        )
    if o.audits_left:
        lines.append(f"  {o.audits_left} more earlier result(s) to audit: the next verification goes on")
    return lines


def money_lines(money: dict[str, Any]) -> list[str]:
    lines = [f"money: escrow {_eth(money.get('escrow_wei', 0))} from {money.get('escrow_from', '?')}"]
    for p in money.get("payouts", []):
        lines.append(f"  paid {_eth(p['paid_wei'])} to node {p['node'][:16]}")
    for r in money.get("refunds", []):
        lines.append(f"  refunded {_eth(r['wei'])} to {r['to']}")
    ch = money.get("chain") or {}
    if ch:
        lines[0] += f"; on chain: {ch.get('state', '?')}"
        for node, wei in sorted((ch.get("paid") or {}).items()):
            lines.append(f"  paid {_eth(int(wei))} to node {node[:16]}")
        if ch.get("refunded_wei"):
            lines.append(f"  refunded {_eth(int(ch['refunded_wei']))} to the escrow's payer")
        if ch.get("state") == "open" and not ch.get("paid_wei"):
            lines.append(f"  nothing paid; {_eth(int(ch.get('escrow_wei', 0)))} still in escrow, refundable")
    return lines


def print_jobs(jobs: list[dict[str, Any]]) -> None:
    if not jobs:
        print("no submitted jobs on this machine")
        return
    print(f"{'job':<18} {'state':<10} {'k':>1} {'escrow':>14} {'refunded':>14}  reason")
    for j in jobs:
        print(
            f"{j['job_id'][:16]:<18} {j['state']:<10} {j['redundancy']:>1} {_eth(j['payment_wei']):>14} "
            f"{_eth(j['refunded_wei']):>14}  {j['reason'][:60]}"
        )


def _finish(args: argparse.Namespace, out: dict[str, Any], code: int) -> int:
    if args.json:
        print(json.dumps(out, default=str))
    return code

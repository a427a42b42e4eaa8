"""`sandrun-p2p selfcheck`: the protocol core runs jobs on an in-memory network and reports each step.

Nothing here touches the network, a sandbox or a chain: it shows the rules (claiming,
commit/reveal, quorum, evidence) doing their work, with every message signed and decoded.
"""

from __future__ import annotations

import argparse
import json

from .protocol.identity import short_id
from .protocol.memnet import Loop, make_spec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--redundancy", type=int, default=3)
    parser.add_argument("--faulty", type=int, default=1, help="nodes that return a wrong result")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    loop = Loop(args.nodes, seed=args.seed)
    ids = sorted(loop.nodes)
    for nid in ids[: args.faulty]:
        loop.nodes[nid].faulty = True
    loop.start()
    loop.run(1.0)
    spec = make_spec(1, k=args.redundancy, deadline=120)
    jid = loop.submit(ids[-1], spec)
    loop.run(130.0)
    origin = loop.nodes[ids[-1]]
    steps = [
        (e.state, short_id(e.node) if e.node else "", e.detail[:64]) for e in origin.events if e.job_id == jid
    ]
    slashed = sorted({short_id(tx.args["node"]) for _, tx in loop.txs if tx.kind == "slash"})
    executed = sorted(short_id(n) for n, node in loop.nodes.items() if jid in node.executions)
    ok = jid in loop.settled
    if args.json:
        print(
            json.dumps(
                {
                    "job_id": jid.hex(),
                    "settled": ok,
                    "executed_by": executed,
                    "slashed": slashed,
                    "steps": steps,
                }
            )
        )
    else:
        print(
            f"job {short_id(jid)}: k={spec.redundancy} q={spec.quorum} on {args.nodes} in-memory nodes ({args.faulty} faulty)"
        )
        for state, node, detail in steps:
            print(f"  {state:<16} {node:<13} {detail}")
        print(f"executed by: {', '.join(executed)}")
        print(f"slashing evidence against: {', '.join(slashed) or 'nobody'}")
        print("selfcheck: " + ("OK, job settled" if ok else "FAILED, job did not settle"))
    return 0 if ok else 1

"""Run inside a private network namespace by test_mdns.py: two nodes with mDNS on, one with it off, no bootstrap.

Prints one JSON line: whether the mDNS nodes found each other, and whom the node without mDNS is connected to.
"""

from __future__ import annotations

import json

import trio

from sandrun_p2p.net.host import NetConfig, Network
from sandrun_p2p.protocol.identity import NodeKey


async def main() -> None:
    nets = [
        Network(NodeKey.generate(), NetConfig(mdns=on), lambda msg, now: None) for on in (True, True, False)
    ]
    async with trio.open_nursery() as nursery:
        for n in nets:
            await nursery.start(n.run)
        found = False
        with trio.move_on_after(30):
            while nets[0].peer_id not in nets[1].connected_peers():
                await trio.sleep(0.05)
            found = True
        print(json.dumps({"found": found, "off_peers": len(nets[2].connected_peers())}), flush=True)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)

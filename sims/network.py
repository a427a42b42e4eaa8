"""Network and gossip model: per-topic delivery-delay tables sampled from simulated gossipsub meshes.

Why a table: flooding every message hop by hop through a mesh of degree D would cost D copies per
node per message (10^9 events at 10k nodes x 100k jobs). Instead, for a topic of n subscribers we
build random D-regular meshes, draw per-link latencies (and losses), and run Dijkstra from random
publishers; the first-arrival times (and hop counts) of all receivers form the table. A delivery
then draws one entry: the delay has the mesh's hop structure and the link distribution's spread.
Receivers cut off by lost links get the message by lazy gossip (IHAVE at the next heartbeat, then
IWANT and the message: three more link latencies), unless all their gossip exchanges are lost too.
Per-hop serialisation (size / bandwidth) is added per delivery from the hop count.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass

from .scenario import Network

LOST = -1.0


@dataclass
class DelayTable:
    delays: list[float]  # seconds; LOST when the message never arrives
    hops: list[int]
    wire_copies: float  # mean copies each subscriber receives (mesh duplicates), for bandwidth accounting


def link_latency(net: Network, rng: random.Random) -> float:
    lat = net.latency
    if lat.dist == "uniform":
        return lat.mean * (1.0 + rng.uniform(-lat.spread, lat.spread))
    if lat.dist == "geo":
        same = rng.randrange(lat.regions) == rng.randrange(lat.regions)
        base = lat.intra if same else lat.inter
        return base * (1.0 + rng.uniform(-0.2, 0.2))
    if lat.dist == "lognormal":
        sigma = math.sqrt(math.log(1.0 + lat.spread**2))
        return rng.lognormvariate(math.log(lat.mean) - sigma**2 / 2, sigma)
    raise ValueError(f"unknown latency distribution {lat.dist!r}")


def random_mesh(n: int, d: int, rng: random.Random) -> list[list[int]]:
    """Each node grafts up to ``d`` random peers (symmetric links), as gossipsub's mesh maintenance does."""
    d = min(d, n - 1)
    adj: list[set[int]] = [set() for _ in range(n)]
    for i in range(n):
        tries = 0
        while len(adj[i]) < d and tries < 4 * d:
            j = rng.randrange(n)
            tries += 1
            if j != i and len(adj[j]) < d + 2:  # gossipsub's D_high bounds the mesh
                adj[i].add(j)
                adj[j].add(i)
    return [sorted(a) for a in adj]


def build_table(n: int, net: Network, rng: random.Random, samples: int = 4096) -> DelayTable:
    """First-arrival delays of one publish to ``n`` subscribers (publisher excluded)."""
    if n <= 1:
        return DelayTable([link_latency(net, rng)], [1], 1.0)
    delays: list[float] = []
    hops: list[int] = []
    copies = 0
    meshes = 0
    while len(delays) < samples:
        adj = random_mesh(n, net.mesh_degree, rng)
        meshes += 1
        copies += sum(len(a) for a in adj)
        for _ in range(max(1, min(8, samples // max(1, n - 1)))):
            src = rng.randrange(n)
            dist = [math.inf] * n
            hop = [0] * n
            dist[src] = 0.0
            pq = [(0.0, src)]
            while pq:
                t, u = heapq.heappop(pq)
                if t > dist[u]:
                    continue
                for v in adj[u]:
                    if net.loss and rng.random() < net.loss:
                        continue
                    nt = t + link_latency(net, rng)
                    if nt < dist[v]:
                        dist[v] = nt
                        hop[v] = hop[u] + 1
                        heapq.heappush(pq, (nt, v))
            reached = max((x for x in dist if x < math.inf), default=0.0)
            for v in range(n):
                if v == src:
                    continue
                if dist[v] < math.inf:
                    delays.append(dist[v])
                    hops.append(hop[v])
                elif rng.random() < net.loss ** max(1, net.mesh_degree):
                    delays.append(LOST)
                    hops.append(0)
                else:  # lazy gossip: IHAVE at a heartbeat, IWANT, message
                    t = (
                        reached
                        + rng.uniform(0, net.heartbeat)
                        + sum(link_latency(net, rng) for _ in range(3))
                    )
                    delays.append(t)
                    hops.append(3)
            if len(delays) >= samples:
                break
    # each subscriber receives the message once from every mesh peer except the one it came from (minus IDONTWANT)
    mean_degree = copies / (meshes * n)
    return DelayTable(delays[:samples], hops[:samples], max(1.0, mean_degree - 1.0))


class GossipModel:
    """Delay tables per topic size (sizes bucketed to a geometric grid so tables are shared)."""

    def __init__(self, net: Network, seed: int) -> None:
        self.net = net
        self.seed = seed
        self.tables: dict[int, DelayTable] = {}

    @staticmethod
    def bucket(n: int) -> int:
        if n <= 16:
            return max(n, 1)
        b = 2 ** (math.log2(n) * 4 // 1 / 4)  # quarter-octave grid
        return int(round(b))

    def table(self, n: int) -> DelayTable:
        b = self.bucket(n)
        t = self.tables.get(b)
        if t is None:
            t = self.tables[b] = build_table(b, self.net, random.Random(f"{self.seed}/mesh/{b}"))
        return t

    def serialisation(self, size_bytes: int) -> float:
        return size_bytes * 8 / (self.net.bandwidth_mbps * 1e6)


#: Approximate encoded sizes (bytes) of each message kind, for bandwidth accounting.
MESSAGE_BYTES = {
    "advert": 420,
    "job": 700,
    "claim": 190,
    "release": 260,
    "commit": 230,
    "reveal": 420,
    "checkpoint": 330,
    "evidence": 900,
    "grant": 400,
}
#: What a reveal that carries its own commitment adds to it (the field, encoded).
CARRIED_COMMITMENT_BYTES = 45

"""Pricing: the seed's rate table as data, and the maximum price of a job.

Rates are in micro-USD so that quotes are exact integers; wei follow from a USD/ETH rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from fractions import Fraction

from .errors import SpecError
from .jobspec import Manifest, version_tuple

MICRO = 1_000_000
WEI_PER_ETH = 10**18


@dataclass(frozen=True)
class GpuClass:
    name: str
    usd_per_s: Fraction
    vram_gb: int
    compute_capability: str


@dataclass(frozen=True)
class PriceTable:
    """CPU $0.001/s, GPU T4 $0.01/s, GPU A100 $0.05/s, memory +$0.0001/MB, priority 2x."""

    cpu_usd_per_s: Fraction = Fraction(1, 1000)
    mem_usd_per_mb: Fraction = Fraction(1, 10000)
    priority_multiplier: Fraction = Fraction(2)
    gpus: tuple[GpuClass, ...] = field(
        default_factory=lambda: (
            GpuClass("T4", Fraction(1, 100), 16, "7.5"),
            GpuClass("A100", Fraction(5, 100), 80, "8.0"),
        )
    )

    @classmethod
    def from_dict(cls, d: dict) -> PriceTable:
        """Operator override, e.g. ``{"cpu_usd_per_s": "0.002", "gpus": {"T4": ["0.01", 16, "7.5"]}}``."""
        base = cls()
        gpus = base.gpus
        if "gpus" in d:
            gpus = tuple(
                GpuClass(name, Fraction(str(v[0])), int(v[1]), str(v[2]))
                for name, v in sorted(d["gpus"].items())
            )
        return cls(
            cpu_usd_per_s=Fraction(str(d.get("cpu_usd_per_s", base.cpu_usd_per_s))),
            mem_usd_per_mb=Fraction(str(d.get("mem_usd_per_mb", base.mem_usd_per_mb))),
            priority_multiplier=Fraction(str(d.get("priority_multiplier", base.priority_multiplier))),
            gpus=gpus,
        )

    def gpu_class(self, manifest: Manifest) -> GpuClass:
        """Cheapest GPU class that meets the manifest's requirement."""
        req = manifest.gpu
        fits = [
            g
            for g in self.gpus
            if g.vram_gb >= req.min_vram_gb
            and version_tuple(g.compute_capability) >= version_tuple(req.compute_capability)
        ]
        if not fits:
            raise SpecError(
                f"no priced GPU class offers {req.min_vram_gb} GB and compute capability {req.compute_capability}"
            )
        return min(fits, key=lambda g: g.usd_per_s)


@dataclass(frozen=True)
class Quote:
    usd: Fraction  # maximum price for all executions
    per_execution_usd: Fraction
    wei: int
    gpu_class: str | None

    def usd_str(self) -> str:
        return f"${float(self.usd):.6f}"


def quote(
    manifest: Manifest,
    redundancy: int,
    usd_per_eth: Fraction | int | str = 3000,
    table: PriceTable | None = None,
) -> Quote:
    """Maximum price of a job: (timeout x rate + memory_mb x memory rate) x priority x redundancy."""
    table = table or PriceTable()
    rate = table.cpu_usd_per_s * manifest.cpu
    gpu_name = None
    if manifest.gpu.required:
        g = table.gpu_class(manifest)
        gpu_name = g.name
        rate = g.usd_per_s * manifest.gpu.count
    one = rate * manifest.timeout + table.mem_usd_per_mb * manifest.memory_mb
    if manifest.priority:
        one *= table.priority_multiplier
    total = one * redundancy
    wei = usd_to_wei(total, usd_per_eth)
    return Quote(total, one, wei, gpu_name)


def usd_to_wei(usd: Fraction, usd_per_eth: Fraction | int | str) -> int:
    rate = Fraction(str(usd_per_eth)) if not isinstance(usd_per_eth, Fraction) else usd_per_eth
    if rate <= 0:
        raise SpecError("the USD/ETH rate must be positive")
    w = usd / rate * WEI_PER_ETH
    return -((-w.numerator) // w.denominator)  # ceil: never under-quote


#: Trace statuses in which a run stopped at a limit the client set: not charged, the escrow is refunded.
UNCHARGED_STATUSES = ("oom", "timeout")


def usage_charge(
    manifest: Manifest,
    redundancy: int,
    payment_wei: int,
    status: str,
    wall_s: float,
    usd_per_eth: Fraction | int | str = 3000,
    table: PriceTable | None = None,
) -> int:
    """What one executor asks for a run: the table's price of the time it used, capped at its share of the escrow.

    A run that hit the job's own memory or time limit is not charged (the client under-provisioned it;
    the escrow goes back), and the unused part of every share is refunded by the contract.
    """
    if status in UNCHARGED_STATUSES:
        return 0
    share = payment_wei // max(1, redundancy)
    used = quote(replace(manifest, timeout=max(1, math.ceil(wall_s))), 1, usd_per_eth, table).wei
    return min(share, used)

"""Following the contract's events by polling ``eth_getLogs`` (works on every chain, no filters to expire)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from .errors import ChainError
from .market import Event, Market


class EventPoller:
    """Yields the contract's events in chain order, each once.

    ``poll()`` returns what was mined since the last call (up to ``confirmations`` blocks behind the head, in
    pages of ``page`` blocks); ``position`` is the next block to read, so an agent can persist it in its journal
    and resume with ``EventPoller(market, from_block=position)``.
    """

    def __init__(
        self,
        market: Market,
        from_block: int = 0,
        *,
        names: set[str] | None = None,
        confirmations: int = 0,
        page: int = 5000,
    ) -> None:
        self.market = market
        self.position = from_block
        self.names = names
        self.confirmations = confirmations
        self.page = page

    def poll(self) -> list[Event]:
        chain = self.market.chain
        head = chain.block_number() - self.confirmations
        out: list[Event] = []
        while self.position <= head:
            end = min(head, self.position + self.page - 1)
            try:
                logs = chain._read(
                    lambda s=self.position, e=end: chain.w3.eth.get_logs(
                        {"address": self.market.address, "fromBlock": s, "toBlock": e}
                    )
                )
            except ChainError:
                raise
            except Exception as e:
                raise ChainError("rpc", f"eth_getLogs {self.position}..{end}: {e}") from e
            events = self.market.decode_logs(logs)
            events.sort(key=lambda ev: (ev.block_number, ev.log_index))
            out.extend(ev for ev in events if self.names is None or ev.name in self.names)
            self.position = end + 1
        return out

    def follow(self, interval: float = 0.5, stop_after: float | None = None) -> Iterator[Event]:
        """Poll forever (or for ``stop_after`` seconds), yielding events as they come."""
        start = time.monotonic()
        while stop_after is None or time.monotonic() - start < stop_after:
            yield from self.poll()
            time.sleep(interval)

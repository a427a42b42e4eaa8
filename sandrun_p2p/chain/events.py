"""Following the contract's events by polling ``eth_getLogs`` (works on every chain, no filters to expire)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from .errors import ChainError
from .logdecode import event_shapes, topic_of
from .market import Event, Market


class EventPoller:
    """Yields the contract's events in chain order, each once.

    ``poll()`` returns what was mined since the last call (up to ``confirmations`` blocks behind the head, in
    pages of ``page`` blocks); ``position`` is the next block to read, so an agent can persist it in its journal
    and resume with ``EventPoller(market, from_block=position)``. ``names`` limits the events to those kinds:
    the node filters by topic, so the others are neither sent nor decoded. Logs are read with a raw
    ``eth_getLogs`` and decoded by :mod:`.logdecode` (web3's formatters and ``process_log`` cost ~0.6 ms a log).

    With ``head_every`` = n > 0 (and no confirmations) most polls are one ``eth_getLogs`` up to ``latest``
    instead of reading the head first: ``position`` then moves past the last block that had one of the events
    (all of a block's logs come in one answer) and catches up with the head at every n-th poll (which reads it,
    paging as usual), so the range asked for stays short on a chain where nothing happens.
    """

    def __init__(
        self,
        market: Market,
        from_block: int = 0,
        *,
        names: set[str] | None = None,
        confirmations: int = 0,
        page: int = 5000,
        head_every: int = 0,
    ) -> None:
        self.market = market
        self.position = from_block
        self.names = names
        self.confirmations = confirmations
        self.page = page
        self.head_every = head_every
        self._polls = 0  # since the head was last read
        shapes = event_shapes(market.artifact["abi"])
        self._topics = None if names is None else [[topic_of(shapes, n) for n in sorted(names)]]

    def poll(self) -> list[Event]:
        if self.head_every > 0 and self.confirmations == 0 and 0 < self._polls < self.head_every:
            self._polls += 1
            # from one block back: a range that starts past the head is an error (anvil: BlockOutOfRange)
            events = [
                ev
                for ev in self._logs(max(0, self.position - 1), "latest")
                if ev.block_number >= self.position
            ]
            if events:
                self.position = events[-1].block_number + 1
            return [ev for ev in events if self.names is None or ev.name in self.names]
        self._polls = 1
        head = self.market.chain.block_number() - self.confirmations
        out: list[Event] = []
        start = self.position
        try:
            while self.position <= head:
                end = min(head, self.position + self.page - 1)
                out.extend(
                    ev for ev in self._logs(self.position, end) if self.names is None or ev.name in self.names
                )
                self.position = end + 1
        except BaseException:
            self.position = start  # the pages read are read again: their events were not returned
            raise
        return out

    def _logs(self, start: int, end: int | str) -> list[Event]:
        """This contract's (selected) events in blocks ``start..end``, in chain order."""
        query: dict = {
            "address": self.market.address,
            "fromBlock": hex(start),
            "toBlock": end if isinstance(end, str) else hex(end),
        }
        if self._topics is not None:
            query["topics"] = self._topics
        try:
            resp = self.market.chain._read(lambda q=query: self._get_logs(q))
        except ChainError:
            raise
        except Exception as e:
            raise ChainError("rpc", f"eth_getLogs {start}..{end}: {e}") from e
        if resp.get("error"):
            raise ChainError("rpc", f"eth_getLogs {start}..{end}: {resp['error']}")
        events = self.market.decode_logs(resp.get("result") or [])
        events.sort(key=lambda ev: (ev.block_number, ev.log_index))
        return events

    def _get_logs(self, query: dict) -> dict:
        chain = self.market.chain
        if chain.kind == "embedded":  # eth-tester's provider takes only web3-formatted requests
            q = {**query, "fromBlock": int(query["fromBlock"], 16)}
            if query["toBlock"] != "latest":
                q["toBlock"] = int(query["toBlock"], 16)
            return {"result": chain.w3.eth.get_logs(q)}
        return chain.w3.provider.make_request("eth_getLogs", [query])

    def follow(self, interval: float = 0.5, stop_after: float | None = None) -> Iterator[Event]:
        """Poll forever (or for ``stop_after`` seconds), yielding events as they come."""
        start = time.monotonic()
        while stop_after is None or time.monotonic() - start < stop_after:
            yield from self.poll()
            time.sleep(interval)

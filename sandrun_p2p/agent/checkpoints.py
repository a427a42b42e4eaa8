"""Checkpoints of running jobs: published to the content store and the job's shard, kept by the origin, and
resumed from by the node that takes a job over.

* Publish: every snapshot the executor takes of a job's checkpoint directory (each
  ``manifest.checkpoint_interval`` seconds while its chain grew, and the final one when the agent stops the job
  at shutdown) is stored (deterministic tar bytes, pinned) and announced as a ``checkpoint`` message
  ``{job, index: entries in its chain, cid, link: the chain's last link}``.
* Keep: the job's origin fetches each checkpoint it hears of into its own store, so a checkpoint outlives the
  node that wrote it (the origin also keeps the job's bundle).
* Resume: a node starting a job takes, among the checkpoint messages of the job it accepted (journaled with
  the job's other messages), those from the job's claimants, highest index first; it fetches one, checks that
  its tar holds exactly ``index`` entries whose chain ends in ``link``, and hands it to the executor, which
  restores it into the job's checkpoint directory. One that cannot be fetched or does not match is skipped;
  none: the job starts from scratch. A resumed result still goes through commit, reveal and the quorum, so a
  forged checkpoint costs only its publisher.
* Stop: at shutdown a job that checkpoints is asked to stop (SIGTERM, the executor's grace to write a last
  entry), its final snapshot is published, and the execution fails with the reason, which releases the claim
  to the fallback rank.

Jobs whose manifest has no ``checkpoint_interval`` run exactly as before (no snapshots, no stop request).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from ..exec import checkpoint as ckpt
from ..exec.errors import BundleError
from ..protocol import messages as m
from ..protocol.errors import ProtocolError
from ..protocol.events import ExecutionFailed
from ..protocol.identity import short_id

log = logging.getLogger("sandrun_p2p.agent")

#: Seconds to fetch one checkpoint before trying the next (older) one.
FETCH_TIMEOUT_S = 10.0
#: How long before the end of the shutdown grace period checkpointing jobs are stopped: the executor's
#: SIGTERM grace (2 s) for a last entry, then the final snapshot is stored and announced.
STOP_LEAD_S = 3.0


@dataclass(frozen=True)
class Notice:
    """One ``checkpoint`` message: ``sender`` stored a snapshot of ``index`` entries under ``cid``."""

    sender: bytes
    index: int
    cid: str
    link: bytes


def notices(messages: list[tuple[str, bytes]], claimants: set[bytes]) -> list[Notice]:
    """The checkpoint notices among a job's journaled raw messages, from its claimants, highest index first."""
    out: dict[tuple[int, str], Notice] = {}
    for kind, raw in messages:
        if kind != m.CHECKPOINT:
            continue
        try:
            msg = m.decode(raw)
        except ProtocolError:
            continue
        if msg.sender in claimants and msg.body["index"] > 0:
            b = msg.body
            out.setdefault((b["index"], b["cid"]), Notice(msg.sender, b["index"], b["cid"], b["link"]))
    return sorted(out.values(), key=lambda n: -n.index)


def notice_body(job_id: bytes, cid: str, snap: ckpt.Checkpoint) -> dict[str, Any]:
    return {"job": job_id, "index": len(snap.chain), "cid": cid, "link": snap.chain[-1]}


def verify(tar: bytes, notice: Notice) -> None:
    """Raise BundleError unless ``tar`` unpacks to a checkpoint dir of ``notice.index`` entries ending in its link."""
    with tempfile.TemporaryDirectory(prefix="sandrun-ckpt-") as d:
        chain = ckpt.restore(tar, Path(d))
    if len(chain) != notice.index or chain[-1] != notice.link:
        raise BundleError(
            f"checkpoint {notice.cid} does not hold the {notice.index} entries its notice names"
        )


class Checkpoints:
    """The agent's side of checkpoints: ``store`` (put_bytes/get), ``publish(job_id, body)`` sends a checkpoint
    message on the job's shard."""

    def __init__(self, store: Any, publish: Callable[[bytes, dict[str, Any]], None], node_id: bytes) -> None:
        self.store = store
        self.publish = publish
        self.node_id = node_id
        self._stops: dict[bytes, trio.Event] = {}
        self._keep_send, self._keep_recv = trio.open_memory_channel[tuple[bytes, str]](256)

    # ------------------------------------------------------------------ executing

    async def run_options(
        self,
        job_id: bytes,
        manifest: Any,
        messages: list[tuple[str, bytes]],
        claimants: set[bytes],
        resumes: bool = True,
    ) -> dict[str, Any]:
        """Keyword arguments for ``executor.run``: none for a job that does not checkpoint; else a stop event,
        a snapshot sink and, when a usable checkpoint exists, ``checkpoint_from``."""
        if not manifest.checkpoint_interval:
            return {}
        stop = self._stops[job_id] = trio.Event()

        async def sink(snap: ckpt.Checkpoint) -> None:
            await self._announce(job_id, snap)

        opts: dict[str, Any] = {"stop": stop, "on_checkpoint": sink}
        if resumes:
            for n in notices(messages, claimants):
                tar = await self._fetch(job_id, n)
                if tar is not None:
                    opts["checkpoint_from"] = tar
                    log.info(
                        "event=resume job=%s from=%s index=%d cid=%s",
                        job_id.hex()[:16],
                        short_id(n.sender),
                        n.index,
                        n.cid,
                    )
                    break
        return opts

    async def _fetch(self, job_id: bytes, n: Notice) -> bytes | None:
        try:
            with trio.fail_after(FETCH_TIMEOUT_S):
                tar = await self.store.get(n.cid)
            await trio.to_thread.run_sync(verify, tar, n)
            return tar
        except Exception as e:  # unreachable, corrupt or not matching: try an older one
            log.info(
                "event=checkpoint-skipped job=%s cid=%s reason=%r",
                job_id.hex()[:16],
                n.cid,
                f"{type(e).__name__}: {e}"[:200],
            )
            return None

    async def _announce(self, job_id: bytes, snap: ckpt.Checkpoint) -> None:
        if not snap.chain:
            return
        cid = await self.store.put_bytes(snap.tar, pin=True)
        self.publish(job_id, notice_body(job_id, cid, snap))
        log.info("event=checkpoint-published job=%s index=%d cid=%s", job_id.hex()[:16], len(snap.chain), cid)

    def stopped(self, job_id: bytes) -> bool:
        """True when the run of ``job_id`` was stopped by :meth:`stop_all` (cleared by :meth:`hand_over`)."""
        ev = self._stops.get(job_id)
        return ev is not None and ev.is_set()

    async def hand_over(self, job_id: bytes, result: Any) -> ExecutionFailed:
        """After a stopped run: publish its final snapshot; the failure releases the claim to the fallback."""
        self._stops.pop(job_id, None)
        with contextlib.suppress(OSError):
            shutil.rmtree(Path(result.outputs_dir).parent)  # the stopped run's outputs are not kept
        snap = getattr(result, "checkpoint", None)
        if snap is not None and snap.chain:
            await self._announce(job_id, snap)
            return ExecutionFailed(
                job_id, f"agent shutting down; checkpoint of {len(snap.chain)} entries published"
            )
        return ExecutionFailed(job_id, "agent shutting down; no checkpoint written")

    def finished(self, job_id: bytes) -> None:
        self._stops.pop(job_id, None)

    def stop_all(self) -> int:
        """Ask every running job that checkpoints to stop; returns how many were asked."""
        for ev in self._stops.values():
            ev.set()
        return len(self._stops)

    # ------------------------------------------------------------------ keeping (origin)

    def on_notice(self, msg: m.Message, origin: bytes | None) -> None:
        """A checkpoint message was accepted: the job's origin keeps a copy of the snapshot."""
        if msg.kind == m.CHECKPOINT and origin == self.node_id and msg.sender != self.node_id:
            try:
                self._keep_send.send_nowait((msg.body["job"], msg.body["cid"]))
            except trio.WouldBlock:
                log.info("event=checkpoint-not-kept cid=%s reason='queue full'", msg.body["cid"])

    async def keeper(self) -> None:
        """Fetch (and pin) the checkpoints :meth:`on_notice` queued."""
        async for job_id, cid in self._keep_recv:
            try:
                with trio.fail_after(FETCH_TIMEOUT_S):
                    data = await self.store.get(cid)
                await self.store.put_bytes(data, pin=True)
                log.info("event=checkpoint-kept job=%s cid=%s", job_id.hex()[:16], cid)
            except Exception as e:
                log.info(
                    "event=checkpoint-not-kept job=%s cid=%s reason=%r",
                    job_id.hex()[:16],
                    cid,
                    f"{type(e).__name__}: {e}"[:200],
                )

"""The client SDK (trio): quote, submit, watch, result, refund.

>>> async with Client(peer="~/.sandrun-p2p") as c:            # any node's control API (data dir or URL)
...     rec = await c.submit("job/", manifest, payment_wei=None, redundancy=2)   # None: pay the quote
...     async for u in c.watch(rec.job_id):
...         print(u.state, u.detail)
...     trace = await c.result(rec.job_id, "out/")            # verified against the accepted root
...     await c.refund(rec.job_id)                            # whatever the job did not use

Escrow modes: ``"client"`` (default) posts the escrow from a fresh per-job key funded by the client's
wallet, then asks the peer to announce the job (``POST /v1/announce``); ``"peer"`` lets the peer escrow
from its own account (``POST /v1/jobs``): no chain access needed, but the peer, not an anonymous key,
pays and is refunded. Bad manifests, a missing entrypoint, a payment below the quote and (unless
``force``) a job no known node can run are refused before any money moves.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import trio
from nacl.signing import SigningKey

from ..protocol.claiming import Capabilities, in_shards, ineligibility
from ..protocol.errors import ProtocolError
from ..protocol.jobspec import MAX_REDUNDANCY, JobSpec, Manifest, default_quorum
from ..protocol.pricing import Quote
from ..protocol.pricing import quote as price_quote
from ..protocol.trace import Trace
from . import bundle as bundle_mod
from .errors import (
    BadJob,
    ChainUnavailable,
    ClientError,
    DeadlinePassed,
    InsufficientPayment,
    NoEligibleNode,
    NotYet,
    PeerUnavailable,
    ResultRejected,
)
from .escrow import ChainOptions, Escrow
from .peer import Peer, PeerError, peer_dir
from .records import JobRecord, RecordStore
from .verify import open_result, verify_and_write

#: States after which nothing more happens to a job on the network.
FINAL = ("settled", "refunded")
ENDED = (*FINAL, "failed")
#: States worth showing a client (the rest are internal: standby, claim-rejected...).
SHOWN = (
    "announced",
    "claimed",
    "running",
    "released",
    "lapsed",
    "checkpoint",
    "committed",
    "revealed",
    "accepted",
    "failed",
    "settled",
    "refunded",
    "evidence",
    "slashed",
    "reveal-rejected",
)


@dataclass(frozen=True)
class Update:
    """One change of a job's state, as the peer saw it."""

    state: str
    detail: str = ""
    node: str = ""  # node id (hex) the change is about, if any
    at: float = 0.0
    event_id: int = 0

    def line(self) -> str:
        who = f" by {self.node[:12]}" if self.node else ""
        what = f": {self.detail}" if self.detail else ""
        return f"{self.state}{who}{what}"


def load_manifest(manifest: Manifest | dict[str, Any] | str | Path) -> Manifest:
    """A Manifest from an object, a dict, or a JSON file path; :class:`BadJob` explains what is wrong."""
    if isinstance(manifest, Manifest):
        return manifest
    if isinstance(manifest, str | Path):
        import json

        p = Path(manifest)
        try:
            manifest = json.loads(p.read_text())
        except FileNotFoundError:
            raise BadJob(f"manifest file {p} does not exist") from None
        except ValueError as e:
            raise BadJob(f"manifest file {p} is not valid JSON: {e}") from None
    try:
        return Manifest.from_dict(manifest)
    except ProtocolError as e:
        raise BadJob(f"bad manifest: {e.detail or e}") from None


def quote(
    manifest: Manifest | dict[str, Any] | str | Path,
    redundancy: int = 1,
    usd_per_eth: Fraction | int | str = 3000,
) -> Quote:
    """The maximum price of a job (the pricing table; see docs/protocol.md)."""
    m = load_manifest(manifest)
    _check_redundancy(redundancy)
    return price_quote(m, redundancy, usd_per_eth)


def _check_redundancy(k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_REDUNDANCY:
        raise BadJob(f"redundancy must be between 1 and {MAX_REDUNDANCY}, got {k!r}")


def eth_to_wei(eth: str | float | Fraction) -> int:
    try:
        v = Fraction(str(eth))
    except (ValueError, ZeroDivisionError):
        raise BadJob(f"payment {eth!r} is not a number of ETH") from None
    if v < 0:
        raise BadJob("payment must not be negative")
    return int(v * 10**18)


def usd_to_wei(usd: str | float, usd_per_eth: Fraction | int | str = 3000) -> int:
    try:
        v = Fraction(str(usd))
    except (ValueError, ZeroDivisionError):
        raise BadJob(f"payment {usd!r} is not a number of USD") from None
    return int(v / Fraction(str(usd_per_eth)) * 10**18)


def default_deadline_s(m: Manifest) -> int:
    """Time for claiming, fallbacks, execution, commits and reveals, with room for one lapsed claim."""
    return max(300, 2 * m.timeout + 180)


def eligible_nodes(
    nodes: list[dict[str, Any]], manifest: Manifest
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The nodes (``GET /v1/nodes`` entries) whose advertised capabilities can run ``manifest``, and how many of
    the others were turned away for each reason."""
    ok: list[dict[str, Any]] = []
    why: dict[str, int] = {}
    for n in nodes:
        try:
            reason = ineligibility(Capabilities.from_dict(n["caps"]), manifest)
        except (ProtocolError, KeyError, TypeError, ValueError):
            reason = "advert unreadable"
        if reason is None:
            ok.append(n)
        else:
            why[reason] = why.get(reason, 0) + 1
    return ok, why


def _in_peer_shard(spec: JobSpec, fields: dict[str, Any], status: dict[str, Any]) -> JobSpec:
    """``spec`` with a nonce that puts it in a job shard the peer serves (its status says which; a peer that
    serves every shard, or an older one that does not say, takes any): the peer is the job's origin and reads
    only its shards' topics, so it would never see the claims of a job elsewhere."""
    bits, shards = int(status.get("shard_bits") or 0), set(status.get("shards") or [])
    if not bits or not shards or shards >= set(range(2**bits)):
        return spec
    return in_shards(spec, fields, bits, shards.__contains__)


class Client:
    """A client bound to one peer (its control API) and a local record store."""

    def __init__(
        self,
        peer: str | None = None,
        *,
        token: str | None = None,
        records: RecordStore | None = None,
        chain: ChainOptions | None = None,
        usd_per_eth: Fraction | int | str = 3000,
    ) -> None:
        self.peer_name = peer
        self.token = token
        self.records = records or RecordStore()
        self.chain_opts = chain or ChainOptions()
        self.usd_per_eth = usd_per_eth
        self._peers: dict[str | None, Peer] = {}
        self._escrow: Escrow | None = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for p in self._peers.values():
            await p.aclose()
        self._peers.clear()

    def peer(self, name: str | None = None) -> Peer:
        """The peer named ``name`` (default: this client's peer)."""
        name = name if name is not None else self.peer_name
        if name not in self._peers:
            self._peers[name] = Peer.open(name, self.token if name == self.peer_name else None)
        return self._peers[name]

    async def escrow(self, peer: Peer | None = None) -> Escrow:
        if self._escrow is None:
            status = (
                await (peer or self.peer()).status()
                if not (self.chain_opts.rpc and self.chain_opts.market)
                else None
            )
            opts = self.chain_opts.resolved(status, peer_dir(self.peer_name))
            self._escrow = await trio.to_thread.run_sync(Escrow, opts)
        return self._escrow

    # ------------------------------------------------------------------ quote / submit

    def quote(self, manifest: Manifest | dict[str, Any] | str | Path, redundancy: int = 1) -> Quote:
        return quote(manifest, redundancy, self.usd_per_eth)

    async def precheck(self, manifest: Manifest, peer: Peer) -> None:
        """Raise :class:`NoEligibleNode` when no fresh node known to the peer can run ``manifest``."""
        nodes = [n for n in await peer.nodes() if n.get("fresh", True)]
        ok, why = eligible_nodes(nodes, manifest)
        if ok:
            return
        shown = (
            "; ".join(f"{r} ({c} node{'s' * (c > 1)})" for r, c in sorted(why.items())) or "no nodes known"
        )
        raise NoEligibleNode(f"none of the {len(nodes)} node(s) the peer knows can run it: {shown}")

    async def submit(
        self,
        code: str | Path,
        manifest: Manifest | dict[str, Any] | str | Path,
        payment_wei: int | None = None,
        redundancy: int = 1,
        *,
        encrypt: bool = True,
        deadline_s: int | None = None,
        escrow: str = "client",
        force: bool = False,
        quorum: int | None = None,
        executors: Sequence[bytes] = (),
        pay_mode: str = "escrow",
    ) -> JobRecord:
        """Pack, (encrypt,) store, escrow and announce a job; returns its local record.

        ``quorum``: agreeing executors needed (default: a majority of ``redundancy``); ``executors``: node ids
        that alone may run it (default: any eligible node; used by spot checks, see :mod:`.adaptive`).
        ``pay_mode="voucher"`` (k = 1, with ``escrow="peer"``): the peer pays from its deposit by a voucher its
        executor settles in a batch, instead of a per-job escrow."""
        m = load_manifest(manifest)
        _check_redundancy(redundancy)
        q = price_quote(m, redundancy, self.usd_per_eth)
        pay = q.wei if payment_wei is None else int(payment_wei)
        if pay < q.wei:
            raise InsufficientPayment(pay, q)
        if escrow not in ("client", "peer", "auto"):
            raise BadJob(f"escrow must be 'client', 'peer' or 'auto', got {escrow!r}")
        if escrow == "peer" and encrypt:
            raise BadJob(
                "escrow='peer' cannot hand out a bundle key; use encrypt=False (--no-encrypt) with it"
            )
        if pay_mode not in ("escrow", "voucher"):
            raise BadJob(f"pay_mode must be 'escrow' or 'voucher', got {pay_mode!r}")
        if pay_mode == "voucher" and (escrow != "peer" or redundancy != 1):
            raise BadJob(
                "pay_mode='voucher' is for redundancy 1, paid from the peer's deposit: use escrow='peer' and "
                "encrypt=False (--escrow peer --no-encrypt)"
            )
        await trio.to_thread.run_sync(lambda: bundle_mod.prepare(Path(code), m, encrypt=False))  # checks only
        peer = self.peer()
        status = await peer.status()
        if not force:
            await self.precheck(m, peer)
        notes: list[str] = []
        if escrow == "auto":
            try:
                await self._probe_announce(peer)
                escrow = "client"
            except PeerUnavailable:
                escrow, encrypt = "peer", False
                notes.append(
                    "the peer cannot announce client-escrowed jobs: it escrowed this job from its own "
                    "account (not anonymous) and the bundle is plaintext"
                )
        prepared = await trio.to_thread.run_sync(lambda: bundle_mod.prepare(Path(code), m, encrypt=encrypt))
        esc = None
        if escrow == "client":
            await self._probe_announce(peer)
            esc = await self.escrow(peer)
            # a missing wallet fails here, before anything is posted
            await trio.to_thread.run_sync(esc.funder)
        code_cid = await peer.put_blob(prepared.data)
        fields: dict[str, Any] = {
            "code_cid": code_cid,
            "manifest": m.to_dict(),
            "redundancy": redundancy,
            "quorum": default_quorum(redundancy) if quorum is None else quorum,
            "payment_wei": pay,
            "encrypted": bool(prepared.key),
        }
        if executors:
            fields["executors"] = sorted(set(executors))
        if pay_mode == "voucher":
            fields["pay"] = "voucher"
        return await self._publish(
            peer,
            status,
            fields,
            esc,
            code=str(Path(code).resolve()),
            bundle_key=prepared.key.hex(),
            deadline_s=deadline_s or default_deadline_s(m),
            notes=notes,
        )

    async def rerun(
        self, job_id: str, *, redundancy: int = 1, quorum: int | None = None, executors: Sequence[bytes] = ()
    ) -> JobRecord:
        """Submit the computation of job ``job_id`` again as a new job: the same stored bundle (and bundle key)
        and manifest, a fresh nonce, result key and escrow, the quoted payment for ``redundancy``, paid the way
        the first job was. Spot checks and tie-breaks (:mod:`.adaptive`) are re-runs."""
        _check_redundancy(redundancy)
        rec = self.records.load(job_id)
        spec = rec.job_spec()
        peer = self.peer_of(rec)
        status = await peer.status()
        esc = None
        if rec.escrow_key:
            esc = await self.escrow(peer)
            await trio.to_thread.run_sync(esc.funder)
        fields: dict[str, Any] = {
            "code_cid": spec.code_cid,
            "manifest": spec.manifest.to_dict(),
            "redundancy": redundancy,
            "quorum": default_quorum(redundancy) if quorum is None else quorum,
            "payment_wei": price_quote(spec.manifest, redundancy, self.usd_per_eth).wei,
            "encrypted": spec.encrypted,
        }
        if executors:
            fields["executors"] = sorted(set(executors))
        if spec.pay == "voucher" and redundancy == 1:
            fields["pay"] = "voucher"
        return await self._publish(
            peer,
            status,
            fields,
            esc,
            code=rec.code,
            bundle_key=rec.bundle_key,
            deadline_s=default_deadline_s(spec.manifest),
            notes=[f"re-run of {rec.job_id}"],
        )

    async def _publish(
        self,
        peer: Peer,
        status: dict[str, Any],
        fields: dict[str, Any],
        esc: Escrow | None,
        *,
        code: str,
        bundle_key: str,
        deadline_s: int,
        notes: list[str],
    ) -> JobRecord:
        """Spec, local record, escrow (``esc``: from a fresh per-job key; None: the peer escrows) and announce."""
        deadline = int(time.time()) + deadline_s
        if esc is not None:
            deadline = max(deadline, await trio.to_thread.run_sync(esc.now) + deadline_s)
        # encrypted jobs also get a per-job result key: executors seal the result to it (only we can read it)
        result_seed = os.urandom(32) if fields["encrypted"] else b""
        fields = {**fields, "deadline": deadline, "nonce": os.urandom(16)}
        if result_seed:
            fields["result_key"] = bytes(SigningKey(result_seed).verify_key)
        try:
            spec = JobSpec.from_dict(fields)
            spec = _in_peer_shard(spec, fields, status)
        except ProtocolError as e:
            raise BadJob(f"bad job: {e.detail or e}") from None
        rec = JobRecord(
            job_id=spec.job_id.hex(),
            spec=JobRecord.spec_dict(spec),
            peer=peer.url,
            code=code,
            bundle_key=bundle_key,
            result_seed=result_seed.hex(),
            state="new",
            notes=notes,
        )
        if esc is None:
            return await self._submit_via_peer(peer, spec, rec)
        from ..chain.chain import Signer

        fresh = Signer.generate()
        assert fresh.private_key is not None
        rec.escrow_address, rec.escrow_key = fresh.address, fresh.private_key.hex()
        rec.chain = {**esc.info(), "peer_chain": status.get("chain", "")}
        rec.state = "escrowing"
        self.records.save(rec)  # the key is on disk before any money goes to it
        posted = await trio.to_thread.run_sync(
            lambda: esc.post(
                rec.escrow_key, spec.job_id, spec.redundancy, spec.quorum, deadline, spec.payment_wei
            )
        )
        rec.funder, rec.txs, rec.state = posted["funder"], posted["txs"], "escrowed"
        self.records.save(rec)
        try:
            await peer.announce(rec.spec, rec.bundle_key)
        except PeerUnavailable as e:
            rec.reason = f"announce failed: {e}"
            self.records.save(rec)
            raise PeerUnavailable(
                f"the escrow is posted but the peer did not announce the job ({e}); get the escrow back with "
                f"`sandrun-p2p submit --refund {rec.job_id}`"
            ) from None
        rec.state = "announced"
        self.records.save(rec)
        return rec

    async def _probe_announce(self, peer: Peer) -> None:
        """Make sure the peer can announce client-escrowed jobs before any money moves."""
        try:
            await peer.announce({})
        except PeerError as e:
            if e.status == 400:
                return
            if e.status in (404, 405):
                raise PeerUnavailable(
                    f"peer {peer.url} cannot announce a job escrowed by the client (no POST /v1/announce); "
                    "use --escrow peer (the peer pays the escrow) or another peer. No money moved"
                ) from None
            raise
        raise PeerUnavailable(f"peer {peer.url} accepted an empty announcement; refusing to use it")

    async def _submit_via_peer(self, peer: Peer, spec: JobSpec, rec: JobRecord) -> JobRecord:
        body = {
            "manifest": spec.manifest.to_dict(),
            "code_cid": spec.code_cid,
            "redundancy": spec.redundancy,
            "quorum": spec.quorum,
            "deadline": spec.deadline,
            "nonce": spec.nonce.hex(),
            "payment_wei": spec.payment_wei,
        }
        if spec.executors:
            body["executors"] = [x.hex() for x in spec.executors]
        if spec.pay != "escrow":  # only then: a peer without the voucher mode refuses the field, loudly
            body["pay"] = spec.pay
        out = await peer.submit_escrowed_by_peer(body)
        if out["job_id"] != rec.job_id:
            raise PeerUnavailable(
                f"peer {peer.url} announced a different job ({out['job_id']}) than was asked"
            )
        rec.state, rec.chain = "announced", {"escrow": "peer"}
        self.records.save(rec)
        return rec

    # ------------------------------------------------------------------ watch

    async def watch(
        self, job_id: str, *, peer: str | None = None, timeout: float | None = None, since: int = 0
    ) -> AsyncIterator[Update]:
        """Yield the job's state changes (long-polling the peer's events) until it is settled, refunded or
        failed; :class:`DeadlinePassed` if ``timeout`` (default: until the job's deadline + 60 s) runs out."""
        rec = self._record(job_id)
        p = self.peer(peer) if peer is not None else self.peer_of(rec)
        jid = rec.job_id if rec else job_id
        end = time.monotonic() + (
            timeout
            if timeout is not None
            else max(30.0, (rec.job_spec().deadline if rec else time.time() + 600) - time.time() + 60)
        )
        cursor = since
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise DeadlinePassed(
                    f"job {jid[:16]} did not finish in time; its last state is "
                    f"{rec.state if rec else 'unknown'}. `sandrun-p2p submit --refund {jid}` "
                    "returns the escrow once the chain allows it"
                )
            out = await p.events(jid, since=cursor, wait=min(20.0, max(0.1, left)))
            for e in out["events"]:
                cursor = max(cursor, int(e["id"]))
                if e["state"] not in SHOWN:
                    continue
                u = Update(
                    e["state"], e.get("detail", ""), e.get("node", ""), float(e.get("at", 0)), int(e["id"])
                )
                if rec is not None:
                    rec.state = (
                        u.state if u.state in (*ENDED, "accepted", "announced", "running") else rec.state
                    )
                    if u.state in ("failed", "refunded") and u.detail:
                        rec.reason = u.detail
                    if u.state == "accepted":
                        rec.accepted_root = u.detail
                    self.records.save(rec)
                yield u
                if u.state in ENDED:
                    return
            cursor = max(cursor, int(out.get("last", cursor)))

    async def wait(
        self, job_id: str, *, peer: str | None = None, timeout: float | None = None, on_update: Any = None
    ) -> Update:
        """Follow the job until it ends; return the last update."""
        last = Update("unknown")
        async for u in self.watch(job_id, peer=peer, timeout=timeout):
            last = u
            if on_update is not None:
                on_update(u)
        return last

    # ------------------------------------------------------------------ result

    async def result(self, job_id: str, dest: str | Path, *, peer: str | None = None) -> Trace:
        """Fetch the accepted result, open it when it is sealed to this job's result key, verify every file
        against the accepted trace root, write it to ``dest``."""
        rec = self.records.load(job_id)
        spec = rec.job_spec()
        p = self.peer(peer) if peer is not None else self.peer_of(rec)
        try:
            view = await p.job(rec.job_id)
        except PeerError as e:
            if e.status == 404:
                raise NotYet(
                    f"peer {p.url} does not know job {rec.job_id[:16]} (yet); try another --peer"
                ) from None
            raise
        root_hex = view.get("accepted_root")
        if not root_hex:
            state, reason = view.get("state", "?"), view.get("reason", "")
            if state in ("failed", "refunded"):
                raise DeadlinePassed(
                    f"job {rec.job_id[:16]} has no verified result: {state}"
                    + (f" ({reason})" if reason else "")
                )
            raise NotYet(f"job {rec.job_id[:16]} has no accepted result yet (state {state}: {reason})")
        root = bytes.fromhex(root_hex)
        await self._check_root_on_chain(rec, root)
        cids = list(view.get("result_cids") or [])
        if not cids:
            raise NotYet(f"peer {p.url} knows the accepted root but no result CID yet")
        last: ClientError | None = None
        for cid in cids:
            try:
                data = await p.blob(cid, tar=True)
            except PeerUnavailable as e:
                last = e
                continue
            try:
                if spec.result_key:
                    data = await trio.to_thread.run_sync(
                        open_result, data, spec, bytes.fromhex(rec.result_seed)
                    )
                trace = await trio.to_thread.run_sync(verify_and_write, data, spec, root, Path(dest))
            except ResultRejected as e:
                last = ResultRejected(f"result {cid}: {e}")
                continue
            rec.accepted_root, rec.result_dir = root.hex(), str(Path(dest).resolve())
            self.records.save(rec)
            return trace
        assert last is not None
        raise last

    async def _check_root_on_chain(self, rec: JobRecord, root: bytes) -> None:
        """When the chain settled the job, its recorded root prefix must match what the peer calls accepted."""
        if not rec.escrow_key:
            return
        try:
            esc = await self.escrow()
            closed = await trio.to_thread.run_sync(esc.closed, bytes.fromhex(rec.job_id))
        except ChainUnavailable:
            return  # the peer's word plus the file hashes still hold; the chain check is extra
        prefix = closed.get("root_prefix") if closed.get("state") == "settled" else ""
        if prefix and not root.hex().startswith(prefix):
            raise ResultRejected(
                f"the peer's accepted root {root.hex()[:16]}... is not the root the chain settled "
                f"({prefix[:16]}...); refusing it (try another --peer)"
            )

    # ------------------------------------------------------------------ money

    async def refund(self, job_id: str) -> dict[str, Any]:
        """Claim what is left of the escrow (all of it for a failed job) back to the funding wallet."""
        rec = self.records.load(job_id)
        if not rec.escrow_key:
            raise NotYet(
                f"job {rec.job_id[:16]} was escrowed by the peer {rec.peer}; the peer gets its refund"
            )
        esc = await self.escrow()
        out = await trio.to_thread.run_sync(
            lambda: esc.refund(
                bytes.fromhex(rec.job_id),
                rec.escrow_key,
                rec.funder,
                network_failed=rec.state in ("failed", "refunded"),
            )
        )
        rec.refunded_wei += out["refunded_wei"]
        rec.txs += out["txs"]
        self.records.save(rec)
        return out

    async def money(self, job_id: str, *, peer: str | None = None) -> dict[str, Any]:
        """Where the job's money went: escrow, payouts per node, refunds (from the chain, else the peer)."""
        rec = self.records.load(job_id)
        spec = rec.job_spec()
        out: dict[str, Any] = {
            "escrow_wei": spec.payment_wei,
            "escrow_from": rec.escrow_address or "peer",
            "funder": rec.funder,
        }
        if rec.escrow_key:
            esc = await self.escrow()
            out.update(await trio.to_thread.run_sync(esc.closed, bytes.fromhex(rec.job_id)))
        else:
            p = self.peer(peer) if peer is not None else self.peer_of(rec)
            out["chain"] = (await p.job(rec.job_id)).get("chain", {})
        return out

    # ------------------------------------------------------------------ helpers

    def _record(self, job_id: str) -> JobRecord | None:
        try:
            return self.records.load(job_id)
        except ClientError:
            return None

    def peer_of(self, rec: JobRecord | None) -> Peer:
        """The peer a job went through (this client's peer when the record names it)."""
        if rec is None or rec.peer == self.peer().url:
            return self.peer()
        # the record names a URL; its token is the one we were given, or the peer's env token
        return self.peer(rec.peer)


def list_client_jobs(home: Path | None = None) -> list[dict[str, Any]]:
    """This machine's submitted jobs, newest first, without secrets: for ``sandrun-p2p jobs``.

    Each: ``{"job_id", "state", "reason", "created", "peer", "payment_wei", "redundancy", "encrypted",
    "escrow_address", "accepted_root", "paid_wei", "refunded_wei", "result_dir"}``.
    """
    out = []
    for r in RecordStore(home).all():
        spec = r.spec
        out.append(
            {
                "job_id": r.job_id,
                "state": r.state,
                "reason": r.reason,
                "created": r.created,
                "peer": r.peer,
                "payment_wei": spec.get("payment_wei", 0),
                "redundancy": spec.get("redundancy", 1),
                "encrypted": bool(r.bundle_key),
                "escrow_address": r.escrow_address,
                "accepted_root": r.accepted_root,
                "paid_wei": r.paid_wei,
                "refunded_wei": r.refunded_wei,
                "result_dir": r.result_dir,
            }
        )
    return out


# ---------------------------------------------------------------------- errors re-exported for callers
__all__ = [
    "Client",
    "Update",
    "quote",
    "load_manifest",
    "list_client_jobs",
    "eth_to_wei",
    "usd_to_wei",
    "BadJob",
    "InsufficientPayment",
    "NoEligibleNode",
    "DeadlinePassed",
    "NotYet",
    "ResultRejected",
]

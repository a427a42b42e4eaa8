"""The agent's journal: SQLite in WAL mode, one file in the data directory.

It records, per job, every raw signed protocol message this node accepted (so a restarted agent can
rebuild its NodeCore view by replaying them), every job event, this node's execution state and
result (written *before* the result is committed on the network), and the chain transactions sent.
A process killed with SIGKILL loses at most the transaction in flight; WAL with ``synchronous=NORMAL``
survives process crashes (only power loss can drop the last transactions).

Group commit (``Journal(path, group_commit=True)``, what the agent uses): writes join one open
transaction until :meth:`Journal.commit`; the agent commits once per turn of its event loop, and always
before anything leaves the node that depends on what was written (a publish, a chain transaction, an
execution start, an API reply). A SIGKILL then loses at most the peers' messages of the last turn, as if
the node had gone down a few milliseconds earlier; reads on the same connection see uncommitted writes.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    job_id BLOB PRIMARY KEY, state TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '',
    origin BLOB, redundancy INTEGER, created REAL NOT NULL, updated REAL NOT NULL,
    mine INTEGER NOT NULL DEFAULT 0, final INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT, job_id BLOB NOT NULL, kind TEXT NOT NULL, raw BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_job ON messages(job_id);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, job_id BLOB NOT NULL, state TEXT NOT NULL,
    detail TEXT NOT NULL, node BLOB NOT NULL, at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id);
CREATE TABLE IF NOT EXISTS executions (
    job_id BLOB PRIMARY KEY, status TEXT NOT NULL, started REAL NOT NULL,
    trace_root BLOB, salt BLOB, trace_cid TEXT, result_cid TEXT, usage_wei INTEGER, reason TEXT
);
CREATE TABLE IF NOT EXISTS txs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, job_id BLOB NOT NULL, kind TEXT NOT NULL,
    status TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '', at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS vouchers (
    job_id BLOB NOT NULL, role TEXT NOT NULL, price TEXT, voucher BLOB, root BLOB,
    batch INTEGER, given_up REAL, attest BLOB, paid TEXT, PRIMARY KEY (job_id, role)
);
CREATE TABLE IF NOT EXISTS voucher_batches (
    batch_id INTEGER PRIMARY KEY, payer TEXT NOT NULL, amount TEXT NOT NULL, release_at INTEGER NOT NULL,
    leaves BLOB, paid TEXT
);
CREATE TABLE IF NOT EXISTS voucher_trees (batch_id INTEGER PRIMARY KEY, until REAL NOT NULL, leaves BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS voucher_audits (
    batch_id INTEGER PRIMARY KEY, executor TEXT NOT NULL, node INTEGER NOT NULL, root BLOB NOT NULL,
    release_at INTEGER NOT NULL, attests TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chain_view (
    id INTEGER PRIMARY KEY CHECK (id = 0), key TEXT NOT NULL, position INTEGER NOT NULL, extra TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chain_nodes (
    idx INTEGER PRIMARY KEY, node_id BLOB NOT NULL, account TEXT NOT NULL, unbonding INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS chain_jobs (
    job_id BLOB PRIMARY KEY, seed BLOB NOT NULL, deadline INTEGER NOT NULL, commits TEXT NOT NULL,
    closed TEXT, closed_at REAL
);
"""

#: Job states after which nothing more happens to a job here ("forgotten": the protocol core dropped a decided
#: job that no settlement or refund closed; only the chain can still move it).
FINAL_STATES = ("settled", "refunded", "forgotten")
#: Events that move a job's summary state (others, e.g. "evidence", are only logged).
PHASE_STATES = frozenset(
    {
        "announced",
        "claimed",
        "running",
        "committed",
        "revealed",
        "accepted",
        "failed",
        "settled",
        "refunded",
        "forgotten",
    }
)


@dataclass(frozen=True)
class Execution:
    job_id: bytes
    status: str  # running | done | failed | abandoned
    trace_root: bytes | None = None
    salt: bytes | None = None
    trace_cid: str | None = None
    result_cid: str | None = None
    usage_wei: int = 0
    reason: str = ""


class Journal:
    """All journal reads and writes (synchronous). Each write is its own transaction, or with ``group_commit``
    joins the open one until :meth:`commit` (see the module doc)."""

    def __init__(
        self, path: Path, *, group_commit: bool = False, on_begin: Callable[[], None] | None = None
    ) -> None:
        self.path = Path(path)
        self.group_commit = group_commit
        self.on_begin = on_begin  # called when a group's transaction opens (to schedule its commit)
        self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(SCHEMA)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(vouchers)")}
        if "given_up" not in columns:  # a journal written before the column
            self.db.execute("ALTER TABLE vouchers ADD COLUMN given_up REAL")
        if "attest" not in columns:
            self.db.execute("ALTER TABLE vouchers ADD COLUMN attest BLOB")
        if "paid" not in columns:
            self.db.execute("ALTER TABLE vouchers ADD COLUMN paid TEXT")
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(voucher_batches)")}
        if "leaves" not in columns:
            self.db.execute("ALTER TABLE voucher_batches ADD COLUMN leaves BLOB")
        if "paid" not in columns:
            self.db.execute("ALTER TABLE voucher_batches ADD COLUMN paid TEXT")

    def _w(self, sql: str, params: tuple = ()) -> sqlite3.Cursor:
        """Run one write (opening the group's transaction first when grouping)."""
        if self.group_commit and not self.db.in_transaction:
            self.db.execute("BEGIN")
            if self.on_begin is not None:
                self.on_begin()
        return self.db.execute(sql, params)

    def _delete(self, table: str, key: str, values: list[Any]) -> None:
        """Delete the rows of ``table`` whose ``key`` is one of ``values`` (names from this module only)."""
        for v in values:
            self._w(f"DELETE FROM {table} WHERE {key}=?", (v,))  # noqa: S608 - table and key are constants here

    @property
    def dirty(self) -> bool:
        """Whether writes are waiting for :meth:`commit`."""
        return self.db.in_transaction

    def commit(self) -> None:
        """Make every write so far durable (a no-op when nothing is pending)."""
        if self.db.in_transaction:
            self.db.execute("COMMIT")

    def close(self) -> None:
        self.commit()
        self.db.close()

    # ------------------------------------------------------------------ meta
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self._w("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # ------------------------------------------------------------------ messages
    def add_message(self, job_id: bytes, kind: str, raw: bytes) -> None:
        """Record an accepted message; the job becomes open (replayed on restart) if it was not known."""
        now = time.time()
        self._w("INSERT INTO messages(job_id, kind, raw) VALUES (?, ?, ?)", (job_id, kind, raw))
        self._w(
            "INSERT INTO jobs(job_id, state, created, updated) VALUES (?, 'known', ?, ?) ON CONFLICT DO NOTHING",
            (job_id, now, now),
        )

    def messages(self, job_id: bytes) -> list[tuple[str, bytes]]:
        rows = self.db.execute("SELECT kind, raw FROM messages WHERE job_id=? ORDER BY id", (job_id,))
        return [(k, bytes(r)) for k, r in rows]

    # ------------------------------------------------------------------ jobs and events
    def event(self, job_id: bytes, state: str, detail: str, node: bytes, now: float | None = None) -> int:
        now = time.time() if now is None else now
        cur = self._w(
            "INSERT INTO events(job_id, state, detail, node, at) VALUES (?, ?, ?, ?, ?)",
            (job_id, state, detail, node, now),
        )
        if state in PHASE_STATES:
            self._w(
                "INSERT INTO jobs(job_id, state, detail, created, updated) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(job_id) DO UPDATE SET state=excluded.state, detail=excluded.detail, "
                "updated=excluded.updated WHERE jobs.final=0",
                (job_id, state, detail, now, now),
            )
        if state in FINAL_STATES:
            self._w("UPDATE jobs SET final=1 WHERE job_id=?", (job_id,))
        return int(cur.lastrowid or 0)

    def mark_job(
        self,
        job_id: bytes,
        *,
        origin: bytes | None = None,
        redundancy: int | None = None,
        mine: bool | None = None,
    ) -> None:
        now = time.time()
        self._w(
            "INSERT INTO jobs(job_id, state, created, updated) VALUES (?, 'known', ?, ?) ON CONFLICT DO NOTHING",
            (job_id, now, now),
        )
        if origin is not None:
            self._w("UPDATE jobs SET origin=? WHERE job_id=?", (origin, job_id))
        if redundancy is not None:
            self._w("UPDATE jobs SET redundancy=? WHERE job_id=?", (redundancy, job_id))
        if mine:
            self._w("UPDATE jobs SET mine=1 WHERE job_id=?", (job_id,))

    def job(self, job_id: bytes) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT job_id, state, detail, origin, redundancy, created, updated, mine, final FROM jobs WHERE job_id=?",
            (job_id,),
        ).fetchone()
        return _job_row(row) if row else None

    def jobs(self, limit: int = 1000) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT job_id, state, detail, origin, redundancy, created, updated, mine, final FROM jobs "
            "ORDER BY created DESC LIMIT ?",
            (limit,),
        )
        return [_job_row(r) for r in rows]

    def open_jobs(self) -> list[bytes]:
        """Jobs not final yet, oldest first (what a restart replays)."""
        rows = self.db.execute("SELECT job_id FROM jobs WHERE final=0 ORDER BY created")
        return [bytes(r[0]) for r in rows]

    def events(self, job_id: bytes | None = None, since: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        if job_id is None:
            rows = self.db.execute(
                "SELECT id, job_id, state, detail, node, at FROM events WHERE id>? ORDER BY id LIMIT ?",
                (since, limit),
            )
        else:
            rows = self.db.execute(
                "SELECT id, job_id, state, detail, node, at FROM events WHERE job_id=? AND id>? ORDER BY id LIMIT ?",
                (job_id, since, limit),
            )
        return [
            {"id": i, "job_id": bytes(j).hex(), "state": s, "detail": d, "node": bytes(n).hex(), "at": a}
            for i, j, s, d, n, a in rows
        ]

    def count_by_state(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())

    # ------------------------------------------------------------------ executions
    def execution(self, job_id: bytes) -> Execution | None:
        row = self.db.execute(
            "SELECT job_id, status, trace_root, salt, trace_cid, result_cid, usage_wei, reason "
            "FROM executions WHERE job_id=?",
            (job_id,),
        ).fetchone()
        if row is None:
            return None
        j, st, root, salt, tc, rc, usage, reason = row
        return Execution(
            bytes(j),
            st,
            bytes(root) if root else None,
            bytes(salt) if salt else None,
            tc,
            rc,
            usage or 0,
            reason or "",
        )

    def execution_started(self, job_id: bytes) -> None:
        self._w(
            "INSERT OR REPLACE INTO executions(job_id, status, started) VALUES (?, 'running', ?)",
            (job_id, time.time()),
        )

    def execution_done(
        self, job_id: bytes, root: bytes, salt: bytes, trace_cid: str, result_cid: str, usage_wei: int
    ) -> None:
        self._w(
            "UPDATE executions SET status='done', trace_root=?, salt=?, trace_cid=?, result_cid=?, usage_wei=? "
            "WHERE job_id=?",
            (root, salt, trace_cid, result_cid, usage_wei, job_id),
        )

    def execution_ended(self, job_id: bytes, status: str, reason: str) -> None:
        self._w(
            "UPDATE executions SET status=?, reason=? WHERE job_id=? AND status='running'",
            (status, reason, job_id),
        )

    def executions(self, status: str | None = None) -> list[Execution]:
        q = "SELECT job_id FROM executions" + (" WHERE status=?" if status else "")
        rows = self.db.execute(q, (status,) if status else ())
        return [e for (j,) in rows if (e := self.execution(bytes(j))) is not None]

    # ------------------------------------------------------------------ chain transactions
    def tx(self, job_id: bytes, kind: str, status: str, detail: str = "") -> None:
        self._w(
            "INSERT INTO txs(job_id, kind, status, detail, at) VALUES (?, ?, ?, ?, ?)",
            (job_id, kind, status, detail[:500], time.time()),
        )

    def txs(self, job_id: bytes) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT kind, status, detail, at FROM txs WHERE job_id=? ORDER BY id", (job_id,)
        )
        return [{"kind": k, "status": s, "detail": d, "at": a} for k, s, d, a in rows]

    # ------------------------------------------------------------------ vouchers (voucherlink.py)
    # role "payer": a voucher job this node funds (its price), then the voucher it signed for it (written and
    # committed before the voucher leaves), and when the job ended here with its batch not paid (``given_up``,
    # unix time); role "executor": a voucher this node holds with its result's root, then the batch that settled
    # it, or when its settleBatch was given up (``given_up``) while a try may still be mined. A payer's row also
    # keeps the executor's attestation of its result (``root`` and ``attest``, its signature: audit.py). Rows go once their
    # batch is paid or voided (a given-up one once it can no longer be settled; a payer's ended one ``history_s``
    # after it ended, but for the highest voucher to its executor, kept for the numbering), but for a job its batch
    # paid short of its voucher: kept, with what was paid (``paid``, since ``given_up``; a payer's also with the
    # last ``batch`` that paid part of it), until later batches pay the rest or ``history_s`` passed. Amounts are
    # decimal text (wei overflow SQLite's 64-bit integers).
    def voucher_put(
        self,
        job_id: bytes,
        role: str,
        *,
        price: int | None = None,
        voucher: bytes | None = None,
        root: bytes | None = None,
        batch: int | None = None,
        given_up: float | None = None,
        attest: bytes | None = None,
        paid: int | None = None,
    ) -> None:
        """Create or update a voucher row (the fields given; the others keep their value): one statement."""
        self._w(
            "INSERT INTO vouchers(job_id, role, price, voucher, root, batch, given_up, attest, paid) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(job_id, role) DO UPDATE SET price=COALESCE(excluded.price, price), "
            "voucher=COALESCE(excluded.voucher, voucher), root=COALESCE(excluded.root, root), "
            "batch=COALESCE(excluded.batch, batch), given_up=COALESCE(excluded.given_up, given_up), "
            "attest=COALESCE(excluded.attest, attest), paid=COALESCE(excluded.paid, paid)",
            (
                job_id,
                role,
                None if price is None else str(price),
                voucher,
                root,
                batch,
                given_up,
                attest,
                None if paid is None else str(paid),
            ),
        )

    def voucher_rows(self, role: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT job_id, price, voucher, root, batch, given_up, attest, paid FROM vouchers WHERE role=?",
            (role,),
        )
        return [
            {
                "job_id": bytes(j),
                "price": int(p or 0),
                "voucher": bytes(v) if v is not None else None,
                "root": bytes(r) if r is not None else None,
                "batch": b,
                "given_up": g,
                "attest": bytes(a) if a is not None else None,
                "paid": None if pd is None else int(pd),
            }
            for j, p, v, r, b, g, a, pd in rows
        ]

    def voucher_forget(self, job_ids: list[bytes], role: str) -> None:
        for jid in job_ids:
            self._w("DELETE FROM vouchers WHERE job_id=? AND role=?", (jid, role))

    def voucher_batch(
        self,
        batch_id: int,
        payer: str,
        amount: int,
        release_at: int,
        leaves: bytes | None = None,
        paid: dict[bytes, int] | None = None,
    ) -> None:
        """An executor's batch; ``leaves``: its whole results tree as settled (it may repeat results an earlier
        try settled, which the batch's own jobs alone do not give back); ``paid``: what it pays each job (a
        top-up pays jobs an earlier, short batch settled)."""
        parts = (
            None if paid is None else json.dumps({j.hex(): str(w) for j, w in paid.items()}, sort_keys=True)
        )
        self._w(
            "INSERT OR REPLACE INTO voucher_batches(batch_id, payer, amount, release_at, leaves, paid) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (batch_id, payer, str(amount), release_at, leaves, parts),
        )

    def voucher_batches(self) -> list[tuple[int, str, int, int, bytes | None, dict[bytes, int] | None]]:
        """(batch, payer, amount, release time, leaves, paid) of each batch (None: written before the column)."""
        rows = self.db.execute(
            "SELECT batch_id, payer, amount, release_at, leaves, paid FROM voucher_batches ORDER BY batch_id"
        )
        return [
            (
                b,
                p,
                int(a),
                r,
                bytes(lv) if lv is not None else None,
                None if pd is None else {bytes.fromhex(j): int(w) for j, w in json.loads(pd).items()},
            )
            for b, p, a, r, lv, pd in rows
        ]

    def voucher_batch_done(self, batch_id: int) -> None:
        """Forget a paid or voided batch of this executor, with its jobs' rows (but those it paid short: ``paid``)."""
        self._w("DELETE FROM vouchers WHERE role='executor' AND batch=? AND paid IS NULL", (batch_id,))
        self._w("DELETE FROM voucher_batches WHERE batch_id=?", (batch_id,))

    def voucher_tree_keep(self, batch_id: int, until: float, leaves: bytes) -> None:
        """The leaves of an executor's paid batch, still served to a payer's audit until ``until`` (wall clock)."""
        self._w(
            "INSERT OR REPLACE INTO voucher_trees(batch_id, until, leaves) VALUES (?, ?, ?)",
            (batch_id, until, leaves),
        )

    def voucher_trees(self) -> list[tuple[int, float, bytes]]:
        """(batch, until, leaves) of each paid batch's tree kept, the first to go first."""
        rows = self.db.execute("SELECT batch_id, until, leaves FROM voucher_trees ORDER BY until, batch_id")
        return [(b, float(u), bytes(lv)) for b, u, lv in rows]

    def voucher_trees_forget(self, batch_ids: list[int]) -> None:
        self._delete("voucher_trees", "batch_id", batch_ids)

    def voucher_audit_put(
        self, batch_id: int, executor: str, node: int, root: bytes, release_at: int, attests: dict[bytes, Any]
    ) -> None:
        """A payer's unfinished audit of its paid batch ``batch_id``, with the attestations (job -> (trace root,
        signature)) of the batch's jobs, whose rows went with the payment."""
        text = json.dumps({j.hex(): [r.hex(), sig.hex()] for j, (r, sig) in attests.items()}, sort_keys=True)
        self._w(
            "INSERT OR REPLACE INTO voucher_audits(batch_id, executor, node, root, release_at, attests)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (batch_id, executor, node, root, release_at, text),
        )

    def voucher_audits(self) -> list[tuple[int, str, int, bytes, int, dict[bytes, tuple[bytes, bytes]]]]:
        """(batch, executor, node, root, release time, attestations) of each unfinished audit of a paid batch."""
        rows = self.db.execute(
            "SELECT batch_id, executor, node, root, release_at, attests FROM voucher_audits ORDER BY batch_id"
        )
        return [
            (
                b,
                ex,
                int(n),
                bytes(r),
                int(at),
                {
                    bytes.fromhex(j): (bytes.fromhex(tr), bytes.fromhex(sig))
                    for j, (tr, sig) in json.loads(a).items()
                },
            )
            for b, ex, n, r, at, a in rows
        ]

    def voucher_audits_forget(self, batch_ids: list[int]) -> None:
        self._delete("voucher_audits", "batch_id", batch_ids)

    # ------------------------------------------------------------------ chain view (chainlink.py)
    # A checkpoint of what the chain adaptor derived from the contract's events below block ``position``: the
    # node registry, the jobs posted (seed, deadline, commitments, how they closed) and a JSON ``extra`` (the
    # voucher mode's part), under a ``key`` naming the chain and deployment. Written with the poll that moved
    # it, in the same transaction as the writes that poll caused; only the rows that poll changed.
    def chain_view(self) -> tuple[str, int, str, list[tuple], list[tuple]] | None:
        """(key, position, extra, node rows, job rows) of the stored checkpoint, or None."""
        row = self.db.execute("SELECT key, position, extra FROM chain_view WHERE id=0").fetchone()
        if row is None:
            return None
        nodes = self.db.execute("SELECT idx, node_id, account, unbonding FROM chain_nodes ORDER BY idx")
        jobs = self.db.execute(
            "SELECT job_id, seed, deadline, commits, closed, closed_at FROM chain_jobs ORDER BY rowid"
        )
        return row[0], row[1], row[2], nodes.fetchall(), jobs.fetchall()

    def chain_view_put(
        self,
        key: str,
        position: int,
        extra: str,
        nodes: list[tuple[int, bytes, str, int]],
        jobs: list[tuple[bytes, bytes, int, str, str | None, float | None]],
        *,
        replace: bool = False,
    ) -> None:
        """Move the checkpoint to ``position`` with these changed rows; ``replace``: drop every row first (a
        checkpoint of another chain or deployment, or one that could not be read)."""
        if replace:
            for table in ("chain_view", "chain_nodes", "chain_jobs"):
                self._w(f"DELETE FROM {table}")
        self._w(
            "INSERT OR REPLACE INTO chain_view(id, key, position, extra) VALUES (0, ?, ?, ?)",
            (key, position, extra),
        )
        for row in nodes:
            self._w(
                "INSERT OR REPLACE INTO chain_nodes(idx, node_id, account, unbonding) VALUES (?, ?, ?, ?)",
                row,
            )
        for row in jobs:
            self._w(
                "INSERT INTO chain_jobs(job_id, seed, deadline, commits, closed, closed_at) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(job_id) DO UPDATE SET commits=excluded.commits, closed=excluded.closed, "
                "closed_at=excluded.closed_at",
                row,
            )

    def chain_jobs_forget(self, job_ids: list[bytes]) -> None:
        self._delete("chain_jobs", "job_id", job_ids)

    # ------------------------------------------------------------------ pruning
    def forget_final(self, older_than_s: float, now: float | None = None) -> int:
        """Drop raw messages of jobs final for longer than ``older_than_s`` (events and results stay)."""
        cutoff = (time.time() if now is None else now) - older_than_s
        cur = self._w(
            "DELETE FROM messages WHERE job_id IN (SELECT job_id FROM jobs WHERE final=1 AND updated<?)",
            (cutoff,),
        )
        return cur.rowcount

    def forget_history(self, older_than_s: float, now: float | None = None) -> int:
        """Drop every row of the jobs final for longer than ``older_than_s``: summary, raw messages, events, and
        this node's executions and chain transactions (a node sees every job of its shards, and submits and runs
        jobs for as long as it lives: the journal would otherwise grow for good). Jobs not final stay however
        old (a restart replays them); rows of no job left (an event or transaction that came after its job
        went) go once as old. Returns the number of jobs dropped."""
        cutoff = (time.time() if now is None else now) - older_than_s
        old = "SELECT job_id FROM jobs WHERE final=1 AND updated<?"
        for table in ("messages", "events", "executions", "txs"):
            self._w(f"DELETE FROM {table} WHERE job_id IN ({old})", (cutoff,))
        n = self._w(f"DELETE FROM jobs WHERE job_id IN ({old})", (cutoff,)).rowcount
        for table, at in (("events", "at"), ("txs", "at"), ("executions", "started")):
            self._w(
                f"DELETE FROM {table} WHERE {at}<? AND job_id NOT IN (SELECT job_id FROM jobs)", (cutoff,)
            )
        return n

    def forget_strays(self, older_than_s: float, now: float | None = None) -> int:
        """Drop the jobs only ever seen through messages about them (a claim, a commitment...), never announced
        here, for longer than ``older_than_s``: stray or junk messages, which the core holds only briefly. Kept,
        they would be replayed at every restart and never pruned (their job never becomes final). Returns the
        number of jobs dropped."""
        cutoff = (time.time() if now is None else now) - older_than_s
        stray = "SELECT job_id FROM jobs WHERE state='known' AND final=0 AND mine=0 AND created<?"
        for table in ("messages", "events"):
            self._w(f"DELETE FROM {table} WHERE job_id IN ({stray})", (cutoff,))
        return self._w(f"DELETE FROM jobs WHERE job_id IN ({stray})", (cutoff,)).rowcount


def _job_row(row: tuple) -> dict[str, Any]:
    j, state, detail, origin, k, created, updated, mine, final = row
    return {
        "job_id": bytes(j).hex(),
        "state": state,
        "detail": detail,
        "origin": bytes(origin).hex() if origin else None,
        "redundancy": k,
        "created": created,
        "updated": updated,
        "mine": bool(mine),
        "final": bool(final),
    }

"""The durable alert outbox: every raised alert and, per sink, whether it has been delivered.

An alert counts as raised once `add` returns: it is then committed to SQLite (WAL journal,
synchronous=FULL), so it survives a kill -9 or a power cut at any later point and is delivered
after the restart. Each alert gets one delivery row per sink configured when it was raised;
a sink added to the config later gets only the alerts raised from then on (nothing is
back-filled), and a sink dropped from the config keeps its rows, still pending, should it come
back. A delivery is `pending` until the sink took it (`delivered`) or refused it for good
(`rejected`: kept, counted, never retried).

One process owns an outbox file. Its delivery threads share one connection behind a lock:
SQLite serialises writers anyway, and each call is short.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import NamedTuple

import msgpack

from pipeline.alert import Alert

PENDING, DELIVERED, REJECTED = "pending", "delivered", "rejected"
STATES: tuple[str, ...] = (PENDING, DELIVERED, REJECTED)
SCHEMA_VERSION = 1

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,        -- the table keeps its rowid: rowid order is raise order
    stream TEXT NOT NULL,
    rule TEXT NOT NULL,
    severity TEXT NOT NULL,
    raised_ts REAL NOT NULL,
    data BLOB NOT NULL          -- msgpack of Alert.to_wire(), snapshot included
);
CREATE TABLE IF NOT EXISTS deliveries (
    alert_id TEXT NOT NULL REFERENCES alerts(id) ON DELETE CASCADE,
    sink TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('{PENDING}', '{DELIVERED}', '{REJECTED}')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    last_error TEXT,
    delivered_ts REAL,
    PRIMARY KEY (alert_id, sink)
);
-- Only pending rows: what every delivery round reads stays small however long the history.
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries (sink) WHERE state = '{PENDING}';
CREATE INDEX IF NOT EXISTS alerts_raised ON alerts (raised_ts);
"""


# An alert no sink still has pending: what retention may forget.
_ALL_TAKEN = f"NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.alert_id = alerts.id AND d.state = '{PENDING}')"


class Delivery(NamedTuple):
    """One sink's record of one alert."""

    state: str
    attempts: int
    next_attempt: float
    last_error: str | None
    delivered_ts: float | None


class Recovery(NamedTuple):
    """A damaged outbox moved aside: where to, why, the pending alerts queued again and those that could not be read."""

    moved_to: str
    error: str
    requeued: int
    lost: int


def is_corruption(exc: sqlite3.DatabaseError) -> bool:
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text or "corrupt" in text


def _salvage(path: Path) -> tuple[list[tuple[Alert, float]], int]:
    """The alerts of a damaged outbox that some sink had not delivered yet (every alert, when the deliveries
    cannot be read), as far as their rows can be read; and how many could not be."""
    salvaged: list[tuple[Alert, float]] = []
    lost = 0
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return salvaged, 0
    try:
        try:
            done = {r[0] for r in db.execute(
                f"SELECT alert_id FROM deliveries GROUP BY alert_id HAVING sum(state = '{PENDING}') = 0").fetchall()}  # fmt: skip
        except sqlite3.Error:
            done = set()  # unknown: every readable alert goes out again (receivers drop repeats by id)
        try:
            top = db.execute("SELECT max(rowid) FROM alerts").fetchone()[0] or 0
        except sqlite3.Error:
            return salvaged, 0  # not even the table can be read: nothing is known to be lost, nothing to send
        for rowid in range(1, top + 1):  # row by row: a damaged page costs its rows, not the rest
            try:
                row = db.execute("SELECT id, raised_ts, data FROM alerts WHERE rowid = ?", (rowid,)).fetchone()
                if row is not None and row[0] not in done:
                    salvaged.append((_unpack(row[2]), float(row[1])))
            except Exception:
                lost += 1
    finally:
        db.close()
    return salvaged, lost


def _unpack(data: bytes) -> Alert:
    return Alert.from_wire(msgpack.unpackb(data, raw=False, strict_map_key=False))


class Outbox:
    """The outbox file at `path`, delivering to `sinks` (names, as in the config and the metrics).

    Opening creates what is missing; alerts already there are not given rows for sinks that are
    new in `sinks` (see the module docstring). Safe to share between threads; stop the delivery
    workers before `close()`.
    """

    def __init__(self, path: str | Path, sinks: list[str]) -> None:
        self.path = Path(path)
        self.sinks: list[str] = list(dict.fromkeys(sinks))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self.recoveries: list[Recovery] = []  # damaged files moved aside (see recover)
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                raise  # locked, disk full, unreadable: not a damaged file, and moving it aside would not help
            self.recover(exc)

    def _open(self) -> None:
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE in _tx), never implicit.
        self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=10.0)
        try:
            check = self._db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed ({check})")
            if self._db.execute("PRAGMA page_count").fetchone()[0] == 0:
                # A new file: pages freed by pruning are given back to the disk (see prune), not kept.
                self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise RuntimeError(f"outbox {self.path}: SQLite refused WAL mode (got {mode!r}); put it on a local disk")
            self._db.execute("PRAGMA synchronous=FULL")  # a commit is on disk before add() returns
            self._db.execute("PRAGMA foreign_keys=ON")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"outbox {self.path}: schema version {version} is newer than this code's {SCHEMA_VERSION}")
            with self._tx():
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        self._db.execute(stmt)
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            self._db.close()
            raise

    def recover(self, error: Exception) -> Recovery:
        """The file is damaged: move it (and its journal) aside as PATH.damaged-TIME, start a fresh outbox, and
        queue again every alert still pending in the old one that can be read; the rest is counted as lost."""
        with self._lock:
            with suppress(Exception):
                self._db.close()
            stamp = time.strftime("%Y%m%d-%H%M%S")
            aside = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
            for suffix in ("", "-wal", "-shm"):
                src = Path(str(self.path) + suffix)
                if src.exists():
                    os.replace(src, str(aside) + suffix)
            salvaged, lost = _salvage(aside)
            self._open()
            with self._tx() as db:
                for alert, raised_ts in salvaged:
                    wire = alert.to_wire()
                    wire["raised_ts"] = raised_ts
                    db.execute(
                        "INSERT OR IGNORE INTO alerts (id, stream, rule, severity, raised_ts, data) VALUES (?, ?, ?, ?, ?, ?)",
                        (alert.id, alert.stream, alert.rule, alert.severity, raised_ts, msgpack.packb(wire, use_bin_type=True)),
                    )
                    db.executemany(
                        f"INSERT OR IGNORE INTO deliveries (alert_id, sink, state, attempts, next_attempt) VALUES (?, ?, '{PENDING}', 0, ?)",
                        [(alert.id, sink, raised_ts) for sink in self.sinks],
                    )
            rec = Recovery(str(aside), str(error), len(salvaged), lost)
            self.recoveries.append(rec)
            return rec

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; the write lock is taken at BEGIN, so it cannot fail halfway for a lock."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def add(self, alerts: list[Alert], now: float) -> list[Alert]:
        """Record new alerts, each with a pending delivery per sink, in one transaction. An id already
        in the outbox (a replay, a restarted stage raising it again) is skipped. Returns the alerts
        added, their `raised_ts` set to `now`; only these count as raised."""
        added: list[Alert] = []
        if not alerts:
            return added
        with self._tx() as db:
            for alert in alerts:
                wire = alert.to_wire()
                wire["raised_ts"] = now
                cur = db.execute(
                    "INSERT OR IGNORE INTO alerts (id, stream, rule, severity, raised_ts, data) VALUES (?, ?, ?, ?, ?, ?)",
                    (alert.id, alert.stream, alert.rule, alert.severity, now, msgpack.packb(wire, use_bin_type=True)),
                )
                if cur.rowcount != 1:
                    continue
                db.executemany(
                    f"INSERT INTO deliveries (alert_id, sink, state, attempts, next_attempt) VALUES (?, ?, '{PENDING}', 0, ?)",
                    [(alert.id, sink, now) for sink in self.sinks],
                )
                added.append(alert)
        # Only once committed: a failed add leaves the caller's alerts as they were.
        for alert in added:
            alert.raised_ts = now
        return added

    def _pending(self, sink: str, limit: int) -> list[tuple[bytes, int, float]]:
        with self._lock:
            return self._db.execute(
                "SELECT a.data, d.attempts, d.next_attempt FROM deliveries d JOIN alerts a ON a.id = d.alert_id"
                f" WHERE d.sink = ? AND d.state = '{PENDING}' ORDER BY a.rowid LIMIT ?",
                (sink, limit),
            ).fetchall()

    def due(self, sink: str, now: float, limit: int = 50) -> list[tuple[Alert, int]]:
        """Pending deliveries of `sink` whose next attempt is due, in raise order, with their failed
        attempts so far. The list stops at the first pending alert not yet due, so a sink's alerts
        go out in the order they were raised even while it is retrying one."""
        out: list[tuple[Alert, int]] = []
        for data, attempts, next_attempt in self._pending(sink, limit):
            if next_attempt > now:
                break
            out.append((_unpack(data), attempts))
        return out

    def next_due(self, sink: str) -> float | None:
        """When the first pending delivery of `sink` (in raise order) is due; None when none is pending."""
        rows = self._pending(sink, 1)
        return rows[0][2] if rows else None

    def _mark(self, sql: str, params: tuple[object, ...]) -> bool:
        with self._tx() as db:
            return db.execute(sql, params).rowcount == 1

    def mark_delivered(self, sink: str, alert_id: str, now: float) -> bool:
        """The sink has it. False if there was no pending delivery to mark."""
        return self._mark(
            f"UPDATE deliveries SET state = '{DELIVERED}', attempts = attempts + 1, delivered_ts = ?, last_error = NULL"
            f" WHERE alert_id = ? AND sink = ? AND state = '{PENDING}'",
            (now, alert_id, sink),
        )

    def mark_failed(self, sink: str, alert_id: str, error: str, next_attempt: float) -> bool:
        """One more failed attempt; the delivery stays pending until `next_attempt`."""
        return self._mark(
            "UPDATE deliveries SET attempts = attempts + 1, last_error = ?, next_attempt = ?"
            f" WHERE alert_id = ? AND sink = ? AND state = '{PENDING}'",
            (error, next_attempt, alert_id, sink),
        )

    def mark_rejected(self, sink: str, alert_id: str, error: str) -> bool:
        """The receiver refused it for good: kept with the error, never retried."""
        return self._mark(
            f"UPDATE deliveries SET state = '{REJECTED}', attempts = attempts + 1, last_error = ?"
            f" WHERE alert_id = ? AND sink = ? AND state = '{PENDING}'",
            (error, alert_id, sink),
        )

    def depth(self, sink: str) -> int:
        """Pending deliveries of `sink`."""
        with self._lock:
            return self._db.execute(f"SELECT count(*) FROM deliveries WHERE sink = ? AND state = '{PENDING}'", (sink,)).fetchone()[0]

    def depths(self) -> dict[str, int]:
        """Pending deliveries per sink: every configured sink, and any other sink that still has some."""
        out = dict.fromkeys(self.sinks, 0)
        with self._lock:
            rows = self._db.execute(f"SELECT sink, count(*) FROM deliveries WHERE state = '{PENDING}' GROUP BY sink").fetchall()
        out.update(dict(rows))
        return out

    def counts(self, sink: str) -> dict[str, int]:
        """Deliveries of `sink` by state."""
        out = dict.fromkeys(STATES, 0)
        with self._lock:
            out.update(dict(self._db.execute("SELECT state, count(*) FROM deliveries WHERE sink = ? GROUP BY state", (sink,)).fetchall()))
        return out

    def get(self, alert_id: str) -> Alert | None:
        with self._lock:
            row = self._db.execute("SELECT data FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        return _unpack(row[0]) if row else None

    def delivery(self, sink: str, alert_id: str) -> Delivery | None:
        with self._lock:
            row = self._db.execute(
                "SELECT state, attempts, next_attempt, last_error, delivered_ts FROM deliveries WHERE alert_id = ? AND sink = ?",
                (alert_id, sink),
            ).fetchone()
        return Delivery(*row) if row else None

    def prune(self, before: float) -> int:
        """Forget alerts raised before `before` that no sink still has pending; returns how many."""
        with self._tx() as db:
            n = db.execute(
                f"DELETE FROM alerts WHERE raised_ts < ? AND {_ALL_TAKEN}", (before,),
            ).rowcount
        self._give_back()
        return n

    def prune_to(self, max_bytes: int, batch: int = 100) -> int:
        """Forget the oldest alerts no sink has pending until the outbox holds at most `max_bytes`; returns how
        many. Pending alerts are never forgotten, whatever their size."""
        removed = 0
        while self.size() > max_bytes:
            with self._tx() as db:
                n = db.execute(
                    f"DELETE FROM alerts WHERE rowid IN (SELECT rowid FROM alerts WHERE {_ALL_TAKEN} ORDER BY rowid LIMIT ?)", (batch,),
                ).rowcount
            if n == 0:
                break  # what is left is pending
            removed += n
        self._give_back()
        return removed

    def size(self) -> int:
        """Bytes the outbox's alerts and deliveries take (free pages not counted)."""
        with self._lock:
            pages = self._db.execute("PRAGMA page_count").fetchone()[0] - self._db.execute("PRAGMA freelist_count").fetchone()[0]
            return int(pages * self._db.execute("PRAGMA page_size").fetchone()[0])

    def _give_back(self) -> None:
        with self._lock:
            # executescript runs it to its end (execute() stops after its first step: one page). A no-op for a file
            # made before auto_vacuum was set.
            self._db.executescript("PRAGMA incremental_vacuum;")

    def close(self) -> None:
        with self._lock:
            self._db.close()


class OutboxReader:
    """A read-only view of an outbox that another process owns (the web view's alert history): queries only,
    each on a connection of its own (SQLite's WAL lets readers run beside the writer)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection | None]:
        if not self.path.is_file():
            yield None  # no alert raised yet: an empty history
            return
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5.0, check_same_thread=False)
        try:
            # The writer creates the file, then its tables: one starting (or stopped while starting) has none yet.
            ready = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alerts'").fetchone()
            yield db if ready else None
        finally:
            db.close()

    def history(self, stream: str | None = None, rule: str | None = None, since: float | None = None, until: float | None = None,
                limit: int = 50, offset: int = 0) -> tuple[int, list[Alert]]:  # fmt: skip
        """(how many match, the page of them newest first); `since`/`until`: when they were raised, Unix seconds."""
        where, args = [], []
        for clause, value in (("stream = ?", stream), ("rule = ?", rule), ("raised_ts >= ?", since), ("raised_ts <= ?", until)):
            if value is not None:
                where.append(clause)
                args.append(value)
        cond = (" WHERE " + " AND ".join(where)) if where else ""
        with self._db() as db:
            if db is None:
                return 0, []
            total = db.execute(f"SELECT count(*) FROM alerts{cond}", args).fetchone()[0]
            rows = db.execute(f"SELECT data FROM alerts{cond} ORDER BY rowid DESC LIMIT ? OFFSET ?", [*args, limit, offset]).fetchall()
        return int(total), [_unpack(r[0]) for r in rows]

    def get(self, alert_id: str) -> Alert | None:
        with self._db() as db:
            row = db.execute("SELECT data FROM alerts WHERE id = ?", (alert_id,)).fetchone() if db is not None else None
        return _unpack(row[0]) if row else None

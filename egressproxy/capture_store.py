"""The embedded capture store: SQLite in WAL mode under `--data-dir`, written in batches off the event loop.

`put` never blocks: it appends to a bounded queue, and when the queue is full the record is dropped and counted
(`egress_capture_drops_total{sink="store", reason="queue-full"}`). One writer thread per process takes what has
queued (up to `batch` records, or what arrived within `flush_interval`) and writes it in one transaction.

Failures never reach traffic: a full disk, a read-only directory, a database locked past the busy timeout drop
the batch, count it (`reason="store-error"`) and log one line per incident; the next write that succeeds ends
the incident (and says so). The connection is reopened after an error, so a directory that becomes writable
again is used again.

Workers (`--workers N`) share one database file: each process has its own writer on the same WAL database with
a busy timeout, so `egressproxy captures` reads one file and ids stay unique (SQLite assigns them).

Retention, checked every `retention_interval` seconds by every writer (deleting is idempotent): records older
than `max_age` go, then the oldest until the live pages fit in `max_bytes`; freed pages are returned to the file
system (`auto_vacuum = INCREMENTAL`) and the WAL is truncated.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from egressproxy.capture_metrics import CaptureMetrics
from egressproxy.capture_records import Document, PendingDocument, document_of
from egressproxy.record_queue import STOP, RecordQueue, document_weight

__all__ = ["CaptureStore", "SCHEMA", "DEFAULT_MAX_AGE", "DEFAULT_MAX_BYTES", "STORE_FILE", "open_reader"]

log = logging.getLogger("egressproxy")

STORE_FILE = "captures.db"
DEFAULT_MAX_AGE = 7 * 24 * 3600.0  # seconds
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
BUSY_TIMEOUT_MS = 2000

SCHEMA = """
CREATE TABLE IF NOT EXISTS captures (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    host TEXT,
    namespace TEXT,
    service_account TEXT,
    route TEXT,
    status INTEGER,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS captures_ts ON captures (ts);
"""

class CaptureStore:
    """The writer side: `start()`, `put(ts, document)` from the event loop, `close()` at shutdown."""

    def __init__(
        self,
        path: Path,
        metrics: CaptureMetrics,
        *,
        max_age: float = DEFAULT_MAX_AGE,
        max_bytes: int = DEFAULT_MAX_BYTES,
        queue_size: int = 10000,
        queue_bytes: int = 64 * 1024 * 1024,
        batch: int = 500,
        flush_interval: float = 0.2,
        retention_interval: float = 60.0,
    ) -> None:
        self.path = path
        self.metrics = metrics
        self.max_age = max_age
        self.max_bytes = max_bytes
        self.batch = batch
        self.flush_interval = flush_interval
        self.retention_interval = retention_interval
        self._queue: RecordQueue[tuple[float, Document]] = RecordQueue(queue_size, queue_bytes)
        self._thread = threading.Thread(target=self._run, name="capture-store", daemon=True)
        self._db: sqlite3.Connection | None = None
        self._incident: str | None = None
        self._next_retention = 0.0

    def start(self) -> "CaptureStore":
        self._thread.start()
        return self

    def put(self, ts: float, document: Document) -> None:
        """Queue one record (a document, or one the writer thread builds); drop and count it when the queue is
        full (never waits)."""
        weight = document.weight if isinstance(document, PendingDocument) else document_weight(document)
        if not self._queue.offer((ts, document), weight):
            self.metrics.drop("store", "queue-full")

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (within `timeout`), then stop the writer."""
        if not self._thread.is_alive():
            return
        self._queue.stop(timeout)
        self._thread.join(timeout)

    # --- the writer thread --------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._connection()  # the file exists from the start: `egressproxy captures` finds an empty store
        except (sqlite3.Error, OSError) as e:
            self._failed(e, 0)
        while True:
            wait = max(0.01, self._next_retention - time.monotonic())  # wake for retention on an idle store
            items = self._queue.take(wait, self.flush_interval, self.batch)
            stop = STOP in items
            records = [i for i in items if i is not STOP]
            if records:
                self._write(records)
            if stop or time.monotonic() >= self._next_retention:
                self._retain()
            if stop:
                break
        self._drain_closed()
        if self._db is not None:
            self._db.close()

    def _drain_closed(self) -> None:
        dropped = self._queue.drain()
        if dropped:
            self.metrics.drop("store", "closed", dropped)

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            try:
                db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                db.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only takes effect on a new database
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = NORMAL")
                db.executescript(SCHEMA)
            except sqlite3.Error:
                db.close()
                raise
            self._db = db
        return self._db

    def _write(self, records: list[tuple[float, Document]]) -> None:
        rows = [_row(ts, document_of(doc)) for ts, doc in records]
        try:
            db = self._connection()
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.executemany(
                    "INSERT INTO captures (ts, kind, host, namespace, service_account, route, status, doc)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
        except (sqlite3.Error, OSError) as e:
            self._failed(e, len(rows))
            return
        self.metrics.wrote("store", len(rows))
        if self._incident is not None:
            log.warning("capture store %s writable again; %s", self.path, "captures resume")
            self._incident = None

    def _failed(self, error: BaseException, count: int) -> None:
        self.metrics.drop("store", "store-error", count)
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None
        kind = type(error).__name__
        if self._incident is None:
            self._incident = kind
            # One line per incident; the error text of sqlite names no record content.
            log.warning(
                "capture store %s cannot be written (%s: %s): captures are dropped and counted "
                "(egress_capture_drops_total{sink=\"store\",reason=\"store-error\"}); traffic is unaffected",
                self.path, kind, error,
            )

    def _retain(self) -> None:
        self._next_retention = time.monotonic() + self.retention_interval
        if self._incident is not None and self._db is None:
            return
        try:
            db = self._connection()
            db.execute("DELETE FROM captures WHERE ts < ?", (time.time() - self.max_age,))
            self._trim_to_size(db)
            db.execute("PRAGMA incremental_vacuum").fetchall()  # it frees one page per step: step them all
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except (sqlite3.Error, OSError) as e:
            self._failed(e, 0)

    def _trim_to_size(self, db: sqlite3.Connection) -> None:
        """Delete the oldest records (a tenth of them at a time) until the live pages fit in `max_bytes`."""
        for _ in range(20):
            page_size = db.execute("PRAGMA page_size").fetchone()[0]
            pages = db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0]
            if pages * page_size <= self.max_bytes:
                return
            count = db.execute("SELECT COUNT(*) FROM captures").fetchone()[0]
            if not count:
                return
            db.execute(
                "DELETE FROM captures WHERE id IN (SELECT id FROM captures ORDER BY id LIMIT ?)", (max(1, count // 10),)
            )


def _row(ts: float, doc: dict[str, Any]) -> tuple[Any, ...]:
    identity = doc.get("identity") or {}
    return (
        ts,
        doc.get("kind", "request"),
        doc.get("host"),
        identity.get("namespace"),
        identity.get("serviceAccount"),
        doc.get("route"),
        doc.get("status"),
        _ENCODER.encode(doc),
    )


# `json.dumps(doc, separators=...)` builds a new encoder per call (any non-default argument does); one shared
# encoder gives the same text without that (the C encoder it wraps keeps no state between calls).
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def open_reader(path: Path) -> sqlite3.Connection:
    """A connection for reading (`egressproxy captures`): never creates the file; waits out a writer's lock."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return db

"""Reading the capture store: the filters of `egressproxy captures` as one SQL query, newest N in time order.

The store's indexed columns (ts, kind, host, namespace, service_account, route, status) carry what the filters
need; the document itself is returned as written, with the store's `id` first.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from egressproxy.durations import DurationError, parse_duration

__all__ = ["CaptureFilter", "FilterError", "latest_id", "parse_since", "parse_status", "select"]


class FilterError(ValueError):
    """A filter that cannot be understood (the message says what was expected)."""


@dataclass(frozen=True, slots=True)
class CaptureFilter:
    host: str | None = None
    since: float | None = None  # epoch seconds
    namespace: str | None = None
    service_account: str | None = None
    route: str | None = None
    status: tuple[int, int] | None = None  # inclusive range: 404..404, 500..599
    after_id: int = 0  # --follow: only records newer than the last one printed

    @classmethod
    def parse(
        cls,
        host: str | None = None,
        since: str | None = None,
        identity: str | None = None,
        route: str | None = None,
        status: str | None = None,
        now: float | None = None,
    ) -> "CaptureFilter":
        namespace = service_account = None
        if identity:
            namespace, _, service_account = identity.partition("/")
            if not namespace or not service_account:
                raise FilterError(f"--identity expects NAMESPACE/SERVICEACCOUNT, got {identity!r}")
        return cls(
            host=host.lower().rstrip(".") if host else None,
            since=parse_since(since, now) if since else None,
            namespace=namespace,
            service_account=service_account,
            route=route or None,
            status=parse_status(status) if status else None,
        )


def parse_since(text: str, now: float | None = None) -> float:
    """A duration back from now (`15m`, `2h`, `7d`) or an RFC3339 time (`2026-12-06T05:00:00Z`), as epoch."""
    now = time.time() if now is None else now
    try:
        if text.endswith("d") and text[:-1].replace(".", "", 1).isdigit():
            return now - float(text[:-1]) * 86400
        return now - parse_duration(text)
    except DurationError:
        pass
    try:
        stamp = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise FilterError(f"--since expects a duration (15m, 2h, 7d) or an RFC3339 time, got {text!r}") from None
    if stamp.tzinfo is None:
        raise FilterError(f"--since: an RFC3339 time needs a zone (Z or +hh:mm), got {text!r}")
    return stamp.timestamp()


def parse_status(text: str) -> tuple[int, int]:
    """`404` -> (404, 404); `5xx` -> (500, 599)."""
    t = text.strip().lower()
    if len(t) == 3 and t[0] in "12345" and t[1:] == "xx":
        low = int(t[0]) * 100
        return (low, low + 99)
    if t.isdigit() and 100 <= int(t) <= 599:
        return (int(t), int(t))
    raise FilterError(f"--status expects a code (404) or a class (5xx), got {text!r}")


def select(db: sqlite3.Connection, flt: CaptureFilter, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` records matching `flt`, oldest first, each its document with `id` first."""
    where, params = _where(flt)
    rows = db.execute(
        f"SELECT id, doc FROM captures{where} ORDER BY id DESC LIMIT ?", (*params, max(0, limit))
    ).fetchall()
    return [{"id": row_id, **json.loads(doc)} for row_id, doc in reversed(rows)]


def _where(flt: CaptureFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if flt.after_id:
        clauses.append("id > ?")
        params.append(flt.after_id)
    if flt.host is not None:
        clauses.append("host = ?")
        params.append(flt.host)
    if flt.since is not None:
        clauses.append("ts >= ?")
        params.append(flt.since)
    if flt.namespace is not None:
        clauses.append("namespace = ? AND service_account = ?")
        params += [flt.namespace, flt.service_account]
    if flt.route is not None:
        clauses.append("route = ?")
        params.append(flt.route)
    if flt.status is not None:
        clauses.append("status BETWEEN ? AND ?")
        params += list(flt.status)
    return (" WHERE " + " AND ".join(clauses) if clauses else "", params)


def latest_id(db: sqlite3.Connection) -> int:
    """The newest record's id (0 for an empty store): where `--follow` starts."""
    row = db.execute("SELECT MAX(id) FROM captures").fetchone()
    return int(row[0] or 0)

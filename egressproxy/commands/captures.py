"""`egressproxy captures`: read the embedded capture store (DESIGN.md 3 and 4.1; docs/captures.md).

A table by default, or one JSON document per line with `--json` (fields pinned by DESIGN.md 4.1). `--follow`
keeps printing new records, like `kubectl logs -f`, until interrupted. Exit 0; 2 when there is no store or a
filter cannot be understood.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from egressproxy.capture_query import CaptureFilter, FilterError, latest_id, select
from egressproxy.capture_store import STORE_FILE, open_reader

__all__ = ["captures", "table_line", "TABLE_HEADER"]

FOLLOW_INTERVAL = 0.5
TABLE_HEADER = f"{'ID':>6}  {'TIME':<24}  {'IDENTITY':<24}  {'DECISION':<8}  {'METHOD':<7}  {'STATUS':>6}  {'MS':>8}  TARGET"


def captures(args: argparse.Namespace, out: TextIO) -> int:
    path = Path(args.data_dir) / STORE_FILE
    if not path.exists():
        out.write(
            f"error: no capture store at {path}: the gateway has recorded nothing under this --data-dir yet "
            "(or runs with --no-captures)\n"
        )
        return 2
    try:
        flt = CaptureFilter.parse(args.host, args.since, args.identity, args.route, args.status)
    except FilterError as e:
        out.write(f"error: {e}\n")
        return 2
    db = open_reader(path)
    try:
        if not args.json:
            out.write(TABLE_HEADER + "\n")
        last = _print(select(db, flt, args.limit), args.json, out)
        if args.follow:
            _follow(db, flt, max(last, latest_id(db)), args.json, out)
    except sqlite3.Error as e:
        out.write(f"error: cannot read {path}: {e}\n")
        return 2
    except KeyboardInterrupt:
        pass
    finally:
        db.close()
    return 0


def _follow(db: sqlite3.Connection, flt: CaptureFilter, last: int, as_json: bool, out: TextIO) -> None:
    while True:
        time.sleep(FOLLOW_INTERVAL)
        records = select(db, replace(flt, after_id=last), 1000)
        last = _print(records, as_json, out) or last


def _print(records: list[dict[str, Any]], as_json: bool, out: TextIO) -> int:
    """Print records; the id of the last one (0 when none)."""
    for record in records:
        out.write((json.dumps(record, separators=(",", ":")) if as_json else table_line(record)) + "\n")
    out.flush()
    return int(records[-1]["id"]) if records else 0


def table_line(record: dict[str, Any]) -> str:
    identity = record.get("identity") or {}
    who = f"{identity.get('namespace', '?')}/{identity.get('serviceAccount', '?')}"
    if record.get("kind") == "connection":
        method = record.get("carries") or "-"
        up, down = (record.get("request") or {}).get("size", 0), (record.get("response") or {}).get("size", 0)
        target = f"{record.get('host') or record.get('sni') or '-'} (up {up} B, down {down} B)"
    else:
        method = record.get("method") or "-"
        target = record.get("url") or record.get("host") or "-"
    verdict = record.get("verdict") or {}
    if verdict.get("reason") and record.get("decision") == "deny":
        target += f" [{verdict['reason']}]"
    status = record.get("status")
    return (
        f"{record['id']:>6}  {record.get('time', ''):<24}  {who:<24}  {record.get('decision') or '-':<8}  "
        f"{method:<7}  {status if status is not None else '-':>6}  {record.get('durationMs', 0):>8.1f}  {target}"
    )

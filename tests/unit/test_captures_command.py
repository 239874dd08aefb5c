"""`egressproxy captures` (egressproxy/commands/captures.py) and the run flags of the capture store."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from egressproxy.capture_metrics import CaptureMetrics
from egressproxy.capture_store import CaptureStore
from egressproxy.cli import build_parser
from egressproxy.commands.captures import TABLE_HEADER, captures


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = captures(build_parser().parse_args(["captures", *argv]), out)
    return code, out.getvalue()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    store = CaptureStore(tmp_path / "captures.db", CaptureMetrics(CollectorRegistry()), flush_interval=0.01).start()
    store.put(time.time(), {"kind": "request", "time": "2026-12-06T05:00:00.000Z", "method": "GET", "status": 200,
                            "url": "https://api.example.test/x", "host": "api.example.test", "decision": "allow",
                            "durationMs": 3.5, "identity": {"namespace": "team-a", "serviceAccount": "agent"}})
    store.put(time.time(), {"kind": "connection", "time": "2026-12-06T05:00:01.000Z", "host": "db.example.test",
                            "carries": "TCP", "decision": "deny", "verdict": {"reason": "no-route"}, "durationMs": 1.0,
                            "identity": {"namespace": "team-b", "serviceAccount": "etl"},
                            "request": {"size": 5}, "response": {"size": 0}})
    store.close()
    return tmp_path


def test_json_is_one_document_per_line_with_the_id_first(data_dir: Path) -> None:
    code, out = run("--data-dir", str(data_dir), "--json")
    assert code == 0
    docs = [json.loads(line) for line in out.splitlines()]
    assert [d["id"] for d in docs] == [1, 2] and list(docs[0])[0] == "id"


def test_the_table_has_one_line_per_record(data_dir: Path) -> None:
    code, out = run("--data-dir", str(data_dir))
    lines = out.splitlines()
    assert code == 0 and lines[0] == TABLE_HEADER and len(lines) == 3
    assert "team-a/agent" in lines[1] and "https://api.example.test/x" in lines[1]
    assert "db.example.test (up 5 B, down 0 B) [no-route]" in lines[2] and "TCP" in lines[2]


def test_filters_reach_the_query(data_dir: Path) -> None:
    code, out = run("--data-dir", str(data_dir), "--json", "--identity", "team-b/etl")
    assert code == 0 and [json.loads(line)["host"] for line in out.splitlines()] == ["db.example.test"]


def test_no_store_and_bad_filters_exit_2(data_dir: Path, tmp_path: Path) -> None:
    code, out = run("--data-dir", str(tmp_path / "nothing"))
    assert code == 2 and "no capture store" in out
    code, out = run("--data-dir", str(data_dir), "--status", "weird")
    assert code == 2 and "--status" in out


def test_run_flags_for_retention() -> None:
    args = build_parser().parse_args(["run", "-c", "x", "--captures-max-age", "36h", "--captures-max-size", "2Gi"])
    assert (args.captures, args.captures_max_age, args.captures_max_size) == (True, 129600.0, 2 * 1024**3)
    args = build_parser().parse_args(["run", "-c", "x", "--no-captures", "--captures-max-age", "3d"])
    assert (args.captures, args.captures_max_age) == (False, 259200.0)
    defaults = build_parser().parse_args(["run", "-c", "x"])
    assert (defaults.captures_max_age, defaults.captures_max_size) == (7 * 86400.0, 512 * 1024**2)


@pytest.mark.parametrize("flag,value", [("--captures-max-age", "soon"), ("--captures-max-size", "12Q"),
                                        ("--captures-max-size", "0")])
def test_bad_run_flags_are_usage_errors(flag: str, value: str) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "-c", "x", flag, value])

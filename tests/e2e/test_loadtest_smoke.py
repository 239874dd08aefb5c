"""The load harness runs end to end: both proxies serve `plain` and `passthrough`, and the table reports them with
accepted connections per request (the figure that shows lost keep-alive, issue 16)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
def test_harness_reports_nonzero_throughput_for_both_proxies(tmp_path: Path) -> None:
    """~2 s per proxy and scenario: a table row with requests/s > 0 for egressproxy and for mitmdump, a ratio, and
    accepted connections per request (one loadtest/client.py connection per worker, kept alive: well under 1)."""
    out_json = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "loadtest" / "run.py"), "--duration", "2", "--warmup", "0.3", "--runs", "1",
         "--concurrency", "4", "--scenarios", "plain,passthrough", "--no-calibrate", "--json", str(out_json)],
        capture_output=True, text=True, timeout=110, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    rows = {}
    for line in proc.stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 3 and cells[0] == "plain" and cells[1] in ("egressproxy", "mitmdump"):
            rows.setdefault(cells[1], cells)  # the summary table, before the ratio table (same first cells)
    assert set(rows) == {"egressproxy", "mitmdump"}, proc.stdout
    for name, cells in rows.items():
        assert float(cells[2]) > 0, f"{name}: {cells}"
    assert re.search(r"^\| plain\s+\| egressproxy\s+\| \d+\.\d\dx", proc.stdout, re.M), proc.stdout

    assert re.search(r"^\| passthrough\s+\| egressproxy\s+\| [1-9]\d*\s", proc.stdout, re.M), proc.stdout

    result = json.loads(out_json.read_text())
    for run in result["runs"]:
        if run["index"] >= 0:
            assert 0 <= run["accepted_per_request"] < 0.5, run  # keep-alive: a handful of connections per run
    by_proxy = {r["proxy"]: r for r in result["runs"] if r["scenario"] == "plain" and r["index"] >= 0}
    assert by_proxy["egressproxy"]["rps"] > 0 and by_proxy["mitmdump"]["rps"] > 0
    assert by_proxy["egressproxy"]["errors"] == 0 and by_proxy["mitmdump"]["errors"] == 0
    assert result["ratios"][0]["scenario"] == "plain" and result["ratios"][0]["rps"] > 0
    assert result["ratios"][0]["proxy"] == "egressproxy" and result["ratios"][0]["baseline"] == "mitmdump"
    for run in result["runs"]:
        if run["index"] >= 0:
            assert run["cpu_ms_per_1k"] > 0 and run["peak_rss_mib"] > 10, run  # a Python proxy holds > 10 MiB


@pytest.mark.timeout(120)
def test_route_scaling_reports_a_row_per_route_count() -> None:
    """loadtest/route_scaling.py in process: each count's row, after checking every lookup decided the route it
    names (the script exits non-zero when a first/last/wildcard/header/miss lookup picks another)."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "loadtest" / "route_scaling.py"), "--counts", "10,60", "--compiles", "1"],
        capture_output=True, text=True, timeout=110, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if re.match(r"\| (10|60) \|", line)]
    assert len(rows) == 2, proc.stdout
    assert all(len(row.split("|")) == 15 for row in rows), rows  # count, compile, memory, 5 + 5 timings

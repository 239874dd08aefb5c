"""loadtest/latency.py runs end to end: open-loop intercepted HTTPS through the every-policy-on gateway and direct
TLS to the origin, in one run, with the added latency and the verdict against issue 16's target printed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(150)
def test_latency_harness_reports_added_latency_of_the_full_policy_gateway(tmp_path: Path) -> None:
    out_json = tmp_path / "latency.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "loadtest" / "latency.py"), "--rate", "40", "--duration", "1.5", "--rounds", "1",
         "--warmup", "0.2", "--connections", "2", "--targets", "direct,egressproxy-full", "--json", str(out_json)],
        capture_output=True, text=True, timeout=140, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = re.search(r"^\| egressproxy-full\s+\| (\d+)\s+\| 0\s+\|.*\| \+?-?\d+\.\d\d\s+\| [\d.]+\s+\| [\d.]+\s+\|$", proc.stdout, re.M)
    assert row and int(row.group(1)) > 0, proc.stdout
    assert re.search(r"^(MEETS|MISSES) issue 16's target: egressproxy-full adds", proc.stdout, re.M), proc.stdout
    lines = re.search(r"egressproxy-full wrote (\d+) access-log lines", proc.stdout)
    assert lines and int(lines.group(1)) > 0, proc.stdout  # the policies ran on the measured requests
    samples = json.loads(out_json.read_text())["samples"]
    by_target = {s["target"]: s for s in samples}
    assert set(by_target) == {"direct", "egressproxy-full"}
    for s in samples:
        assert s["requests"] > 20 and s["errors"] == 0 and len(s["latencies_us"]) == s["requests"], s["target"]

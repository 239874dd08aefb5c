"""squid in the load harness (issue 16): every scenario passes through Debian's squid-openssl with 0 errors (plain
forwarding, ssl-bump for intercept and connect-new, splice for passthrough), the table and ratios have its rows,
and neither a finished nor an interrupted run leaves squid or its certificate helper behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

NO_SQUID = shutil.which("squid") is None and not Path("/usr/sbin/squid").exists()
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(NO_SQUID, reason="apt-get install -y squid-openssl")]

REPO = Path(__file__).resolve().parents[2]
sys.path.append(str(REPO / "loadtest"))  # loadtest/ holds scripts, not a package

from proc_stats import descendants  # noqa: E402

SCENARIOS = ("plain", "intercept", "passthrough", "connect-new")


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that contain `text` (a run's working directory)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{pid} {cmdline}")
    return found


def wait_for(check, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"no {what} after {timeout:.0f}s")


@pytest.mark.timeout(170)
def test_every_scenario_passes_through_squid_with_no_errors_and_nothing_is_left(tmp_path: Path) -> None:
    out_json = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "loadtest" / "run.py"), "--duration", "1", "--warmup", "0.3", "--runs", "1",
         "--concurrency", "4", "--proxies", "mitmdump,squid", "--scenarios", ",".join(SCENARIOS), "--no-calibrate",
         "--json", str(out_json), "--keep"],
        capture_output=True, text=True, timeout=160, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    kept = [line.split(": ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("# working directory kept")]
    assert len(kept) == 1, proc.stdout
    try:
        assert processes_mentioning(kept[0]) == []  # squid, its certgen helper, mitmdump, origin: all gone
        assert (Path(kept[0]) / "squid" / "squid.conf").exists()
    finally:
        shutil.rmtree(kept[0], ignore_errors=True)

    result = json.loads(out_json.read_text())
    squid_runs = {r["scenario"]: r for r in result["runs"] if r["proxy"] == "squid" and r["index"] >= 0}
    assert set(squid_runs) == set(SCENARIOS), proc.stdout
    for scenario, run in squid_runs.items():
        assert run["requests"] > 0 and run["errors"] == 0, run
        assert run["cpu_ms_per_1k"] > 0 and run["peak_rss_mib"] > 1, run
        if scenario != "connect-new":
            assert run["accepted_per_request"] < 0.5, run  # keep-alive held on both legs
    ratio_scenarios = [r["scenario"] for r in result["ratios"] if r["proxy"] == "squid"]
    assert ratio_scenarios == list(SCENARIOS)
    assert all(r["baseline"] == "mitmdump" for r in result["ratios"])


@pytest.mark.timeout(120)
def test_ctrl_c_mid_run_stops_squid_and_its_helper_and_removes_the_working_directory() -> None:
    harness = subprocess.Popen(
        [sys.executable, str(REPO / "loadtest" / "run.py"), "--duration", "20", "--warmup", "0.3", "--runs", "1",
         "--concurrency", "2", "--proxies", "squid", "--scenarios", "intercept", "--no-calibrate"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO, start_new_session=True,
    )
    try:
        def squid_conf() -> str | None:
            for pid in descendants(harness.pid):
                try:
                    args = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
                except OSError:
                    continue
                if len(args) >= 2 and args[-2] == b"-f" and args[-1].endswith(b"squid.conf"):
                    return args[-1].decode()
            return None

        conf = wait_for(squid_conf, 60, "squid under the harness")
        workdir = str(Path(conf).parent.parent)
        wait_for(lambda: any("client.py" in p for p in processes_mentioning(workdir)), 60, "client running")
        assert any("certgen" in p for p in processes_mentioning(workdir))
        os.killpg(harness.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
        assert harness.wait(timeout=60) == 130
        assert processes_mentioning(workdir) == []
        assert not Path(workdir).exists()
    finally:
        if harness.poll() is None:  # a failed assertion above: let the harness clean up as it would on Ctrl-C
            os.killpg(harness.pid, signal.SIGINT)
            try:
                harness.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(harness.pid, signal.SIGKILL)
                harness.wait(timeout=10)


@pytest.mark.timeout(90)
def test_squid_that_finds_its_port_taken_is_started_again_on_another(monkeypatch: pytest.MonkeyPatch) -> None:
    """Something else listens on the port squid was given: readiness is squid's own word (cache.log), not any answer
    on the port, so the harness sees squid fail and starts it again on a fresh port."""
    import socket
    import tempfile

    import run

    # Like run.py's: directly under /tmp (pytest's tmp_path sits under a root-only directory squid's user cannot
    # traverse).
    tmp_path = Path(tempfile.mkdtemp(prefix="egressproxy-loadtest-test-"))
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = taken.getsockname()[1]
    ports = iter([busy])
    real_free_port = run.free_port
    monkeypatch.setattr(run, "free_port", lambda: next(ports, None) or real_free_port())
    try:
        origin = run.start_origin(tmp_path, 64)
        proxy = run.start_proxy("squid", tmp_path, origin, None)
        assert proxy.port != busy
        assert f"local=127.0.0.1:{proxy.port} " in (tmp_path / "squid" / "cache.log").read_text()
    finally:
        run.stop_all()
        taken.close()
        left = processes_mentioning(str(tmp_path))
        shutil.rmtree(tmp_path, ignore_errors=True)
    assert left == []

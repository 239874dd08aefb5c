"""loadtest/proc_stats.py and run.py's columns: CPU ms per 1,000 requests, peak RSS of a proxy's process tree, and
the ratio table of every proxy against bare mitmdump (issue 16)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

LOADTEST = Path(__file__).resolve().parents[2] / "loadtest"
if str(LOADTEST) not in sys.path:
    sys.path.append(str(LOADTEST))  # loadtest/ holds scripts, not a package

import proc_stats  # noqa: E402
import run  # noqa: E402

STATUS = """Name:\tpython
VmPeak:\t  300000 kB
VmHWM:\t   90000 kB
VmRSS:\t   81234 kB
Threads:\t4
"""


def test_cpu_ms_per_1k_requests() -> None:
    # 250 ticks at 100 Hz = 2.5 s of CPU for 5,000 requests = 0.5 ms each = 500 ms per 1,000
    assert proc_stats.cpu_ms_per_1k(250, 100, 5000) == pytest.approx(500.0)
    assert proc_stats.cpu_ms_per_1k(1, 100, 10) == pytest.approx(1000.0)
    assert proc_stats.cpu_ms_per_1k(250, 100, 0) == 0.0


def test_vm_rss_is_read_in_kib_and_a_vanished_process_counts_zero() -> None:
    assert proc_stats.parse_vm_rss_kib(STATUS) == 81234
    assert proc_stats.parse_vm_rss_kib("Name:\tkthreadd\n") == 0
    statuses = {1: STATUS, 2: STATUS.replace("81234", "1000"), 3: ""}
    assert proc_stats.tree_rss_kib([1, 2, 3], statuses.__getitem__) == 82234


def test_own_rss_is_read_from_proc() -> None:
    own = proc_stats.tree_rss_kib([os.getpid()])
    assert 1024 < own < 16 * 1024 * 1024  # more than a MiB, less than 16 GiB


def test_peak_rss_keeps_the_largest_sum_seen() -> None:
    sums = iter([100, 700, 300])
    third = threading.Event()

    def sample(pids: object) -> int:
        value = next(sums, 300)
        if value == 300:
            third.set()
        return value

    peak = proc_stats.PeakRss(os.getpid(), interval=0.001, sample=sample).start()
    assert third.wait(5)
    assert peak.stop() == 700


def test_descendants_include_a_child_process() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert child.pid in proc_stats.descendants(os.getpid())
        assert proc_stats.descendants(os.getpid())[0] == os.getpid()
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=10)


def result(proxy: str, requests: int, ticks: int, rss_kib: int, p99: float = 10.0, scenario: str = "plain",
           index: int = 0) -> run.RunResult:
    r = run.RunResult(scenario, proxy, index, duration=2.0, requests=requests, p50_ms=1.0, p99_ms=p99,
                      proxy_cpu=ticks / run.CLK_TCK / 2.0 * 100, proxy_cpu_ticks=ticks, peak_rss_kib=rss_kib)
    return r


def test_run_result_columns() -> None:
    r = result("egressproxy", requests=2000, ticks=run.CLK_TCK, rss_kib=100 * 1024)  # 1 s of CPU, 2,000 requests
    assert r.cpu_ms_per_1k == pytest.approx(500.0)
    assert r.per_core == pytest.approx(2000.0)  # its inverse: requests per CPU-second
    assert r.peak_rss_mib == pytest.approx(100.0)


def test_summary_peak_rss_is_the_largest_over_runs() -> None:
    s = run.Summary("plain", "squid", [result("squid", 10, 1, 30 * 1024), result("squid", 10, 1, 40 * 1024, index=1)])
    assert s.peak_rss_mib == pytest.approx(40.0)
    assert "| 40 " in run.render_table([s])


def test_every_proxy_is_compared_with_bare_mitmdump() -> None:
    tck = run.CLK_TCK
    summaries = [
        run.Summary("plain", "egressproxy", [result("egressproxy", 2000, tck, 100 * 1024, p99=20.0)]),
        run.Summary("plain", "mitmdump", [result("mitmdump", 1000, tck, 50 * 1024)]),
        run.Summary("plain", "squid", [result("squid", 4000, tck // 2, 25 * 1024, p99=5.0)]),
        run.Summary("intercept", "egressproxy", [result("egressproxy", 500, tck, 100 * 1024, scenario="intercept")]),
        run.Summary("intercept", "mitmdump", [result("mitmdump", 1000, tck, 50 * 1024, scenario="intercept")]),
    ]
    rows = run.baseline_ratio_rows(summaries, ["egressproxy", "mitmdump", "squid"])
    assert [(r["scenario"], r["proxy"]) for r in rows] == [("plain", "egressproxy"), ("plain", "squid"),
                                                            ("intercept", "egressproxy")]
    assert all(r["baseline"] == "mitmdump" for r in rows)
    ep, sq, ep_i = rows
    assert ep["rps"] == pytest.approx(2.0) and ep["cpu_per_request"] == pytest.approx(0.5)
    assert ep["peak_rss"] == pytest.approx(2.0) and ep["p99"] == pytest.approx(2.0)
    assert sq["rps"] == pytest.approx(4.0) and sq["cpu_per_request"] == pytest.approx(0.125)
    assert sq["peak_rss"] == pytest.approx(0.5)
    assert ep_i["rps"] == pytest.approx(0.5) and ep_i["cpu_per_request"] == pytest.approx(2.0)
    table = run.render_ratios(rows)
    assert "| plain     | squid       | 4.00x" in table
    assert "CPU/req ratio" in table and "peak RSS ratio" in table


def test_no_ratio_without_the_baseline() -> None:
    summaries = [run.Summary("plain", "squid", [result("squid", 10, 1, 1)])]
    assert run.baseline_ratio_rows(summaries, ["squid"]) == []


def test_unknown_proxy_is_refused_and_the_new_ones_are_accepted() -> None:
    args = run.parse_args(["--proxies", "egressproxy,mitmdump,squid,egressproxy-full,egressproxy-w2"])
    assert args.proxy_list == ["egressproxy", "mitmdump", "squid", "egressproxy-full", "egressproxy-w2"]
    with pytest.raises(SystemExit):
        run.parse_args(["--proxies", "nginx"])


def test_squid_missing_is_a_skip_with_the_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run, "find_squid", lambda: None)
    with pytest.raises(run.ProxyUnavailable, match="apt-get install -y squid-openssl"):
        run.start_squid(tmp_path, None)  # type: ignore[arg-type]
    assert run.LIVE == []


def test_w2_runs_two_workers_and_the_others_the_default() -> None:
    assert run.gateway_workers("egressproxy-w2") == 2
    assert run.gateway_workers("egressproxy") == run.GATEWAY_WORKERS == 1


def test_full_policy_missing_is_a_skip_naming_the_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "full_policy", None)  # import full_policy -> ImportError
    with pytest.raises(run.ProxyUnavailable, match="loadtest/full_policy.py"):
        run.full_policy_config(tmp_path, None, tmp_path)  # type: ignore[arg-type]


def test_squid_version_names_the_installed_one_or_says_it_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    if run.find_squid() is not None:
        assert run.squid_version().startswith("squid ") and run.squid_version()[6].isdigit()
    monkeypatch.setattr(run, "find_squid", lambda: None)
    assert run.squid_version() == "squid not installed"

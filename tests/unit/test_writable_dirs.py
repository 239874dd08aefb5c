"""A data dir the gateway cannot write sends its working files to one private folder instead of stopping it."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from egressproxy import writable_dirs


def test_a_writable_folder_is_used_as_it_is(tmp_path: Path) -> None:
    assert writable_dirs.writable_or_private(tmp_path / "mitmproxy") == tmp_path / "mitmproxy"
    assert list((tmp_path / "mitmproxy").iterdir()) == []  # the write probe leaves nothing behind


def test_an_unwritable_folder_falls_back_to_a_private_one_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a file where a folder should be: no one can write under it, root included")
    with caplog.at_level(logging.WARNING, "egressproxy"):
        found = writable_dirs.writable_or_private(blocker / "mitmproxy")
    assert found == writable_dirs.private_dir() / "mitmproxy" and found.is_dir()
    assert stat.S_IMODE(writable_dirs.private_dir().stat().st_mode) == 0o700
    assert [r.getMessage().startswith(f"cannot write under {blocker / 'mitmproxy'}") for r in caplog.records] == [True]

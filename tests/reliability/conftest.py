"""The reliability and security suite: every test under this folder carries the `reliability` marker.

`pytest -m reliability` runs the suite alone; the minutes-long tests in it are also marked `slow`, which
`scripts/test` leaves out of its default pass and `.ci/run` runs after it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.reliability)

"""`egressproxy captures`: reading the embedded capture store.

The capture store (request/response bodies recorded while streaming) is part of the observability work that
has not landed yet; until it does this command says so plainly and exits 2, instead of printing an empty list
that would read as "nothing was captured".
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO


def captures(args: argparse.Namespace, out: TextIO) -> int:
    store = Path(args.data_dir) / "captures.sqlite3"
    if not store.exists():
        out.write(
            f"error: no capture store at {store}: this build of egressproxy does not record captures yet "
            "(request/response capture is a later feature)\n"
        )
        return 2
    out.write(f"error: {store} exists but this build cannot read it\n")
    return 2

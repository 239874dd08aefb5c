"""The fenced code blocks of the docs pages, with the marker before each: the copy-paste commands tests run.

A block a test runs is preceded by `<!-- tested: tests/PATH.py#ID -->`; the test reads it with
`doc_block(page, "ID")`, so the page and the test cannot drift apart. A shell block no test runs says why:
`<!-- illustrative: REASON -->`. tests/unit/test_doc_blocks.py checks every shell block has one of the two and
every `tested` marker names a test that reads its ID.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DOCS", "SHELL_LANGS", "Block", "blocks", "doc_block"]

DOCS = Path(__file__).resolve().parents[2] / "docs"
SHELL_LANGS = frozenset({"sh", "bash", "shell", "console", "zsh"})
_MARKER = re.compile(r"<!--\s*(tested|illustrative):\s*(.*?)\s*-->")


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    lang: str
    text: str  # the lines between the fences, newline-terminated
    kind: str | None  # "tested" | "illustrative" | None (no marker)
    detail: str  # "tests/PATH.py#ID" or the reason

    @property
    def test_file(self) -> str:
        return self.detail.partition("#")[0]

    @property
    def block_id(self) -> str:
        return self.detail.partition("#")[2]


def blocks(page: str) -> list[Block]:
    """Every fenced block of docs/`page`, with the marker on the nearest non-blank line above its fence."""
    lines = (DOCS / page).read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        if not line.startswith("```"):
            i += 1
            continue
        lang = line[3:].strip()
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        above = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        found = _MARKER.fullmatch(above.strip())
        kind, detail = (found.group(1), found.group(2)) if found else (None, "")
        out.append(Block(page, i + 1, lang, "".join(f"{x}\n" for x in lines[i + 1 : end]), kind, detail))
        i = end + 1
    return out


def doc_block(page: str, block_id: str) -> str:
    """The text of the block on docs/`page` marked `tested: ...#block_id` (exactly one)."""
    found = [b for b in blocks(page) if b.kind == "tested" and b.block_id == block_id]
    assert len(found) == 1, f"docs/{page}: {len(found)} blocks marked tested with #{block_id}"
    return found[0].text

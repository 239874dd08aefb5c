"""The pages for each way in (docs/clients.md, transparent-mode.md, deployment.md, mitmweb.md): every shell block
is either run by a test, which reads it from the page, or marked illustrative with a reason, so no untested
command is added silently (tests/support/doc_blocks.py describes the markers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.doc_blocks import SHELL_LANGS, Block, blocks

REPO = Path(__file__).resolve().parents[2]
PAGES = ("clients.md", "transparent-mode.md", "deployment.md", "mitmweb.md")


def _all() -> list[Block]:
    return [b for page in PAGES for b in blocks(page)]


@pytest.mark.parametrize("page", PAGES)
def test_every_block_names_its_language(page: str) -> None:
    """A fence without a language could hide a shell block from the check below (output: `text`)."""
    unnamed = [f"docs/{b.page}:{b.line}" for b in blocks(page) if not b.lang]
    assert not unnamed, f"fenced blocks without a language: {unnamed}"


@pytest.mark.parametrize("page", PAGES)
def test_every_shell_block_is_tested_or_illustrative(page: str) -> None:
    unmarked = [f"docs/{b.page}:{b.line}" for b in blocks(page) if b.lang in SHELL_LANGS and b.kind is None]
    assert not unmarked, (
        f"shell blocks with neither `<!-- tested: tests/PATH.py#ID -->` nor `<!-- illustrative: REASON -->` "
        f"on the line above: {unmarked}"
    )


def test_illustrative_blocks_give_a_reason() -> None:
    vague = [f"docs/{b.page}:{b.line}" for b in _all() if b.kind == "illustrative" and len(b.detail.split()) < 4]
    assert not vague, vague


def test_each_tested_block_is_read_by_the_test_it_names() -> None:
    """The named file exists and reads the block by its ID (`doc_block(page, "ID")`, or a `doc("ID")` helper)."""
    seen: set[tuple[str, str]] = set()
    for b in (b for b in _all() if b.kind == "tested"):
        where = f"docs/{b.page}:{b.line}"
        assert b.block_id, f"{where}: `tested:` needs tests/PATH.py#ID"
        assert (b.page, b.block_id) not in seen, f"{where}: #{b.block_id} twice on the page"
        seen.add((b.page, b.block_id))
        test = REPO / b.test_file
        assert test.is_file(), f"{where}: {b.test_file} does not exist"
        source = test.read_text()
        assert f'"{b.page}"' in source and "doc_block(" in source, f"{where}: {b.test_file} does not read docs/{b.page}"
        assert f'"{b.block_id}"' in source or f"'{b.block_id}'" in source, f"{where}: {b.test_file} never reads #{b.block_id}"


def test_the_markers_are_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The parser itself: a marker counts on the nearest non-blank line above the fence, and only there."""
    import tests.support.doc_blocks as doc_blocks

    (tmp_path / "p.md").write_text(
        "<!-- tested: tests/x.py#one -->\n\n```sh\necho 1\n```\n\ntext\n\n```sh\necho 2\n```\n"
        "<!-- illustrative: needs a real cluster here -->\n```bash\nkubectl get pods\n```\n"
    )
    monkeypatch.setattr(doc_blocks, "DOCS", tmp_path)
    found = blocks("p.md")
    assert [(b.kind, b.detail, b.text) for b in found] == [
        ("tested", "tests/x.py#one", "echo 1\n"),
        (None, "", "echo 2\n"),
        ("illustrative", "needs a real cluster here", "kubectl get pods\n"),
    ]
    assert doc_blocks.doc_block("p.md", "one") == "echo 1\n"

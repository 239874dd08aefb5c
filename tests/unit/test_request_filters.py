"""HTTPRoute filters as pure edits: header modifiers and URLRewrite paths."""

from __future__ import annotations

import pytest
from mitmproxy.http import Headers

from egressproxy.request_filters import apply_header_modifier, rewrite_path
from egressproxy.snapshot import HeaderModifier, HttpRouteMatch, PathMatch, PathRewrite, URLRewrite


def test_header_modifier_removes_then_sets_then_adds_case_insensitively() -> None:
    headers = Headers(**{"X-Old": "1", "x-keep": "k", "X-Multi": "a"})
    apply_header_modifier(headers, HeaderModifier(set=(("x-multi", "b"),), add=(("x-keep", "k2"),), remove=("x-old",)))
    assert "x-old" not in headers
    assert headers.get_all("x-multi") == ["b"]
    assert headers.get_all("x-keep") == ["k", "k2"]


@pytest.mark.parametrize(
    "path,rewrite,prefix,expected",
    [
        ("/v1/chat?x=1", PathRewrite("ReplaceFullPath", "/api"), "/v1", "/api?x=1"),
        ("/v1/chat", PathRewrite("ReplacePrefixMatch", "/openai/v1"), "/v1", "/openai/v1/chat"),
        ("/v1", PathRewrite("ReplacePrefixMatch", "/openai/"), "/v1", "/openai"),
        ("/v1/chat", PathRewrite("ReplacePrefixMatch", "/"), "/v1", "/chat"),
        ("/chat?q", PathRewrite("ReplacePrefixMatch", "/x"), "", "/x/chat?q"),
    ],
)
def test_url_rewrite_paths(path: str, rewrite: PathRewrite, prefix: str, expected: str) -> None:
    match = HttpRouteMatch(path=PathMatch("PathPrefix", prefix))
    assert rewrite_path(path, URLRewrite(path=rewrite), match) == expected


def test_no_rewrite_leaves_the_path_alone() -> None:
    assert rewrite_path("/a?b", None, None) == "/a?b"
    assert rewrite_path("/a?b", URLRewrite(hostname="h"), None) == "/a?b"

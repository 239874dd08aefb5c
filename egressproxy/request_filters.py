"""Gateway API HTTPRoute filters as pure edits of header lists and paths (no mitmproxy types)."""

from __future__ import annotations

from collections.abc import MutableMapping

from egressproxy.snapshot import HeaderModifier, HttpRouteMatch, URLRewrite

__all__ = ["apply_header_modifier", "rewrite_path"]


def apply_header_modifier(headers: MutableMapping[str, str], modifier: HeaderModifier | None) -> None:
    """set replaces every value of a header, add appends one, remove drops them (names case-insensitive).

    `headers` is a mitmproxy `Headers` (or any mapping with `add`/`set_all` when present).
    """
    if modifier is None:
        return
    for name in modifier.remove:
        headers.pop(name, None)
    for name, value in modifier.set:
        headers[name] = value
    for name, value in modifier.add:
        add = getattr(headers, "add", None)
        if add is not None:
            add(name, value)
        elif name in headers:
            headers[name] = f"{headers[name]},{value}"
        else:
            headers[name] = value


def rewrite_path(path: str, rewrite: URLRewrite | None, match: HttpRouteMatch | None) -> str:
    """URLRewrite's path: ReplaceFullPath, or ReplacePrefixMatch of the PathPrefix that matched (query kept)."""
    if rewrite is None or rewrite.path is None:
        return path
    base, sep, query = path.partition("?")
    if rewrite.path.type == "ReplaceFullPath":
        new = rewrite.path.value or "/"
    else:
        prefix = match.path.value if match is not None and match.path.type == "PathPrefix" else ""
        rest = base[len(prefix) :] if base.startswith(prefix) else base
        replacement = rewrite.path.value.rstrip("/")
        new = (replacement + rest) if rest.startswith("/") or not rest else f"{replacement}/{rest}"
        new = new or "/"
    return new + (sep + query if sep else "")

"""Everything that touches mitmproxy's internals beyond its addon API lives in this package, and only here."""

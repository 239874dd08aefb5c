"""egressproxy: an egress gateway data plane on mitmproxy."""

__version__ = "0.1.0"

"""mitmproxy addons of the egress gateway: one concern each, thin, talking only through the flow record."""

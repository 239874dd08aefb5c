"""Writing a finished flow's decision trace where mitmweb shows it: the comment, the marker, the metadata.

Called once per flow, when it ends (addons/flow_metrics.py; an opened tunnel from addons/connect_gate.py), so
the hot path never builds text: addons only append typed `Check`s to the record while deciding.
"""

from __future__ import annotations

from mitmproxy import http

from egressproxy.decision_trace import TRACE_KEY, Ending, render, trace_data
from egressproxy.flowrecord import Check, ConnectionRecord, FlowRecord, Verdict

__all__ = ["DENIED_MARKER", "ERROR_MARKER", "annotate", "note"]

DENIED_MARKER = ":no_entry:"  # mitmweb shows ⛔; `~marker no_entry` selects denied flows
ERROR_MARKER = ":warning:"  # mitmweb shows ⚠️; `~marker warning` selects gateway errors


def note(record: FlowRecord, *checks: Check) -> None:
    """Add steps to the record's trace (a thin helper so addons never touch the comment)."""
    record.checks.extend(checks)


def annotate(flow: http.HTTPFlow, record: FlowRecord, connection: ConnectionRecord | None, captured: bool = False) -> None:
    """The trace as the flow's comment and metadata; denied flows and gateway errors marked."""
    ending = _ending(flow, record, connection, captured)
    flow.comment = render(record, ending)
    flow.metadata[TRACE_KEY] = trace_data(record, ending)
    if record.error:
        flow.marked = ERROR_MARKER
    elif record.verdict is not None and not record.verdict.allowed:
        flow.marked = DENIED_MARKER


def _ending(flow: http.HTTPFlow, record: FlowRecord, connection: ConnectionRecord | None, captured: bool) -> Ending:
    response = flow.response
    server = flow.server_conn
    dialled = None
    if server is not None and server.timestamp_start and isinstance(server.peername, tuple):
        host, port = server.peername[0], server.peername[1]
        dialled = f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    refused = None
    if connection is not None and record.host is not None and record.port is not None:
        # The dial guard keys what it refused by the candidate it dialled (a Static Backend's host, not the asked one).
        key = record.upstream.key if record.upstream is not None else (record.host, record.port)
        outcome = connection.dial_outcomes.get(key)
        if isinstance(outcome, Verdict):
            refused = outcome.reason + (f" by {outcome.policy}" if outcome.policy else "")
        elif outcome is not None:
            refused = outcome.reason
    if dialled is None and connection is not None and record.host is not None and record.port is not None:
        pinned = connection.pinned_addresses.get((record.host, record.port))  # a tunnel checked before its dial
        dialled = f"{pinned}:{record.port} (pinned)" if pinned else None
    return Ending(
        status=response.status_code if response is not None else None,
        dialled=dialled,
        refused_dial=refused,
        captured=captured,
        via_hop=record.hop is not None,
    )

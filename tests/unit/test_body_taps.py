"""The body-taps addon: streamed responses go through the chain chunk by chunk, others whole; copies land in the record."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from mitmproxy.test import tflow

from addons.body_taps import BodyTaps
from egressproxy.engine.answers import flow_record
from egressproxy.flowrecord import BodyCopy
from egressproxy.runtime.state import GatewayState
from egressproxy.taps import TapChain


def addon(tmp_path: Path, max_bytes: int = 4, content_types: tuple[str, ...] = ("",)) -> BodyTaps:
    """Only captureBody's `maxBytes` and `includeContentTypes` are read; the prefix "" keeps every type."""
    state = GatewayState(tmp_path)
    gateway = SimpleNamespace(capture_max_bytes=max_bytes, capture_content_types=content_types)
    state.snapshot = SimpleNamespace(gateway=gateway)  # type: ignore[assignment]
    return BodyTaps(state)


def test_a_streaming_response_gets_the_chain_and_its_copy_lands_in_the_record(tmp_path: Path) -> None:
    taps = addon(tmp_path)
    flow = tflow.tflow(resp=True)
    assert flow.response is not None
    flow.response.stream = True  # what the routing addon sets: never buffer a whole response
    taps.responseheaders(flow)
    chain = flow.response.stream
    assert isinstance(chain, TapChain)
    assert chain(b"data: 1\n\n") == b"data: 1\n\n"  # the client gets each event as it comes
    assert chain(b"") == b""
    taps.response(flow)
    assert flow_record(flow).response_body == BodyCopy(b"data", 9, True)
    assert taps.response_copies == {}


def test_a_buffered_response_passes_once_whole(tmp_path: Path) -> None:
    taps = addon(tmp_path, max_bytes=1000)
    flow = tflow.tflow(resp=True)
    assert flow.response is not None
    flow.response.stream = False  # e.g. a gateway answer, or a response another addon chose to buffer
    taps.responseheaders(flow)
    assert flow.response.stream is False
    body = flow.response.raw_content
    taps.response(flow)
    assert flow.response.raw_content == body
    assert body
    assert flow_record(flow).response_body == BodyCopy(body, len(body), False)


def test_a_request_body_is_copied_in_the_request_hook(tmp_path: Path) -> None:
    """Request bodies stay buffered (policies on the request hook need all of it) and pass the chain once."""
    taps = addon(tmp_path)
    flow = tflow.tflow()
    flow.request.raw_content = b'{"prompt": "hi"}'
    taps.request(flow)
    assert flow.request.raw_content == b'{"prompt": "hi"}'
    assert flow_record(flow).request_body == BodyCopy(b'{"pr', 16, True)


def test_an_aborted_stream_keeps_what_passed(tmp_path: Path) -> None:
    taps = addon(tmp_path)
    flow = tflow.tflow(resp=True)
    assert flow.response is not None
    flow.response.stream = True
    taps.responseheaders(flow)
    chain = flow.response.stream
    assert isinstance(chain, TapChain)
    chain(b"partial")
    taps.error(flow)
    assert flow_record(flow).response_body == BodyCopy(b"part", 7, True)


def test_bodies_that_were_streamed_past_the_gateway_are_not_copied(tmp_path: Path) -> None:
    """A body a host tool chose to stream (raw_content None) has nothing buffered: no copy, nothing changed."""
    taps = addon(tmp_path)
    flow = tflow.tflow(resp=True)
    assert flow.response is not None
    flow.request.stream = True
    flow.request.raw_content = None
    flow.response.raw_content = None
    taps.request(flow)
    taps.response(flow)
    record = flow_record(flow)
    assert (record.request_body, record.response_body) == (None, None)


def test_without_a_configuration_nothing_is_captured_but_bodies_pass(tmp_path: Path) -> None:
    taps = BodyTaps(GatewayState(tmp_path))
    flow = tflow.tflow(resp=True)
    flow.request.raw_content = b"payload"
    taps.request(flow)
    assert flow.request.raw_content == b"payload"
    assert flow_record(flow).request_body == BodyCopy(b"", 7, True)


def _streamed(taps: BodyTaps, content_type: str, chunks: list[bytes]) -> BodyCopy | None:
    flow = tflow.tflow(resp=True)
    assert flow.response is not None
    flow.response.headers["content-type"] = content_type
    flow.response.stream = True
    taps.responseheaders(flow)
    chain = flow.response.stream
    assert isinstance(chain, TapChain)
    for chunk in chunks:
        assert chain(chunk) == chunk
    chain(b"")
    taps.response(flow)
    return flow_record(flow).response_body


def test_a_stream_of_a_type_capture_never_keeps_is_counted_but_not_copied(tmp_path: Path) -> None:
    """An SSE stream (or a download) that capture would drop carries no copy while it is open, only its size."""
    taps = addon(tmp_path, max_bytes=65536, content_types=("application/json",))
    copy = _streamed(taps, "text/event-stream", [b"data: 1\n\n", b"data: 2\n\n"])
    assert copy is not None and copy.size == 18 and copy.data == b""
    none_configured = addon(tmp_path, max_bytes=65536, content_types=())  # includeContentTypes: [] keeps none
    copy = _streamed(none_configured, "application/json", [b"{}"])
    assert copy is not None and copy.size == 2 and copy.data == b""


def test_a_stream_of_an_included_type_is_copied_whatever_the_case_and_parameters(tmp_path: Path) -> None:
    taps = addon(tmp_path, max_bytes=65536, content_types=("Application/JSON",))
    copy = _streamed(taps, "application/json; charset=utf-8", [b'{"a":', b"1}"])
    assert copy == BodyCopy(b'{"a":1}', 7, False)


def test_a_buffered_response_of_a_type_capture_never_keeps_is_not_copied(tmp_path: Path) -> None:
    taps = addon(tmp_path, max_bytes=1000, content_types=("application/json",))
    flow = tflow.tflow(resp=True)
    assert flow.response is not None
    flow.response.headers["content-type"] = "application/octet-stream"
    flow.response.stream = False
    taps.responseheaders(flow)
    body = flow.response.raw_content
    taps.response(flow)
    assert body and flow_record(flow).response_body == BodyCopy(b"", len(body), True)

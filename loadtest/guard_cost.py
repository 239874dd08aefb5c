"""The CPU cost of TrafficPolicy `ai` per request, in microseconds, measured in process (no sockets).

    .venv/bin/python loadtest/guard_cost.py [--iterations 2000] [--json]

What it times, each as the data plane runs it (egressproxy/request_guard.py, egressproxy/stream_masking.py):
- `request REJECT` / `request MASK`: one chat request body (a system prompt and six turns, about 2.4 KB, one
  e-mail address in it) through `guard_request` with all five builtins and one custom pattern: JSON parse,
  every detector over every message text, and for MASK the re-serialised body;
- `request enrich+defaults`: the same body, enrichment and two defaults only;
- `response SSE MASK`: a 201-event OpenAI stream (about 4,600 characters of text, one card number split over
  two events) through `SseGuardTap`, reported per event and per stream;
- `response JSON MASK`: the same text as one JSON completion.
Numbers are the median of 5 rounds of `--iterations` runs each; one core, this machine's noise included.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from egressproxy.pii_detectors import builtin, custom  # noqa: E402
from egressproxy.prompt_guard import AiPolicy, Enrichment, FieldDefault, RegexGuard, RequestGuard  # noqa: E402
from egressproxy.request_guard import guard_request  # noqa: E402
from egressproxy.stream_masking import SseGuardTap, guard_json_response  # noqa: E402

BUILTINS = ("CreditCard", "Email", "PhoneNumber", "Ssn", "CaSin")
POLICY = "TrafficPolicy/bench/guard"
TURN = "Please summarise the quarterly figures for the northern region and list the three largest accounts. "


def detectors():  # type: ignore[no-untyped-def]
    return (*(builtin(b) for b in BUILTINS), custom(r"PRJ-\d{5}", "project code"))


def request_body() -> bytes:
    messages = [{"role": "system", "content": "You are a careful analyst. " * 8}]
    for i in range(6):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": TURN * 3})
    messages[-1]["content"] += " Send it to jane.doe@example.com."
    return json.dumps({"model": "gpt-4o-mini", "messages": messages}).encode()


def sse_events() -> list[bytes]:
    words = ("The account 4111 1111", " 1111 1111 was charged. ", *(["All figures are final. "] * 198))
    out = []
    for text in words:
        obj = {"id": "c", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
        out.append(b"data: " + json.dumps(obj).encode() + b"\n\n")
    out.append(b'data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n')
    return out


def timed(run: Callable[[], object], iterations: int) -> float:
    """Median microseconds per call over 5 rounds."""
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(iterations):
            run()
        rounds.append((time.perf_counter() - start) / iterations * 1e6)
    return statistics.median(rounds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    body = request_body()
    reject = AiPolicy(request=RequestGuard(RegexGuard("REJECT", detectors(), POLICY)))
    mask = AiPolicy(request=RequestGuard(RegexGuard("MASK", detectors(), POLICY)))
    enrich = AiPolicy(enrichment=Enrichment((("system", "Be brief."),), (("user", "Thanks."),)),
                      defaults=(FieldDefault(("temperature",), 0.2), FieldDefault(("max_tokens",), 512, True)))
    response = RegexGuard("MASK", (builtin("CreditCard"), builtin("Email")), POLICY)
    events = sse_events()
    text = "".join(json.loads(e[6:])["choices"][0]["delta"].get("content", "") for e in events)
    completion = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()

    def stream() -> None:
        tap = SseGuardTap(response)
        for event in events:
            tap.chunk(event)
        tap.end()

    few = max(1, args.iterations // 20)
    per_stream = timed(stream, few)
    results = {
        "request REJECT (5 builtins + 1 custom)": timed(lambda: guard_request(reject, "/v1/chat/completions", body), args.iterations),
        "request MASK (5 builtins + 1 custom)": timed(lambda: guard_request(mask, "/v1/chat/completions", body), args.iterations),
        "request enrich+defaults": timed(lambda: guard_request(enrich, "/v1/chat/completions", body), args.iterations),
        "response JSON MASK (2 builtins)": timed(lambda: guard_json_response(response, completion), args.iterations),
        f"response SSE MASK per event ({len(events)} events)": per_stream / len(events),
        "response SSE MASK per stream": per_stream,
    }
    if args.json:
        print(json.dumps({"bodyBytes": len(body), "microseconds": results}, indent=2))
    else:
        print(f"request body {len(body)} bytes; streamed answer {len(text)} characters in {len(events)} events")
        for name, us in results.items():
            print(f"{name:48s} {us:10.1f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Micro-benchmark: the HTTP/1.1 parser engines, h11 (reference) against llhttp (httptools).

*Request heads*: ``parse_request_head`` of ``H11Heads`` and ``LlhttpHeads`` on the two requests
of ``http1_adapter`` (``wrk``'s GET and a browser GET with eight fields), then the same plus
``inspect_request``, which ``Http1Server`` runs after either engine. *Upstream responses*: one
request/response cycle of ``Http1Client`` and ``LlhttpClient`` (``send`` of the forwarded GET,
``receive`` of NGINX's 42-byte response in one read, ``start_next_cycle``), the same with a
chunked 4-chunk response, and the llhttp response-head parse alone.

Each case is checked once before timing (both engines must give the same result). Reports
microseconds per operation, the median over rounds and the best round, and the speed-up of
llhttp over h11 per case. ``python -m bench.micro.http1_engines [--quick]`` runs it alone.
"""

from __future__ import annotations

import statistics
import sys
from typing import TYPE_CHECKING, Final, cast

from a3s_gateway.protocols.events import EndOfBody
from a3s_gateway.protocols.http1 import Http1Client
from a3s_gateway.protocols.http1_heads import H11Heads, LlhttpHeads, RequestHeadParser
from a3s_gateway.protocols.http1_llhttp import LlhttpClient
from a3s_gateway.protocols.http1_request import inspect_request
from a3s_gateway.protocols.http1_response_heads import parse_response_head
from bench.micro.accesslog_bench import us_per_op
from bench.micro.http1_adapter import BROWSER_GET, UPSTREAM_REQUEST, UPSTREAM_RESPONSE, WRK_GET

if TYPE_CHECKING:
    from collections.abc import Callable

    import h11

CHUNKED_RESPONSE: Final = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: nginx/1.22.1\r\n"
    b"Date: Wed, 02 Dec 2026 13:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"\r\n" + b"a\r\n0123456789\r\n" * 4 + b"0\r\n\r\n"
)
_END: Final = EndOfBody()


def head_parse(engine: RequestHeadParser, head: bytes, inspect: bool) -> Callable[[], None]:
    """One ``parse_request_head`` (and ``inspect_request``) of ``head``."""
    parse = engine.parse_request_head

    def op() -> None:
        parsed = parse(head)
        if inspect:
            inspect_request(cast("h11.Request", parsed), list(parsed.headers), 100)

    return op


def client_cycle(
    new: type[Http1Client] | type[LlhttpClient], response: bytes
) -> Callable[[], None]:
    """One request/response cycle on a long-lived upstream client."""
    client = new()

    def op() -> None:
        client.send(UPSTREAM_REQUEST)
        client.send(_END)
        client.receive(response)
        client.start_next_cycle()

    return op


def response_head() -> Callable[[], None]:
    head = UPSTREAM_RESPONSE[: UPSTREAM_RESPONSE.index(b"\r\n\r\n") + 4]

    def op() -> None:
        parse_response_head(head)

    return op


def verify() -> None:
    """Both engines agree on every benchmarked input; raise if not."""
    for head in (WRK_GET, BROWSER_GET):
        if H11Heads().parse_request_head(head) != LlhttpHeads().parse_request_head(head):
            raise AssertionError(f"the engines disagree on {head!r}")
    for response in (UPSTREAM_RESPONSE, CHUNKED_RESPONSE):
        got = []
        for new in (Http1Client, LlhttpClient):
            client = new()
            client.send(UPSTREAM_REQUEST)
            client.send(_END)
            got.append(client.receive(response))
            if not client.reusable:
                raise AssertionError(f"{new.__name__} cannot reuse after {response!r}")
        if got[0] != got[1]:
            raise AssertionError(f"the clients disagree on {response!r}: {got}")


def cases() -> dict[str, tuple[Callable[[], None] | None, Callable[[], None]]]:
    """Case name → (h11 operation or None for an llhttp-only case, llhttp operation)."""
    h11_heads, llhttp_heads = H11Heads(), LlhttpHeads()
    return {
        "request head: wrk GET (1 field)": (
            head_parse(h11_heads, WRK_GET, False),
            head_parse(llhttp_heads, WRK_GET, False),
        ),
        "request head: browser GET (8 fields)": (
            head_parse(h11_heads, BROWSER_GET, False),
            head_parse(llhttp_heads, BROWSER_GET, False),
        ),
        "request head + inspect_request: browser GET": (
            head_parse(h11_heads, BROWSER_GET, True),
            head_parse(llhttp_heads, BROWSER_GET, True),
        ),
        "client cycle: forwarded GET + 42 B response": (
            client_cycle(Http1Client, UPSTREAM_RESPONSE),
            client_cycle(LlhttpClient, UPSTREAM_RESPONSE),
        ),
        "client cycle: forwarded GET + chunked (4 chunks)": (
            client_cycle(Http1Client, CHUNKED_RESPONSE),
            client_cycle(LlhttpClient, CHUNKED_RESPONSE),
        ),
        "response head alone (llhttp, 5 fields)": (None, response_head()),
    }


def run(*, quick: bool = False) -> list[dict[str, object]]:
    """One row per case: µs per operation for h11 and llhttp, and the speed-up."""
    verify()
    rounds, ops = (3, 3_000) if quick else (7, 20_000)
    rows: list[dict[str, object]] = []
    for name, (reference, fast) in cases().items():
        slow = us_per_op(reference, rounds, ops) if reference is not None else None
        quick_samples = us_per_op(fast, rounds, ops)
        row: dict[str, object] = {"case": name, "rounds": rounds, "ops_per_round": ops}
        if slow is not None:
            row["h11_us"] = round(statistics.median(slow), 2)
            row["h11_best"] = round(min(slow), 2)
        row["llhttp_us"] = round(statistics.median(quick_samples), 2)
        row["llhttp_best"] = round(min(quick_samples), 2)
        if slow is not None:
            row["speedup"] = round(min(slow) / min(quick_samples), 1)
        rows.append(row)
    return rows


COLUMNS: Final = ["case", "h11_us", "h11_best", "llhttp_us", "llhttp_best", "speedup"]


def main(argv: list[str] | None = None) -> None:
    quick = "--quick" in (sys.argv[1:] if argv is None else argv)
    rows = run(quick=quick)
    widths = [max(len(c), *(len(str(row.get(c, ""))) for row in rows)) for c in COLUMNS]
    print("  ".join(c.rjust(w) for c, w in zip(COLUMNS, widths, strict=True)))
    for row in rows:
        print("  ".join(str(row.get(c, "")).rjust(w) for c, w in zip(COLUMNS, widths, strict=True)))


if __name__ == "__main__":
    main()

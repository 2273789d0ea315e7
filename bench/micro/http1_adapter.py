"""Micro-benchmark: the HTTP/1.1 sans-IO adapters' cost per keep-alive request cycle, no sockets.

*Server side* (``Http1Server``, the downstream connection): the bytes of a keep-alive GET go in
(``receive``), the response comes out (``send`` of the head, a 42-byte body chunk and the end),
then ``start_next_cycle``, the calls ``server/http1_driver.py`` makes per request. Two requests:
``wrk``'s (a request line and ``Host``: what the HTTP benchmark sends) and a browser-like GET
with eight header fields. The response head is what the gateway relays from NGINX (``server``,
``date``, ``content-type``, ``content-length``) plus ``via``.

*Client side* (``Http1Client``, the upstream connection): ``send`` of the forwarded request head
(the client's fields plus the ``X-Forwarded-*``, ``X-Real-IP`` and ``Via`` fields the gateway
adds), ``receive`` of NGINX's 42-byte response in one read, then ``start_next_cycle``.

Each cycle's events are checked once before timing, so an error path is never what gets timed.
Reports microseconds per cycle, the median over rounds and the best round (on a shared machine
the best is the steadier figure); ``server + client`` is the adapters' share of one proxied
request (routing, header rewriting and IO are not included).
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING, Final

from a3s_gateway.protocols.events import BodyChunk, EndOfBody, RequestHead, ResponseHead
from a3s_gateway.protocols.http1 import Http1Client, Http1Server

if TYPE_CHECKING:
    from collections.abc import Callable

BODY: Final = b"a3s bench upstream: a 42-byte body, hello\n"
WRK_GET: Final = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
BROWSER_GET: Final = (
    b"GET /api/items?page=2 HTTP/1.1\r\n"
    b"Host: api.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    b"Accept: application/json, text/plain, */*\r\n"
    b"Accept-Language: en-GB,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Referer: https://app.example.com/items\r\n"
    b"Cookie: session=6f1c2a9b3d4e5f60718293a4b5c6d7e8; theme=dark\r\n"
    b"Connection: keep-alive\r\n"
    b"\r\n"
)
RESPONSE_HEAD: Final = ResponseHead(
    200,
    [
        (b"server", b"nginx/1.22.1"),
        (b"date", b"Wed, 02 Dec 2026 13:00:00 GMT"),
        (b"content-type", b"text/plain"),
        (b"content-length", b"42"),
        (b"via", b"1.1 a3s-gateway"),
    ],
    b"OK",
)
UPSTREAM_REQUEST: Final = RequestHead(
    b"GET",
    b"/api/items?page=2",
    b"api.example.com",
    [
        (b"host", b"api.example.com"),
        (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
        (b"accept", b"application/json, text/plain, */*"),
        (b"x-forwarded-for", b"127.0.0.1"),
        (b"x-forwarded-proto", b"http"),
        (b"x-forwarded-host", b"api.example.com"),
        (b"x-forwarded-port", b"8080"),
        (b"x-real-ip", b"127.0.0.1"),
        (b"via", b"1.1 a3s-gateway"),
    ],
)
UPSTREAM_RESPONSE: Final = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: nginx/1.22.1\r\n"
    b"Date: Wed, 02 Dec 2026 13:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: 42\r\n"
    b"Connection: keep-alive\r\n"
    b"\r\n" + BODY
)
_CHUNK: Final = BodyChunk(BODY)
_END: Final = EndOfBody()


def server_cycle(request: bytes) -> Callable[[], None]:
    """One keep-alive request/response cycle on a long-lived ``Http1Server``."""
    server = Http1Server()

    def cycle() -> None:
        server.receive(request)
        server.send(RESPONSE_HEAD)
        server.send(_CHUNK)
        server.send(_END)
        server.start_next_cycle()

    return cycle


def client_cycle() -> Callable[[], None]:
    """One request/response cycle on a long-lived ``Http1Client``."""
    client = Http1Client()

    def cycle() -> None:
        client.send(UPSTREAM_REQUEST)
        client.send(_END)
        client.receive(UPSTREAM_RESPONSE)
        client.start_next_cycle()

    return cycle


def verify() -> None:
    """Run one cycle of each kind by hand and check the events and bytes; raise if wrong."""
    for request in (WRK_GET, BROWSER_GET):
        server = Http1Server()
        events = server.receive(request)
        if not (isinstance(events[0], RequestHead) and isinstance(events[-1], EndOfBody)):
            raise AssertionError(f"server parsed {events!r}")
        wire = server.send(RESPONSE_HEAD) + server.send(_CHUNK) + server.send(_END)
        if not wire.startswith(b"HTTP/1.1 200 OK\r\n") or not wire.endswith(b"\r\n\r\n" + BODY):
            raise AssertionError(f"server wrote {wire!r}")
        if not server.keep_alive or server.start_next_cycle():
            raise AssertionError("server did not come back for the next request")
    client = Http1Client()
    wire = client.send(UPSTREAM_REQUEST) + client.send(_END)
    if not wire.startswith(b"GET /api/items?page=2 HTTP/1.1\r\nhost: api.example.com\r\n"):
        raise AssertionError(f"client wrote {wire!r}")
    got = client.receive(UPSTREAM_RESPONSE)
    if [type(event) for event in got] != [ResponseHead, BodyChunk, EndOfBody]:
        raise AssertionError(f"client parsed {got!r}")
    if not client.reusable:
        raise AssertionError("upstream connection not reusable after a complete response")


def us_per_cycle(cycle: Callable[[], None], rounds: int, cycles: int) -> list[float]:
    """The mean time of one ``cycle()`` in each of ``rounds`` rounds, in microseconds."""
    for _ in range(min(cycles, 1000)):  # warm up
        cycle()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(cycles):
            cycle()
        samples.append((time.perf_counter_ns() - start) / cycles / 1000)
    return samples


def run(*, quick: bool = False) -> list[dict[str, object]]:
    """One row per measured cycle, microseconds per cycle."""
    verify()
    rounds, cycles = (3, 5_000) if quick else (7, 20_000)
    measured = {
        "server: wrk GET (1 field) + 42 B response": server_cycle(WRK_GET),
        "server: browser GET (8 fields) + 42 B response": server_cycle(BROWSER_GET),
        "client: forwarded GET (9 fields) + 42 B response": client_cycle(),
    }
    rows: list[dict[str, object]] = []
    sums = [0.0, 0.0]
    for name, cycle in measured.items():
        samples = us_per_cycle(cycle, rounds, cycles)
        median, best = statistics.median(samples), min(samples)
        if name.startswith(("server: wrk", "client")):
            sums = [sums[0] + median, sums[1] + best]
        rows.append(_row(name, rounds, cycles, median, best))
    rows.append(
        _row("server (wrk GET) + client: adapters per proxied request", rounds, cycles, *sums)
    )
    return rows


def _row(name: str, rounds: int, cycles: int, median: float, best: float) -> dict[str, object]:
    return {
        "cycle": name,
        "rounds": rounds,
        "cycles_per_round": cycles,
        "us_per_cycle": round(median, 2),
        "us_best": round(best, 2),
    }


def main() -> None:
    print(f"{'cycle':<58}{'µs/cycle':>10}{'best':>8}")
    for row in run():
        print(f"{row['cycle']!s:<58}{row['us_per_cycle']:>10.2f}{row['us_best']:>8.2f}")


if __name__ == "__main__":
    main()

"""Clients for the demo tests: ``curl`` as a subprocess and a small h11 client over a real
TCP stream (independent of the gateway's code, like the backends themselves)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import h11
import trio

CURL = "/usr/bin/curl"
#: The banner's last line when the management API is served (as it is by ``demo.hcl``): the
#: command-line tests read the demo's stdout up to it.
BANNER_END = "Access log: one JSON line per request or TCP connection, printed below.\n"


async def curl(*args: str, stdin: bytes = b"") -> str:
    """Run curl (silent, errors shown, bounded at 20 s) and return its stdout."""
    done = await trio.run_process(
        [CURL, "-sS", "--max-time", "20", *args],
        stdin=stdin,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout.decode()


async def read_until(process: trio.Process, marker: bytes) -> str:
    """The demo's stdout up to and including ``marker`` (bounded at 30 s)."""
    assert process.stdout is not None
    received = b""
    with trio.fail_after(30):
        while marker not in received:
            chunk = await process.stdout.receive_some(65536)
            assert chunk, received.decode()
            received += chunk
    return received.decode()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    #: The body as h11 delivered it, one ``Data`` event per item.
    pieces: list[bytes] = field(default_factory=list)

    def json(self) -> dict[str, object]:
        document = json.loads(self.body)
        assert isinstance(document, dict)
        return document


class H11Client:
    """One keep-alive HTTP/1.1 connection to ``127.0.0.1:port``."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.connection = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, port: int) -> H11Client:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def send(self, event: h11.Event) -> None:
        await self.stream.send_all(self.connection.send(event) or b"")

    async def next_event(self) -> h11.Event:
        while True:
            event = self.connection.next_event()
            if isinstance(event, h11.Event):
                return event
            assert event is h11.NEED_DATA, event
            self.connection.receive_data(await self.stream.receive_some(65536))

    async def start(self, method: str, target: str, body: bytes = b"") -> Reply:
        """Send a request and read the response head."""
        if self.connection.our_state is h11.DONE:
            self.connection.start_next_cycle()
        headers = [("host", "demo.test"), ("content-length", str(len(body)))]
        await self.send(h11.Request(method=method, target=target, headers=headers))
        if body:
            await self.send(h11.Data(data=body))
        await self.send(h11.EndOfMessage())
        event = await self.next_event()
        assert isinstance(event, h11.Response), event
        fields = {k.decode(): v.decode() for k, v in event.headers}
        return Reply(event.status_code, fields)

    async def next_piece(self) -> bytes | None:
        """The next piece of the response body; ``None`` at its end."""
        event = await self.next_event()
        if isinstance(event, h11.EndOfMessage):
            return None
        assert isinstance(event, h11.Data), event
        return bytes(event.data)

    async def request(self, method: str, target: str, body: bytes = b"") -> Reply:
        reply = await self.start(method, target, body)
        while (piece := await self.next_piece()) is not None:
            reply.pieces.append(piece)
        reply.body = b"".join(reply.pieces)
        return reply

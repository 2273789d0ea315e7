"""The check requests of the streaming and echo profiles: one WebSocket echo, one SSE event,
one TCP echo, one UDP echo, before any load.

wrk's profiles check each product with one HTTP/1.1 request (``runner.preflight``) and
h2load's with one HTTP/2 exchange (``h2check``); the streaming profiles need the same for what
``streamload`` does, so that a product which cannot do it is reported with the reason (its
status line, a missing header) instead of as a load run that counted nothing. Blocking sockets
with a timeout on every step:

- ``websocket``: the upgrade handshake with a fresh random key; the answer must be ``101``
  with the ``Sec-WebSocket-Accept`` of that key; then one masked binary message, whose echo
  must come back unmasked and equal; then a Close.
- ``sse``: a GET with ``Accept: text/event-stream``; the answer must be 200 with that content
  type, and its first event (read through the chunked framing) must be one of the backend's:
  ``data: <16 hex digits> <15 digits>``.
- ``tcp``: one message of the profile's size on a fresh connection; the same bytes must come
  back.
- ``udp``: one datagram from a fresh socket; the same bytes must come back within
  ``UDP_WAIT_SECONDS``, sent again (``UDP_ATTEMPTS`` in all) when they do not, since UDP may
  drop. ``udp_answers`` is the same exchange as a readiness probe: a UDP listener cannot be
  told ready by a TCP connect.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import re
import socket
from typing import Final

from bench.procs import HOST

TIMEOUT_SECONDS: Final = 10.0
HEAD_LIMIT: Final = 16384
WS_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
EVENT_LINE: Final = re.compile(rb"data: [0-9a-f]{16} [0-9]{15}\r?\n")
#: Lines read for the first event before giving up (headers of a wrong answer, comments).
EVENT_LINES: Final = 20
#: Control frames (pings, pongs) read before the echo before giving up.
CONTROL_FRAMES: Final = 20
#: UDP check: datagrams sent before giving up, and how long each waits for its echo.
UDP_ATTEMPTS: Final = 5
UDP_WAIT_SECONDS: Final = 1.0


class CheckError(Exception):
    """The exchange broke off or was not what the profile needs."""


def accept_value(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` for ``key`` (RFC 6455 §4.2.2)."""
    digest = hashlib.sha1(key.encode("ascii") + WS_GUID, usedforsecurity=False).digest()
    return base64.b64encode(digest).decode("ascii")


def client_frame(payload: bytes, mask: bytes, opcode: int = 2) -> bytes:
    """One final client frame (masked with the 4 bytes of ``mask``), payload under 64 KiB."""
    size = len(payload)
    head = bytes([0x80 | opcode])
    if size < 126:
        head += bytes([0x80 | size])
    else:
        head += bytes([0x80 | 126]) + size.to_bytes(2, "big")
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return head + mask + masked


def server_frame(buffer: bytes) -> tuple[int, bytes, bytes] | None:
    """The first complete server frame in ``buffer``: ``(opcode, payload, rest)``; None when
    it is incomplete. Raises ``CheckError`` for a masked one (servers never mask)."""
    if len(buffer) < 2:
        return None
    if buffer[1] & 0x80:
        raise CheckError("the server sent a masked frame")
    size, start = buffer[1] & 0x7F, 2
    if size == 126:
        if len(buffer) < 4:
            return None
        size, start = int.from_bytes(buffer[2:4], "big"), 4
    elif size == 127:
        if len(buffer) < 10:
            return None
        size, start = int.from_bytes(buffer[2:10], "big"), 10
    if len(buffer) < start + size:
        return None
    return buffer[0] & 0x0F, buffer[start : start + size], buffer[start + size :]


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The response head (without its blank line) and the bytes after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > HEAD_LIMIT:
            raise CheckError(f"no end of the response head in {HEAD_LIMIT} bytes")
        chunk = sock.recv(4096)
        if not chunk:
            raise CheckError(f"the connection closed before a response head: {data[:120]!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _field(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def _echo(sock: socket.socket, rest: bytes, size: int) -> str | None:
    """Send one message and read its echo; None when it came back equal."""
    payload = bytes(0x61 + index % 26 for index in range(size))
    sock.sendall(client_frame(payload, os.urandom(4)))
    buffer = rest
    controls = 0
    while controls < CONTROL_FRAMES:
        frame = server_frame(buffer)
        if frame is None:
            chunk = sock.recv(65536)
            if not chunk:
                return "the connection closed before the echo"
            buffer += chunk
            continue
        opcode, data, buffer = frame
        if opcode in (1, 2):
            if data != payload:
                return f"echoed {data[:40]!r} instead of the {size}-byte message"
            sock.sendall(client_frame((1000).to_bytes(2, "big"), os.urandom(4), opcode=8))
            return None
        if opcode == 8:
            return f"the server sent Close {data[:2].hex()} instead of the echo"
        controls += 1
    return f"{CONTROL_FRAMES} control frames and no echo"


def websocket(port: int, path: str, *, size: int, timeout: float = TIMEOUT_SECONDS) -> str | None:
    """One handshake and echo through ``port``; None when good, else what went wrong."""
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(request.encode("ascii"))
            head, rest = _read_head(sock)
            status = head.split(b"\r\n", 1)[0]
            if not status.startswith(b"HTTP/1.1 101"):
                return f"WebSocket handshake answered {status[:100]!r} (expected 101)"
            accept = _field(head, b"sec-websocket-accept")
            if accept != accept_value(key).encode("ascii"):
                return f"101 with Sec-WebSocket-Accept {accept!r}, not the key's"
            reason = _echo(sock, rest, size)
    except (OSError, CheckError) as error:
        return f"WebSocket check failed: {type(error).__name__}: {error}"
    return None if reason is None else f"WebSocket check: {reason}"


def judge_event(lines: list[bytes]) -> str | None:
    """None when ``lines`` (up to and without the blank line) are one backend event."""
    if len(lines) != 1 or EVENT_LINE.fullmatch(lines[0]) is None:
        return f"the first event is not the backend's: {b''.join(lines)[:120]!r}"
    return None


def sse(port: int, path: str, *, timeout: float = TIMEOUT_SECONDS) -> str | None:
    """One event stream through ``port``; None when its first event arrives intact."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Accept": "text/event-stream"})
        response = connection.getresponse()
        kind = response.getheader("content-type", "")
        if response.status != 200 or not kind.startswith("text/event-stream"):
            body = response.read(120) if response.status != 200 else b""
            return (
                f"SSE check answered {response.status} with content-type {kind!r} (expected "
                f"200 text/event-stream): {body!r}"
            )
        lines: list[bytes] = []
        for _ in range(EVENT_LINES):
            line = response.readline(1024)
            if not line:
                return "SSE check: the stream ended before its first event"
            if line.strip():
                lines.append(line)
            elif lines:
                reason = judge_event(lines)
                return None if reason is None else f"SSE check: {reason}"
        return f"SSE check: no blank line after {EVENT_LINES} lines: {b''.join(lines)[:120]!r}"
    except (OSError, http.client.HTTPException) as error:
        return f"SSE check failed: {type(error).__name__}: {error}"
    finally:
        connection.close()


def echo_payload(size: int) -> bytes:
    """A check message of ``size`` bytes that no earlier check sent (random, so a stale echo
    cannot pass for its answer)."""
    return os.urandom(size)


def tcp(port: int, *, size: int, timeout: float = TIMEOUT_SECONDS) -> str | None:
    """One TCP echo through ``port``; None when the bytes came back equal."""
    payload = echo_payload(size)
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(payload)
            received = b""
            while len(received) < size:
                chunk = sock.recv(size - len(received))
                if not chunk:
                    return (
                        f"TCP check: the connection closed after {len(received)} of the "
                        f"{size} echoed bytes"
                    )
                received += chunk
    except OSError as error:
        return f"TCP check failed: {type(error).__name__}: {error}"
    return None if received == payload else f"TCP check: echoed {received[:40]!r}, not the message"


def udp(
    port: int,
    *,
    size: int,
    attempts: int = UDP_ATTEMPTS,
    wait: float = UDP_WAIT_SECONDS,
) -> str | None:
    """One UDP echo through ``port`` (up to ``attempts`` datagrams, ``wait`` seconds each);
    None when one came back equal."""
    reason = "no datagram sent"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(wait)
        try:
            sock.connect((HOST, port))
        except OSError as error:
            return f"UDP check failed: {type(error).__name__}: {error}"
        for _ in range(attempts):
            payload = echo_payload(size)
            try:
                sock.send(payload)
                while True:  # echoes of earlier attempts that came late are skipped
                    answer = sock.recv(65536)
                    if answer == payload:
                        return None
                    reason = f"echoed {answer[:40]!r}, not the datagram"
            except TimeoutError:
                if not reason.startswith("echoed"):
                    reason = f"no echo within {wait:g} s"
            except OSError as error:  # ECONNREFUSED: an ICMP port unreachable
                reason = f"{type(error).__name__}: {error}"
    return f"UDP check: {reason} ({attempts} datagrams sent)"


def udp_answers(port: int, *, size: int = 16, wait: float = 0.2) -> bool:
    """Whether one UDP datagram to ``port`` comes back within ``wait`` seconds (a readiness
    probe: no retries, the caller polls)."""
    return udp(port, size=size, attempts=1, wait=wait) is None

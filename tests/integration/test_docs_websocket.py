"""The WebSocket, SSE and multiplexing guide (docs/websocket-sse.md) stays true to the code.

* Every ```hcl block of the guide loads with ``load_config_text`` without problems (a block
  without an entrypoint is completed with one).
* The multiplexer example of the guide runs: its broadcast channel, driven through the real
  gateway with a WebSocket client, answers the session the guide shows, reply for reply.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Final

import pytest
import trio
import trio_websocket

from a3s_gateway.config.load import load_config_text
from a3s_gateway.wsmux.protocol import ErrorCode
from tests.support.gateway import running_gateway

pytestmark = pytest.mark.integration

GUIDE: Final = Path(__file__).resolve().parents[2] / "docs" / "websocket-sse.md"
ENTRYPOINT: Final = 'entrypoints "web" {\n  address = "127.0.0.1:0"\n}\n'


def blocks(kind: str) -> list[str]:
    """The fenced blocks of ``kind`` in the guide, in order."""
    return re.findall(rf"```{kind}\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.DOTALL)


def completed(block: str) -> str:
    """A guide block as a whole config: on 127.0.0.1:0, with an entrypoint if it has none."""
    text = re.sub(r'address = "0\.0\.0\.0:\d+"', 'address = "127.0.0.1:0"', block)
    return text if "entrypoints" in text else ENTRYPOINT + text


def test_every_hcl_block_loads() -> None:
    found = blocks("hcl")
    assert len(found) >= 2
    for block in found:
        config = load_config_text(completed(block), filename="guide.hcl", env={"CHAT_API_KEY": "k"})
        assert config.services


def test_the_guide_names_every_error_code_of_the_multiplexer() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    assert [code.value for code in ErrorCode if f"`{code.value}`" not in text] == []


@pytest.mark.time_limit(30)
async def test_the_guide_s_session_runs_as_shown() -> None:
    mux = next(block for block in blocks("hcl") if "websocket_mux" in block)
    session = next(block for block in blocks("text") if '"type":"subscribe"' in block)
    async with running_gateway(completed(mux)) as gateway:
        path = re.search(r'rule\s+= "Path\(`([^`]+)`\)"', mux)
        assert path is not None
        with trio.fail_after(10):
            async with trio_websocket.open_websocket(
                "127.0.0.1", gateway.port, path.group(1), use_ssl=False
            ) as ws:
                for line in session.splitlines():
                    direction, _, body = line.partition(" ")
                    if direction == ">":
                        await ws.send_message(body)
                        continue
                    got = json.loads(await ws.get_message())
                    expected = json.loads(body.replace('"…"', '"*"'))
                    assert set(got) == set(expected)
                    for key, value in expected.items():
                        assert value == "*" or got[key] == value, (key, got)

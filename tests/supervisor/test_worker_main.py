"""A worker of ``run --workers N`` serves the config generations its supervisor sends it
(SPEC §13.4, issue #14): never the config file.

Covers: an ``Apply`` round-trips over the control channel codec to the exact ``Config``, with
its interpolated ``${VAR}`` values and the secrets it must redact, and its repr never shows
the config; the worker side run in this process over a real socketpair (``_start``, as
``worker_main`` runs it, minus the process): it starts from the first ``Apply`` (there is no
path to read), reports ``Ready``, applies a newer generation (seen in its ``/services``
documents), ignores an older one, and drains when the supervisor's end closes; a worker whose
supervisor goes away before sending a config exits 3. Active health (SPEC §13.4): the worker's
second message, the supervisor's whole table, is in force before it reports ready; later
``Health`` messages flip its backends both ways; one that comes before any config is refused.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.connection import Connection
from typing import Final

import msgspec
import pytest
import trio

from a3s_gateway.config.load import load_text
from a3s_gateway.config.schema import Config
from a3s_gateway.config.schema_middlewares import ApiKey
from a3s_gateway.supervisor.worker_main import (
    Apply,
    DocumentsReply,
    Health,
    Query,
    Ready,
    WorkerSpec,
    _start,
    apply_message,
    config_of,
    decode_command,
    decode_message,
    encode_message,
)

SPEC: Final = WorkerSpec(index=0, listen=None, log_level="info", log_format="text", ports={})
#: Bound on each wait for the worker (a reply, a reload): generous for 2 loaded cores.
STEP: Final = 10.0


def config(service: str, env: dict[str, str] | None = None) -> Config:
    text = (
        'entrypoints "web" {\n  address = "127.0.0.1:0"\n}\n'
        f'routers "main" {{\n  rule = "PathPrefix(`/`)"\n  service = "{service}"\n}}\n'
        f'services "{service}" {{\n  load_balancer {{\n'
        '    servers = [{ url = "http://127.0.0.1:9" }]\n  }\n}\n'
        'middlewares "key" {\n  type = "api-key"\n  header = "${GATEWAY_KEY_HEADER}"\n'
        '  keys = ["k-literal"]\n}\n'
    )
    result = load_text(text, env=env if env is not None else {"GATEWAY_KEY_HEADER": "X-Key"})
    assert result.config is not None, [problem.format() for problem in result.problems]
    return result.config


def test_a_generation_carries_the_interpolated_config_and_its_secrets() -> None:
    loaded = config("alpha", {"GATEWAY_KEY_HEADER": "X-S3cret-From-Env"})
    message = apply_message(loaded, 7)
    received = decode_command(encode_message(message))
    assert isinstance(received, Apply)
    rebuilt = config_of(received)
    assert received.generation == 7
    assert rebuilt == loaded  # the values the supervisor interpolated, not the worker's env
    key = rebuilt.middlewares["key"]
    assert isinstance(key, ApiKey)
    assert key.header == "X-S3cret-From-Env"
    assert "X-S3cret-From-Env" in received.secrets
    redacted = str(rebuilt.to_builtins(redact=True))
    assert redacted == str(loaded.to_builtins(redact=True))
    assert "S3cret" not in redacted
    assert "S3cret" not in repr(message)
    with pytest.raises(msgspec.DecodeError):
        decode_message(encode_message(message))  # a worker never sends a generation


async def receive(channel: Connection[object, object]) -> object:
    with trio.fail_after(STEP):
        await trio.lowlevel.wait_readable(channel.fileno())
        return decode_message(await trio.to_thread.run_sync(channel.recv_bytes))


async def services(channel: Connection[object, object], query_id: int) -> list[object]:
    channel.send_bytes(encode_message(Query(query_id, "services")))
    reply = await receive(channel)
    assert isinstance(reply, DocumentsReply)
    assert reply.id == query_id
    return [document["name"] for document in reply.documents]


async def test_a_worker_starts_from_the_first_generation_and_applies_newer_ones() -> None:
    ours, theirs = multiprocessing.Pipe(duplex=True)
    exit_codes: list[int] = []

    async def worker() -> None:
        exit_codes.append(await _start(SPEC, theirs))

    ours.send_bytes(encode_message(apply_message(config("alpha"), 4)))
    ours.send_bytes(encode_message(Health([], full=True)))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker)
        ready = await receive(ours)
        assert isinstance(ready, Ready)
        assert await services(ours, 1) == ["alpha"]

        ours.send_bytes(encode_message(apply_message(config("beta"), 5)))
        with trio.fail_after(STEP):
            query_id = 2
            while await services(ours, query_id) != ["beta"]:
                query_id += 1
                await trio.sleep(0.02)  # the reload compiles in a thread; nothing to wait on

        ours.send_bytes(encode_message(apply_message(config("gamma"), 3)))  # older: ignored
        ours.send_bytes(encode_message(apply_message(config("gamma"), 5)))  # not newer either
        assert await services(ours, 100) == ["beta"]

        ours.close()  # the supervisor is gone: the worker drains and returns
    assert exit_codes == [0]
    theirs.close()


async def test_a_worker_whose_supervisor_goes_before_any_config_exits_3() -> None:
    ours, theirs = multiprocessing.Pipe(duplex=True)
    ours.close()
    with trio.fail_after(STEP):
        assert await _start(SPEC, theirs) == 3
    theirs.close()


BACKEND: Final = "http://127.0.0.1:9"


async def backends(channel: Connection[object, object], query_id: int) -> list[object]:
    """``(service, url, healthy)`` of every backend in the worker's ``/services`` documents."""
    channel.send_bytes(encode_message(Query(query_id, "services")))
    reply = await receive(channel)
    assert isinstance(reply, DocumentsReply)
    found: list[object] = []
    for document in reply.documents:
        listed = document["backends"]
        assert isinstance(listed, list)
        found.extend((b["service"], b["url"], b["healthy"]) for b in listed)
    return found


async def test_a_worker_serves_with_the_pushed_health_from_the_start_and_follows_it() -> None:
    ours, theirs = multiprocessing.Pipe(duplex=True)
    exit_codes: list[int] = []

    async def worker() -> None:
        exit_codes.append(await _start(SPEC, theirs))

    ours.send_bytes(encode_message(apply_message(config("alpha"), 1)))
    # The whole table, with a verdict on a backend this generation does not have yet.
    opening = Health([("alpha", BACKEND, False), ("beta", BACKEND, False)], full=True)
    ours.send_bytes(encode_message(opening))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker)
        assert isinstance(await receive(ours), Ready)
        # Queries are answered in order after every earlier message: no waiting needed.
        assert await backends(ours, 1) == [("alpha", BACKEND, False)]
        ours.send_bytes(encode_message(Health([("alpha", BACKEND, True)])))
        assert await backends(ours, 2) == [("alpha", BACKEND, True)]
        ours.send_bytes(encode_message(Health([("alpha", BACKEND, False)], passed=[])))
        assert await backends(ours, 3) == [("alpha", BACKEND, False)]

        # A new generation's backend starts from the pushed verdict, not from "healthy".
        ours.send_bytes(encode_message(apply_message(config("beta"), 2)))
        with trio.fail_after(STEP):
            query_id = 4
            while await services(ours, query_id) != ["beta"]:
                query_id += 1
                await trio.sleep(0.02)  # the reload compiles in a thread; nothing to wait on
        assert await backends(ours, 100) == [("beta", BACKEND, False)]
        ours.close()
    assert exit_codes == [0]
    theirs.close()


async def test_a_worker_sent_health_before_any_config_exits_3(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ours, theirs = multiprocessing.Pipe(duplex=True)
    ours.send_bytes(encode_message(Health([], full=True)))
    with trio.fail_after(STEP):
        assert await _start(SPEC, theirs) == 3
    assert "a health message came first" in caplog.text
    ours.close()
    theirs.close()

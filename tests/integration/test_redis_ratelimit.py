"""``rate-limit-redis`` through the real CLI (SPEC §8.7): ``a3s_gateway run --workers 2`` in
front of a test origin, with its buckets on a real redis-server.

Both worker processes serve (each accepted connection is traced to the worker process that
holds its socket, through /proc), and together they admit exactly ``burst`` requests: were the
limit per worker, two workers that both served would admit more. Then Redis is stopped: the
``fail_open = false`` route answers 503 ``rate limiter unavailable`` and the ``fail_open =
true`` one lets requests through.
"""

from __future__ import annotations

import json
import math
import signal
from functools import partial
from pathlib import Path

import pytest
import trio

from tests.support.cli import RunningGateway, start_gateway
from tests.support.redis_server import running_redis

pytestmark = pytest.mark.integration

BURST = 5
REQUESTS = 16
#: Tokens per second: one refills in 1000 s, so a refused request's Retry-After is close to it.
RATE = 0.001


# ----------------------------------------------------------------------------- /proc tracing


def _socket_inodes(local_port: int, remote_port: int) -> set[str]:
    """Inodes of the IPv4 TCP sockets from 127.0.0.1:local_port to 127.0.0.1:remote_port."""
    wanted = (f"0100007F:{local_port:04X}", f"0100007F:{remote_port:04X}")
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if (fields[1], fields[2]) == wanted:
            found.add(fields[9])
    return found


def _owner(pids: set[int], inodes: set[str]) -> int | None:
    """The process among ``pids`` holding a socket with one of ``inodes``."""
    links = {f"socket:[{inode}]" for inode in inodes}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    if fd.readlink().as_posix() in links:
                        return pid
                except OSError:
                    continue
        except OSError:
            continue
    return None


def worker_pids(supervisor: int) -> set[int]:
    """The supervisor's worker children (multiprocessing ``spawn_main`` processes)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == supervisor and b"spawn_main" in cmdline:
            found.add(int(entry.name))
    return found


# ----------------------------------------------------------------------------- peers


class Origin:
    """Answers every request 200 ``ok`` and counts them."""

    def __init__(self) -> None:
        self.requests = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                head += chunk
            self.requests += 1
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
            )


async def request(port: int, path: str, workers: set[int]) -> tuple[int | None, bytes]:
    """GET ``path`` on a new connection; (the worker that served it, the whole response).

    The worker is looked up once the response head arrived (the connection is then accepted
    and still open in that worker)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        local_port = stream.socket.getsockname()[1]
        await stream.send_all(f"GET {path} HTTP/1.1\r\nhost: t\r\n\r\n".encode())
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = await stream.receive_some(65536)
            assert chunk, reply
            reply += chunk
        worker = _owner(workers, _socket_inodes(port, local_port))
        head, _, body = reply.partition(b"\r\n\r\n")
        length = int(header(head, b"content-length") or b"0")
        while len(body) < length:
            chunk = await stream.receive_some(65536)
            assert chunk
            body += chunk
    return worker, head + b"\r\n\r\n" + body


def status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def header(response: bytes, name: bytes) -> bytes | None:
    head = response.partition(b"\r\n\r\n")[0]
    for line in head.split(b"\r\n")[1:]:
        field, _, value = line.partition(b":")
        if field.strip().lower() == name:
            return value.strip()
    return None


def write_config(directory: Path, origin_port: int, redis_url: str) -> Path:
    config = directory / "gateway.hcl"
    limits = "".join(
        f"""
middlewares "{name}" {{
  type           = "rate-limit-redis"
  rate           = {RATE}
  burst          = {BURST}
  rate_limit_key = "global"
  redis_url      = "{redis_url}"
  redis_timeout  = "2s"
  fail_open      = {fail_open}
}}
routers "{name}" {{
  rule        = "PathPrefix(`/{name}`)"
  service     = "origin"
  middlewares = ["{name}"]
}}
"""
        for name, fail_open in (("open", "true"), ("closed", "false"))
    )
    config.write_text(
        'entrypoints "web" { address = "127.0.0.1:0" }\n'
        + limits
        + 'services "origin" {\n  load_balancer {\n'
        + f'    servers = [{{ url = "http://127.0.0.1:{origin_port}" }}]\n  }}\n}}\n'
    )
    return config


async def _kill_on_exit(gateway: RunningGateway) -> None:
    try:
        await gateway.process.wait()
    finally:
        if gateway.process.returncode is None:
            gateway.process.kill()


async def test_two_workers_share_one_limit_and_fail_closed_without_redis(tmp_path: Path) -> None:
    origin = Origin()
    with running_redis() as redis:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                partial(trio.serve_tcp, origin.handle, 0, host="127.0.0.1")
            )
            origin_port = listeners[0].socket.getsockname()[1]
            config = write_config(tmp_path, origin_port, redis.url)
            gateway = await start_gateway(str(config), "--workers", "2")
            nursery.start_soon(_kill_on_exit, gateway)
            with trio.fail_after(40):
                line = await gateway.wait_for_line("listening entrypoint=web")
                port = int(line.split("address=")[1].split()[0].rsplit(":", 1)[1])
                await gateway.wait_for_line("workers ready: 2")
                workers = worker_pids(gateway.process.pid)
                assert len(workers) == 2

                served_by: dict[int, int] = {}
                statuses = []
                started = trio.current_time()
                for _ in range(REQUESTS):
                    worker, response = await request(port, "/closed", workers)
                    assert worker is not None
                    served_by[worker] = served_by.get(worker, 0) + 1
                    statuses.append(status(response))
                    if status(response) == 429:
                        retry_after = int(header(response, b"retry-after") or b"0")
                        assert header(response, b"ratelimit-limit") == str(BURST).encode()
                        # ⌈(1 − tokens) ÷ RATE⌉: a full token's time less what refilled since
                        # the bucket emptied, which is at most the time since the first request
                        # (however slow this machine is), give or take a second between clocks.
                        refilled = math.ceil(trio.current_time() - started) + 1
                        assert math.ceil(1 / RATE) - refilled <= retry_after <= math.ceil(1 / RATE)
                assert len(served_by) == 2, served_by  # both workers served
                # Per-worker limits would admit min(n, BURST) in each worker: more than BURST.
                assert statuses.count(200) == BURST
                assert statuses.count(429) == REQUESTS - BURST
                assert origin.requests == BURST

                redis.stop()
                for _ in range(4):
                    _, response = await request(port, "/closed", workers)
                    assert status(response) == 503
                    assert header(response, b"retry-after") == b"1"
                    body = json.loads(response.partition(b"\r\n\r\n")[2])
                    assert body == {"error": "rate limiter unavailable", "status": 503}
                    _, response = await request(port, "/open", workers)
                    assert status(response) == 200
                assert origin.requests == BURST + 4
                warning = await gateway.wait_for_line('rate-limit-redis "closed": Redis failed')
                assert "answering 503" in warning

                gateway.process.send_signal(signal.SIGTERM)
                assert await gateway.process.wait() == 0
            nursery.cancel_scope.cancel()

"""The DNS provider through the real CLI (SPEC §10.4, §10.1, §9.6 ``/providers``).

``python -m a3s_gateway run`` with a ``providers { dns { ... } }`` block asking a real Knot DNS
server (``tests/support/knot.py``) for ``users.test.``, whose A records the test changes with
dynamic updates while the gateway runs. The backends are real HTTP origins of this test's trio
loop, one per loopback address (127.0.0.1, 127.0.0.2, 127.0.0.3: Linux routes all of
127.0.0.0/8 to the loopback interface) and all on one port, so that the records alone say which
origins serve and one ``port`` setting fits them all. Each origin answers with its own name.

Covered: records added, changed and removed (NODATA, then NXDOMAIN: 503 for that router while
a static router still serves), with TTLs of 1 s and a ``refresh_interval_secs`` of 30 s, so a
change served within a few seconds is the TTL's doing; a stopped nameserver (the last good set
keeps serving, ``/providers`` shows the error, a restart recovers); an HCL service block for the
DNS service whose strategy and health check apply to the DNS backends; and ``--workers 2``,
where the supervisor runs the provider and every worker gets the new servers.

Every wait polls under a bounded deadline; knotd is stopped and the gateway is terminated (and
killed when it lingers) at the end of each test.
"""

from __future__ import annotations

import json
import re
import socket
from typing import TYPE_CHECKING, Final

import pytest
import trio

from tests.support.gateway import LOCAL
from tests.support.knot import KnotServer, running_knot
from tests.support.origin import Fixed, Origin
from tests.support.scaling import cli_gateway, free_ports, poll_until

if TYPE_CHECKING:
    from pathlib import Path

    from tests.support.scaling import CliGateway

pytestmark = pytest.mark.integration

#: ``refresh_interval_secs``: far above the time a change may take to be served.
REFRESH: Final = 30
#: A change must be served within this many seconds: the 1 s TTL, the query, the 100 ms
#: debounce and a reload, with margin, and well under ``REFRESH``.
WITHIN: Final = 8.0
#: The first answer is served within this many seconds of the gateway being ready (the first
#: reload also waits for the config build process to start).
FIRST: Final = 15.0
#: A stopped nameserver: each query times out after 5 s, and the failures back off (1, 2, 4 s).
RECOVERY: Final = 15.0
#: The origins' loopback addresses, in the order ``start_origins`` starts them.
ADDRESSES: Final = ("127.0.0.1", "127.0.0.2", "127.0.0.3")


def config(
    port: int, admin: int, knot: KnotServer, origin_port: int, static: Origin, extra: str = ""
) -> str:
    """Two routers: ``/users`` to the DNS service ``users``, ``/static`` to an HCL service."""
    return (
        f'entrypoints "web" {{\n  address = "{LOCAL}:{port}"\n}}\n'
        f'management {{\n  address = "{LOCAL}:{admin}"\n}}\n'
        'routers "users" {\n  rule    = "PathPrefix(`/users`)"\n  service = "users"\n}\n'
        'routers "static" {\n  rule    = "PathPrefix(`/static`)"\n  service = "static"\n}\n'
        'services "static" {\n  load_balancer {\n'
        f'    servers = [{{ url = "http://{LOCAL}:{static.port}" }}]\n  }}\n}}\n'
        f"{extra}"
        "providers {\n"
        '  file {\n    watch    = false\n    debounce = "100ms"\n  }\n'
        "  dns {\n"
        f'    nameservers           = ["{knot.address}"]\n'
        f"    refresh_interval_secs = {REFRESH}\n"
        '    services "users" {\n'
        '      hostname    = "users.test."\n'
        '      record_type = "A"\n'
        f"      port        = {origin_port}\n"
        "    }\n"
        "  }\n"
        "}\n"
        "shutdown_timeout_secs = 2\n"
    )


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


async def start_origins(nursery: trio.Nursery) -> tuple[Origin, Origin, Origin, Origin]:
    """Origins ``a``, ``b``, ``c`` on ``ADDRESSES`` (one port for all three) and ``static`` on
    127.0.0.1 (a port of its own); each answers every path with ``from-<name>``, and ``b`` also
    answers ``/healthz`` with 200."""
    for _ in range(20):
        (port,) = free_ports(1)
        if all(_bindable(host, port) for host in ADDRESSES):
            break
    else:
        raise AssertionError(f"no port free on all of {ADDRESSES}")
    a, b, c = (
        Origin(name, host=host, port=port) for name, host in zip("abc", ADDRESSES, strict=True)
    )
    static = Origin("static")
    for origin in (a, b, c, static):
        origin.default = Fixed(200, f"from-{origin.name}".encode())
        await nursery.start(origin.serve)
    return a, b, c, static


async def bodies(gateway: CliGateway, target: str, count: int = 8) -> set[str]:
    """The bodies of ``count`` requests for ``target``, each on a new connection (the status
    instead when not 200)."""
    seen: set[str] = set()
    for _ in range(count):
        response = await gateway.get(target)
        seen.add(
            response.body.decode(errors="replace")
            if response.status == 200
            else str(response.status)
        )
    return seen


async def dns_status(gateway: CliGateway) -> dict[str, object]:
    """The ``dns`` document of ``/providers``."""
    response = await gateway.api("/providers")
    assert response.status == 200, response
    documents = json.loads(response.body)
    assert isinstance(documents, list), documents
    for document in documents:
        if isinstance(document, dict) and document.get("name") == "dns":
            return document
    raise AssertionError(f"no dns provider in {documents}")


def users_entry(status: dict[str, object]) -> dict[str, object]:
    """``details.services.users`` of the ``dns`` document."""
    details = status["details"]
    assert isinstance(details, dict), status
    entry = details["services"]["users"]
    assert isinstance(entry, dict), status
    return entry


async def serves(
    gateway: CliGateway, expected: set[str], *, count: int = 8, within: float = WITHIN
) -> None:
    """Poll until ``count`` requests for ``/users`` in a row get exactly ``expected``."""
    await poll_until(
        f"/users serving {sorted(expected)}",
        lambda: bodies(gateway, "/users", count),
        expected.__eq__,
        within=within,
    )


def answers(*names: str) -> set[str]:
    """What the origins ``names`` answer."""
    return {f"from-{name}" for name in names}


# -- tests --------------------------------------------------------------------------------------


async def test_records_added_changed_and_removed_move_the_traffic(tmp_path: Path) -> None:
    port, admin = free_ports(2)
    records = ["users 1 A 127.0.0.1", "users 60 TXT keeps-the-name"]
    with running_knot(zone="test.", records=records) as knot:
        async with trio.open_nursery() as nursery:
            a, _, _, static = await start_origins(nursery)
            text = config(port, admin, knot, a.port, static)
            async with cli_gateway(tmp_path, text, port=port, admin=admin) as gateway:
                await serves(gateway, answers("a"), within=FIRST)
                status = await dns_status(gateway)
                assert status["state"] == "ok", status
                assert users_entry(status)["servers"] == [f"http://127.0.0.1:{a.port}"], status
                assert users_entry(status)["last_error"] is None, status

                # Added: both addresses serve.
                knot.replace("users", "A", 1, "127.0.0.1", "127.0.0.2")
                await serves(gateway, answers("a", "b"), count=12)

                # Changed: WITHIN is far below refresh_interval_secs, so the 1 s TTL did it.
                knot.replace("users", "A", 1, "127.0.0.3")
                await serves(gateway, answers("c"))

                # Removed while the name stays (NODATA): 503 on /users, /static unaffected.
                knot.delete("users", "A")
                await serves(gateway, {"503"})
                assert await bodies(gateway, "/static") == answers("static")
                status = await dns_status(gateway)
                assert users_entry(status)["last_error"] == "no A records", status
                assert status["state"] == "ok", status  # an answer, not a failure

                # Back, then the whole name removed (NXDOMAIN): 503 again.
                knot.replace("users", "A", 1, "127.0.0.2")
                await serves(gateway, answers("b"))
                knot.delete("users")
                await serves(gateway, {"503"})
                assert await bodies(gateway, "/static") == answers("static")
                status = await dns_status(gateway)
                assert users_entry(status)["last_error"] == "no such name (NXDOMAIN)", status

                changes = await gateway.metric("a3s_provider_changes_total", provider="dns")
                assert changes is not None
                assert changes >= 6
            nursery.cancel_scope.cancel()


async def test_a_stopped_nameserver_keeps_the_last_good_set_until_it_answers_again(
    tmp_path: Path,
) -> None:
    port, admin = free_ports(2)
    with running_knot(zone="test.", records=["users 1 A 127.0.0.1"]) as knot:
        async with trio.open_nursery() as nursery:
            a, _, _, static = await start_origins(nursery)
            text = config(port, admin, knot, a.port, static)
            async with cli_gateway(tmp_path, text, port=port, admin=admin) as gateway:
                await serves(gateway, answers("a"), within=FIRST)

                knot.stop()
                status = await poll_until(
                    "the dns provider in error",
                    lambda: dns_status(gateway),
                    lambda status: status["state"] == "error",
                    within=RECOVERY,
                )
                # A timeout here ("timed out after 5 s"); the prefix is what is stable.
                last_error = status["last_error"]
                assert isinstance(last_error, str), status
                assert last_error.startswith('service "users" (users.test.): '), status
                assert users_entry(status)["servers"] == [f"http://127.0.0.1:{a.port}"], status
                assert await bodies(gateway, "/users") == answers("a")
                errors = await gateway.metric("a3s_provider_errors_total", provider="dns")
                assert errors is not None
                assert errors >= 1
                assert "keeping the last 1 servers" in gateway.log()

                knot.start()
                await poll_until(
                    "the dns provider recovered",
                    lambda: dns_status(gateway),
                    lambda status: status["state"] == "ok",
                    within=RECOVERY,
                )
                knot.replace("users", "A", 1, "127.0.0.2")
                await serves(gateway, answers("b"))
            nursery.cancel_scope.cancel()


#: An HCL block for the DNS service: no servers (DNS gives them), its own strategy and an
#: active health check that takes a failing backend out after one probe.
HEALTH_CHECKED: Final = """\
services "users" {
  load_balancer {
    strategy = "least-connections"
    health_check {
      path                = "/healthz"
      interval            = "1s"
      timeout             = "1s"
      unhealthy_threshold = 1
    }
  }
}
"""


async def test_an_hcl_block_for_the_dns_service_keeps_its_strategy_and_health_check(
    tmp_path: Path,
) -> None:
    port, admin = free_ports(2)
    records = ["users 1 A 127.0.0.1", "users 1 A 127.0.0.2"]
    with running_knot(zone="test.", records=records) as knot:
        async with trio.open_nursery() as nursery:
            a, b, _, static = await start_origins(nursery)
            a.on("/healthz", Fixed(200, b"ok"))
            b.on("/healthz", Fixed(503, b"sick"))
            text = config(port, admin, knot, a.port, static, HEALTH_CHECKED)
            async with cli_gateway(tmp_path, text, port=port, admin=admin) as gateway:
                await serves(gateway, answers("a"), count=12, within=FIRST)
                response = await gateway.api("/services/users")
                assert response.status == 200, response
                document = json.loads(response.body)
                assert document["strategy"] == "least-connections", document
                healthy = {backend["url"]: backend["healthy"] for backend in document["backends"]}
                assert healthy == {
                    f"http://127.0.0.1:{a.port}": True,
                    f"http://127.0.0.2:{a.port}": False,
                }, document

                b.on("/healthz", Fixed(200, b"ok"))
                await serves(gateway, answers("a", "b"), count=12)
            nursery.cancel_scope.cancel()


def last_generation(log: str) -> int:
    """The latest config generation the supervisor validated, from its log."""
    found = re.findall(r"config validated: generation ([0-9]+)", log)
    assert found, log
    return int(found[-1])


async def test_with_two_workers_both_follow_a_dns_change(tmp_path: Path) -> None:
    port, admin = free_ports(2)
    with running_knot(zone="test.", records=["users 1 A 127.0.0.1"]) as knot:
        async with trio.open_nursery() as nursery:
            a, _, _, static = await start_origins(nursery)
            text = config(port, admin, knot, a.port, static)
            args = ("--workers", "2")
            async with cli_gateway(tmp_path, text, port=port, admin=admin, args=args) as gateway:
                await serves(gateway, answers("a"), count=16, within=FIRST)

                knot.replace("users", "A", 1, "127.0.0.2")
                # Every request is a new connection, which SO_REUSEPORT hands to either worker:
                # 24 answers in a row from b are next to impossible while one worker has a...
                await serves(gateway, answers("b"), count=24)
                # ...and the log says that both workers serve the generation the supervisor
                # built from the new answer.
                generation = last_generation(gateway.log())
                await poll_until(
                    f"both workers serving generation {generation}",
                    lambda: trio.to_thread.run_sync(gateway.log),
                    lambda log: all(
                        f"serving config generation {generation} worker={worker}" in log
                        for worker in (0, 1)
                    ),
                    within=WITHIN,
                )
                response = await gateway.api("/services/users")
                assert response.status == 200, response
                urls = [backend["url"] for backend in json.loads(response.body)["backends"]]
                assert urls == [f"http://127.0.0.2:{a.port}"]
                status = await dns_status(gateway)
                assert users_entry(status)["servers"] == urls, status
            nursery.cancel_scope.cancel()

"""The dialer with host names (SPEC §5.7 "DNS"): ``http://localhost:<port>`` connects, a name that
does not resolve (or cannot be looked up: an unusable ``resolv.conf``) is a connect error saying
why, a name's addresses are tried in turn (the next at once when one fails, after
``ATTEMPT_DELAY`` when one hangs), and IP literals skip the resolver. Real sockets on loopback;
the resolver's own tests: tests/upstream/test_resolve.py and test_resolve_families.py."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import pytest
import trio
import trio.testing

from a3s_gateway.config.urls import ServerUrl
from a3s_gateway.upstream import dialer
from a3s_gateway.upstream.connect_errors import ConnectFailed
from a3s_gateway.upstream.dialer import ATTEMPT_DELAY, connect_in_turn, dial, open_tcp
from a3s_gateway.upstream.peer import Peer
from a3s_gateway.upstream.resolve import DnsAnswer, ResolveError, Resolver, SystemDns


async def never_asked(name: str) -> DnsAnswer:
    raise AssertionError(f"DNS asked for {name!r}")


async def no_such_host(name: str) -> DnsAnswer:
    raise ResolveError("no such host")


def hosts_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "hosts"
    path.write_text(text)
    return str(path)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def echo_once(stream: trio.abc.Stream, listener: trio.SocketListener) -> None:
    async with stream, await listener.accept() as server_end:
        await stream.send_all(b"ping")
        assert await server_end.receive_some() == b"ping"


async def test_localhost_server_url_connects() -> None:
    # The process's resolver: /etc/hosts, or the built-in localhost when the file lacks it.
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listener:
        port = listener.socket.getsockname()[1]
        peer = Peer.from_url(ServerUrl(f"http://localhost:{port}"))
        assert peer.host == "localhost"
        await echo_once(await dial(peer), listener)


async def test_unresolvable_name_is_a_connect_error(tmp_path: Path) -> None:
    resolver = Resolver(no_such_host, hosts=hosts_file(tmp_path, ""))
    peer = Peer.from_url(ServerUrl("http://api.nowhere.invalid:8080"))
    with pytest.raises(ConnectFailed) as caught:
        await dial(peer, resolver=resolver)
    assert caught.value.reason == "resolve"
    assert caught.value.detail == 'cannot resolve "api.nowhere.invalid": no such host'
    assert str(caught.value) == caught.value.detail


async def test_ip_literal_skips_the_resolver(tmp_path: Path) -> None:
    resolver = Resolver(never_asked, hosts=hosts_file(tmp_path, "10.0.0.1 127.0.0.1\n"))
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listener:
        port = listener.socket.getsockname()[1]
        await echo_once(await dial(Peer("http", "127.0.0.1", port), resolver=resolver), listener)


async def test_next_address_at_once_when_one_is_refused(tmp_path: Path) -> None:
    # 127.0.0.2 is loopback too, but nothing listens there: refused, then 127.0.0.1 at once.
    resolver = Resolver(
        never_asked, hosts=hosts_file(tmp_path, "127.0.0.2 api.test\n127.0.0.1 api.test\n")
    )
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listener:
        port = listener.socket.getsockname()[1]
        start = trio.current_time()
        stream = await dial(Peer("http", "api.test", port), resolver=resolver)
        assert trio.current_time() - start < ATTEMPT_DELAY
        await echo_once(stream, listener)


async def test_every_address_refused(tmp_path: Path) -> None:
    resolver = Resolver(
        never_asked, hosts=hosts_file(tmp_path, "127.0.0.2 api.test\n127.0.0.3 api.test\n")
    )
    with pytest.raises(ConnectFailed) as caught:
        await dial(Peer("http", "api.test", closed_port()), resolver=resolver)
    assert caught.value.reason == "refused"
    cause = caught.value.__cause__
    assert isinstance(cause, OSError)
    assert isinstance(cause.__cause__, ExceptionGroup)
    assert [type(error) for error in cause.__cause__.exceptions] == [ConnectionRefusedError] * 2


async def test_open_tcp_takes_names_and_literals(tmp_path: Path) -> None:
    resolver = Resolver(never_asked, hosts=hosts_file(tmp_path, "127.0.0.1 api.test\n"))
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listener:
        port = listener.socket.getsockname()[1]
        for host in ("api.test", "127.0.0.1"):
            await echo_once(await open_tcp(host, port, resolver), listener)


@pytest.mark.parametrize(
    "conf",
    [
        "nameserver 127.0.0.1\nnameserver bogus-entry\n",
        "nameserver 10.0.0.1:53\n",
        f"nameserver 127.0.0.1\nsearch {'x' * 70}.example\n",
    ],
)
async def test_unusable_resolv_conf_is_a_connect_error(tmp_path: Path, conf: str) -> None:
    # Not a ValueError out of dial or open_tcp: the probes and the exchange catch ConnectFailed.
    (tmp_path / "resolv.conf").write_text(conf)
    resolver = Resolver(
        SystemDns(resolv_conf=str(tmp_path / "resolv.conf")), hosts=hosts_file(tmp_path, "")
    )
    with pytest.raises(ConnectFailed) as caught:
        await dial(Peer("http", "api.internal", 80), resolver=resolver)
    assert caught.value.reason == "resolve"
    assert caught.value.detail.startswith('cannot resolve "api.internal": unusable ')
    with pytest.raises(ConnectFailed, match="unusable"):
        await open_tcp("api.internal", 80, resolver)


class HangingSocket:
    """Stands in for a socket whose connect never completes (a black-holed address)."""

    def __init__(self) -> None:
        self.closed = False

    async def connect(self, address: tuple[str, int]) -> None:
        await trio.sleep_forever()

    def close(self) -> None:
        self.closed = True


async def test_next_address_after_the_delay_when_one_hangs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hanging = HangingSocket()
    real_socket = trio.socket.socket

    def make_socket(family: int, kind: int) -> object:
        return hanging if family == socket.AF_INET6 else real_socket(family, kind)

    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listener:
        port = listener.socket.getsockname()[1]
        monkeypatch.setattr(trio.socket, "socket", make_socket)
        start = trio.current_time()
        stream = await connect_in_turn(("fd00::1", "127.0.0.1"), port)
        elapsed = trio.current_time() - start
        monkeypatch.undo()
        assert ATTEMPT_DELAY <= elapsed < ATTEMPT_DELAY + 1.0
        assert hanging.closed  # the losing attempt was cancelled and closed
        await echo_once(stream, listener)


async def test_socket_that_cannot_be_made_counts_as_a_failed_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_socket = trio.socket.socket

    def make_socket(family: int, kind: int) -> object:
        if family == socket.AF_INET6:
            raise OSError(errno.EAFNOSUPPORT, "no IPv6 here")
        return real_socket(family, kind)

    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listener:
        port = listener.socket.getsockname()[1]
        monkeypatch.setattr(trio.socket, "socket", make_socket)
        stream = await connect_in_turn(("fd00::1", "127.0.0.1"), port)
        monkeypatch.undo()
        await echo_once(stream, listener)


async def test_cancelled_dial_leaves_no_socket(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[HangingSocket] = []

    def make_socket(family: int, kind: int) -> object:
        made.append(HangingSocket())
        return made[-1]

    monkeypatch.setattr(trio.socket, "socket", make_socket)
    with trio.move_on_after(1.0) as scope:  # the caller's connect timeout
        await dialer.connect_in_turn(("10.0.0.1", "10.0.0.2", "10.0.0.3"), 80)
    assert scope.cancelled_caught
    assert len(made) == 3  # one every ATTEMPT_DELAY, none answering
    assert all(sock.closed for sock in made)

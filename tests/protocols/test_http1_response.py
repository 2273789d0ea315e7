"""``ResponseWriter`` rules one by one (the h11 differential lives in tests/property)."""

from __future__ import annotations

import pytest

from a3s_gateway.protocols.events import ProtocolViolation
from a3s_gateway.protocols.http1_response import ResponseWriter, client_keep_alive


def test_length_framed_body_is_counted() -> None:
    writer = ResponseWriter(b"GET", b"1.1", keep_alive=True)
    head = writer.head(200, [(b"content-length", b"5")], b"OK", close=False)
    assert head == b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"
    assert writer.data(b"hel") == b"hel"
    with pytest.raises(ProtocolViolation, match="longer"):
        writer.data(b"lo!")


def test_a_short_body_cannot_end() -> None:
    writer = ResponseWriter(b"GET", b"1.1", keep_alive=True)
    writer.head(200, [(b"content-length", b"5")], b"", close=False)
    writer.data(b"hi")
    with pytest.raises(ProtocolViolation, match="shorter"):
        writer.end([])
    assert not writer.done


def test_unknown_length_is_chunked_for_1_1_and_close_delimited_for_1_0() -> None:
    chunked = ResponseWriter(b"GET", b"1.1", keep_alive=True)
    assert chunked.head(200, [(b"transfer-encoding", b"gzip")], b"", close=False) == (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    assert chunked.data(b"abc") == b"3\r\nabc\r\n"
    assert chunked.end([(b"x-sum", b"1")]) == b"0\r\nx-sum: 1\r\n\r\n"
    assert chunked.keep_alive

    old = ResponseWriter(b"GET", b"1.0", keep_alive=False)
    assert old.head(200, [], b"", close=False) == b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n"
    assert old.data(b"abc") == b"abc"
    assert old.end([(b"x-sum", b"1")]) == b""
    assert not old.keep_alive


def test_bodiless_responses_drop_chunks_and_keep_their_headers() -> None:
    head = ResponseWriter(b"HEAD", b"1.1", keep_alive=True)
    assert head.head(200, [(b"content-length", b"99")], b"", close=False).endswith(
        b"content-length: 99\r\n\r\n"
    )
    assert head.data(b"ignored") == b""
    assert head.end([]) == b""
    assert head.done
    assert head.keep_alive
    not_modified = ResponseWriter(b"GET", b"1.1", keep_alive=True)
    assert b"transfer-encoding" not in not_modified.head(304, [], b"", close=False)


def test_close_and_client_keep_alive() -> None:
    writer = ResponseWriter(b"GET", b"1.1", keep_alive=True)
    wire = writer.head(
        200, [(b"connection", b"keep-alive"), (b"content-length", b"0")], b"", close=True
    )
    assert wire == b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    assert client_keep_alive(b"1.1", [(b"connection", b"Upgrade, CLOSE")]) is False
    assert client_keep_alive(b"1.1", [(b"connection", b"keep-alive")]) is True
    assert client_keep_alive(b"1.0", [(b"connection", b"keep-alive")]) is False


@pytest.mark.parametrize(
    "call",
    [
        lambda w: w.data(b"x"),
        lambda w: w.end([]),
        lambda w: w.informational(101, [], b""),
        lambda w: w.head(200, [(b"content-length", b"-1")], b"", close=False),
        lambda w: w.head(200, [(b"content-length", b"1, 1")], b"", close=False),
        lambda w: w.head(99, [], b"", close=False),
    ],
)
def test_misuse_is_a_500(call: object) -> None:
    writer = ResponseWriter(b"GET", b"1.1", keep_alive=True)
    with pytest.raises(ProtocolViolation) as caught:
        call(writer)  # type: ignore[operator]  # the parametrised lambdas take a writer
    assert caught.value.status == 500


def test_informational_only_before_the_head_and_only_to_1_1() -> None:
    writer = ResponseWriter(b"POST", b"1.1", keep_alive=True)
    assert writer.informational(100, [], b"Continue") == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.head(200, [(b"content-length", b"0")], b"", close=False)
    with pytest.raises(ProtocolViolation):
        writer.informational(100, [], b"")
    assert ResponseWriter(b"POST", b"1.0", keep_alive=False).informational(100, [], b"") == b""


def test_a_head_without_a_reason_gets_the_usual_phrase() -> None:
    writer = ResponseWriter(b"GET", b"1.1", keep_alive=True)
    wire = writer.head(401, [(b"content-length", b"0")], b"", close=False)
    assert wire.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
    other = ResponseWriter(b"GET", b"1.1", keep_alive=True)
    assert other.head(299, [(b"content-length", b"0")], b"", close=False).startswith(
        b"HTTP/1.1 299 \r\n"
    )  # no phrase known: none
    kept = ResponseWriter(b"GET", b"1.1", keep_alive=True)
    assert kept.head(401, [(b"content-length", b"0")], b"Go Away", close=False).startswith(
        b"HTTP/1.1 401 Go Away\r\n"
    )

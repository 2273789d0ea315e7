"""Properties of the ClientHello parser (SPEC §4.11): total, reassembly-invariant, prefix-honest."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from a3s_gateway.routing.clienthello import (
    MALFORMED_REASONS,
    MAX_CLIENT_HELLO_BYTES,
    ClientHelloResult,
    Complete,
    Malformed,
    NeedMore,
    NotTls,
    parse_client_hello,
)
from tests.property.strategies import (
    client_hellos,
    handshake_records,
    mutated_hellos,
    tls_like_bytes,
)

Hello = tuple[bytes, str, tuple[str, ...]]


def check_result(buf: bytes, result: ClientHelloResult) -> None:
    """The invariants every result obeys, whatever the input."""
    match result:
        case Complete(consumed=consumed):
            assert 0 < consumed <= min(len(buf), MAX_CLIENT_HELLO_BYTES)
        case NeedMore(at_least=at_least):
            assert len(buf) < at_least <= MAX_CLIENT_HELLO_BYTES
        case Malformed(reason=reason):
            assert reason in MALFORMED_REASONS
        case NotTls():
            assert buf[0] != 22 or buf[1] != 3


def check_total_and_final(buf: bytes, suffix: bytes) -> None:
    """Never raises; any answer but NeedMore is final (more bytes cannot change it)."""
    result = parse_client_hello(buf)
    check_result(buf, result)
    longer = parse_client_hello(buf + suffix)
    check_result(buf + suffix, longer)
    if not isinstance(result, NeedMore):
        assert longer == result
    elif len(buf + suffix) < result.at_least:
        assert not isinstance(longer, Complete)


@given(st.binary(max_size=400), st.binary(max_size=40))
@example(b"", b"")
@example(b"\x16\x03\x01\x00\x00", b"")
def test_arbitrary_bytes_never_raise(buf: bytes, suffix: bytes) -> None:
    check_total_and_final(buf, suffix)


@given(tls_like_bytes(), st.binary(max_size=40))
@example(b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00", b"")
def test_bytes_that_look_like_tls_never_raise(buf: bytes, suffix: bytes) -> None:
    check_total_and_final(buf, suffix)


@given(mutated_hellos(), st.binary(max_size=40))
def test_mutated_hellos_never_raise(buf: bytes, suffix: bytes) -> None:
    check_total_and_final(buf, suffix)


@given(client_hellos())
def test_generated_hello_parses_to_its_sni_and_alpn(hello: Hello) -> None:
    message, sni, alpn = hello
    buf = b"\x16\x03\x01" + len(message).to_bytes(2, "big") + message
    assert parse_client_hello(buf) == Complete(sni=sni, alpn=alpn, consumed=len(buf))


@given(client_hellos().flatmap(lambda h: st.tuples(st.just(h), handshake_records(h[0]))))
def test_any_split_into_records_parses_the_same(hello_and_records: tuple[Hello, bytes]) -> None:
    (_, sni, alpn), records = hello_and_records
    assert parse_client_hello(records) == Complete(sni=sni, alpn=alpn, consumed=len(records))


@given(
    client_hellos().flatmap(lambda h: st.tuples(st.just(h), handshake_records(h[0]))),
    st.binary(max_size=40),
)
def test_bytes_after_the_hello_change_nothing(
    hello_and_records: tuple[Hello, bytes], trailer: bytes
) -> None:
    (_, sni, alpn), records = hello_and_records
    expected = Complete(sni=sni, alpn=alpn, consumed=len(records))
    assert parse_client_hello(records + trailer) == expected


@given(client_hellos().flatmap(lambda h: handshake_records(h[0])))
def test_every_proper_prefix_needs_more(records: bytes) -> None:
    """Each prefix gives NeedMore(n) with len(prefix) < n <= len(records), and n only grows."""
    previous = 0
    for cut in range(len(records)):
        result = parse_client_hello(records[:cut])
        assert isinstance(result, NeedMore), (cut, result)
        assert cut < result.at_least <= len(records)
        assert result.at_least >= previous
        previous = result.at_least

"""Request-target paths: the routing path and path sanitising (SPEC §4.5).

Ring 0: pure byte work on one path; no trio, sockets, TLS or clocks, no logging.

``routing_path`` decodes percent-escapes for matching, leaving the escapes of delimiters as
received so that ``/foo%2Fbar`` never matches ``Path(`/foo/bar`)``. ``sanitize_path`` is the
entrypoint's ``sanitize_path = true`` step: it resolves dot segments on the *still escaped* path,
before routing and forwarding. Both run once per request on the hot path, so each has a scan-only
fast path for the common case (no ``%``; nothing to resolve) and otherwise splits once and joins
once; the escape tables are built at import.

Must not: decode anything but ``%XX`` (no ``+``, no Unicode normalisation), change the case of an
escape it keeps, or raise anything but ``InvalidPathEscape`` for any input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "ROUTING_KEPT_BYTES",
    "InvalidPathEscape",
    "percent_decode",
    "percent_table",
    "routing_path",
    "sanitize_path",
    "text_bytes",
]

#: Decoded bytes whose escapes the routing path keeps as received (SPEC §4.5).
ROUTING_KEPT_BYTES: Final = frozenset(b":/?#[]@!$&'()*+,;=%")

_HEX_DIGITS: Final = "0123456789abcdefABCDEF"


class InvalidPathEscape(ValueError):  # noqa: N818  # name fixed by the routing API contract
    """A ``%`` in the path is not followed by two hex digits; the data plane answers 400."""


def percent_table(kept: frozenset[int] = frozenset()) -> dict[bytes, bytes]:
    """Map each two-hex-digit pair (any case) to its decoded byte, or to itself for ``kept``.

    The value for a kept byte is the escape exactly as written (``%`` included), so hex case is
    preserved.
    """
    table: dict[bytes, bytes] = {}
    for high in _HEX_DIGITS:
        for low in _HEX_DIGITS:
            pair = (high + low).encode("ascii")
            value = int(pair, 16)
            table[pair] = b"%" + pair if value in kept else bytes((value,))
    return table


_ROUTING_TABLE: Final = percent_table(ROUTING_KEPT_BYTES)


def text_bytes(text: str) -> bytes:
    """``text`` as UTF-8; lone surrogates from ``surrogateescape`` decoding become their bytes.

    Any other lone surrogate (no wire bytes produce one) is encoded with ``surrogatepass`` so the
    conversion never raises.
    """
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def routing_path(raw_path: str | bytes) -> bytes:
    """The routing path of a raw (escaped) request-target path (SPEC §4.5).

    Every ``%XX`` is decoded except escapes of ``: / ? # [ ] @ ! $ & ' ( ) * + , ; = %``, which
    stay exactly as received (hex case included). Other bytes, UTF-8 included, pass through. A
    ``str`` is taken as UTF-8 (see ``text_bytes``).

    Raises:
        InvalidPathEscape: a ``%`` not followed by two hex digits (``%G1``, a trailing ``%4``).
    """
    raw = raw_path if isinstance(raw_path, bytes) else text_bytes(raw_path)
    if b"%" not in raw:
        return raw
    decoded = percent_decode(raw, _ROUTING_TABLE)
    if decoded is None:
        bad = next(c[:2] for c in raw.split(b"%")[1:] if c[:2] not in _ROUTING_TABLE)
        raise InvalidPathEscape(f"invalid percent-escape in the path: {(b'%' + bad)!r}")
    return decoded


def percent_decode(data: bytes, table: Mapping[bytes, bytes]) -> bytes | None:
    """Replace each ``%XX`` in ``data`` by ``table[XX]``; None if some ``%`` is not in the table.

    ``table`` comes from ``percent_table``; a ``%`` followed by fewer than two hex digits (or by
    nothing) has no entry.
    """
    head, *chunks = data.split(b"%")
    parts = [head]
    for chunk in chunks:
        decoded = table.get(chunk[:2])
        if decoded is None:
            return None
        parts.append(decoded)
        parts.append(chunk[2:])
    return b"".join(parts)


# Dot segments as they may arrive: "." and "%2e" in any case (RFC 3986 §2.3: %2E is ".").
_DOT: Final = frozenset({b".", b"%2e", b"%2E"})
_DOT_DOT: Final = frozenset(a + b for a in _DOT for b in _DOT)


def sanitize_path(path: bytes) -> bytes:
    """Collapse ``/`` runs and resolve dot segments per RFC 3986 §5.2.4 (SPEC §4.5).

    ``path`` is the raw, still escaped path; escapes other than ``%2e``/``%2E`` are untouched.
    The result always starts with ``/`` (a path that does not is treated as rooted), never
    contains ``//`` or a dot segment, and never climbs above ``/``. A trailing slash is kept, and,
    as in RFC 3986, a final ``.`` or ``..`` segment also leaves one (``/a/b/..`` → ``/a/``).
    """
    if (
        path[:1] == b"/"
        and b"//" not in path
        and b"/." not in path
        and b"/%2e" not in path
        and b"/%2E" not in path
    ):
        return path  # the common case: nothing to collapse or resolve
    kept: list[bytes] = []
    ends_with_slash = path.endswith(b"/")
    trailing = ends_with_slash
    for segment in path.split(b"/"):
        if not segment:
            continue  # a run of "/" collapses
        if segment in _DOT:
            trailing = True
        elif segment in _DOT_DOT:
            trailing = True
            if kept:
                kept.pop()
        else:
            kept.append(segment)
            trailing = ends_with_slash
    if not kept:
        return b"/"
    joined = b"/" + b"/".join(kept)
    return joined + b"/" if trailing else joined

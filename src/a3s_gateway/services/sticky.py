"""Sticky sessions (SPEC §7.6): the stateless, signed cookie that names a client's backend.

Ring 0: pure and synchronous. The cookie value ``1.<bid>.<exp>.<mac>`` names a backend by a hash
of (service, server URL) and carries its own expiry and an HMAC, so affinity needs no server-side
table and survives reloads, restarts and other gateway replicas that share the key. The caller
passes ``now`` as integer Unix seconds (wall clock, because the expiry must mean the same thing on
every replica); nothing here reads a clock.

- ``StickySettings`` is the compiled ``sticky {}`` block of one service, key included.
- ``StickyCodec`` mints and checks cookie values (the SPEC §2.8 pure API): format, MAC, expiry.
- ``StickyPool`` maps a value back to an *available* backend of one pool, and builds the
  ``Set-Cookie`` field for the backend the balancer chose.

Must not: import trio, socket, ssl or time; raise on anything a client sends (a garbled, forged,
huge or non-UTF-8 ``Cookie`` field is simply "no affinity"); choose a backend when the cookie does
not name one (the balancer does, SPEC §7.9); log or echo the key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Sequence

    from a3s_gateway.config.schema_services import Sticky
    from a3s_gateway.services.backend import Backend

__all__ = ["SameSite", "StickyCodec", "StickyPool", "StickySettings", "backend_id", "derived_key"]

SameSite: TypeAlias = Literal["lax", "strict", "none"]

#: The version field of every value this module mints or accepts.
_VERSION: Final = b"1"
_BID_BYTES: Final = 8  # SPEC §7.6: first 8 bytes of SHA-256 -> 16 hex digits
_MAC_BYTES: Final = 16  # SPEC §7.6: first 16 bytes of HMAC-SHA256 -> 22 base64url characters
_BID_LEN: Final = 2 * _BID_BYTES
_MAC_LEN: Final = 22
_MAX_EXP_DIGITS: Final = 20  # any Unix time until the year 3·10¹² fits; longer is garbage
#: Longest value worth parsing: anything longer cannot be one of ours, so it costs no hashing.
_MAX_VALUE_LEN: Final = len(_VERSION) + 1 + _BID_LEN + 1 + _MAX_EXP_DIGITS + 1 + _MAC_LEN
_HEX: Final = frozenset(b"0123456789abcdef")
_OWS: Final = b" \t"
_COOKIE: Final = b"cookie"
_SET_COOKIE: Final = b"set-cookie"
_SAME_SITE_TEXT: Final[dict[str, str]] = {"lax": "Lax", "strict": "Strict", "none": "None"}


def derived_key(service: str) -> bytes:
    """The MAC key of a service without ``secret``: SHA-256(``a3s-sticky`` LF service name).

    Every replica derives the same key, so affinity survives restarts and replicas; but anyone who
    knows the service name can derive it too and forge a cookie for another backend of the pool
    (hence the validation warning, SPEC §3.15).
    """
    return hashlib.sha256(b"a3s-sticky\n" + service.encode()).digest()


def backend_id(service: str, url: str) -> str:
    """SPEC §7.6 ``bid``: first 8 bytes of SHA-256(service LF server URL), lower-case hex."""
    digest = hashlib.sha256(service.encode() + b"\n" + url.encode()).digest()
    return digest[:_BID_BYTES].hex()


def _check_attribute(attribute: str, text: str) -> None:
    # RFC 6265 §4.1.1: path-value and domain are US-ASCII without CTLs or ";". Anything else
    # would end or inject a cookie attribute, so it is refused when the settings are built.
    if not text.isascii() or ";" in text or any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError(f"sticky {attribute} must be ASCII without control characters or ';'")


@dataclass(frozen=True, slots=True)
class StickySettings:
    """The compiled ``sticky {}`` block of one service (SPEC §3.10, §7.6).

    ``max_age`` is whole seconds; 0 means a session cookie with no server-side expiry.
    ``secure`` None means "Secure when the request arrived over TLS". ``key`` is the HMAC key and
    ``keyed_by_secret`` tells whether it came from ``secret`` (False: ``derived_key``).

    Raises ``ValueError`` when ``path`` or ``domain`` could not be written into a ``Set-Cookie``
    attribute, or ``max_age`` is negative.
    """

    cookie: str
    max_age: int
    secure: bool | None
    http_only: bool
    same_site: SameSite
    path: str
    domain: str | None
    key: bytes = field(repr=False)  # never in logs or tracebacks
    keyed_by_secret: bool

    def __post_init__(self) -> None:
        if self.max_age < 0:
            raise ValueError("sticky max_age must be >= 0")
        _check_attribute("path", self.path)
        if self.domain is not None:
            _check_attribute("domain", self.domain)

    @classmethod
    def from_config(cls, block: Sticky, service: str) -> StickySettings:
        """Compile ``block`` for ``service``; the key is ``secret`` or derived from the name."""
        secret = block.secret
        return cls(
            cookie=block.cookie,
            # Max-Age is whole seconds (RFC 6265 §5.2.2); round a sub-second duration up so a
            # non-zero max_age never turns into a session cookie.
            max_age=math.ceil(block.max_age.seconds),
            secure=block.secure,
            http_only=block.http_only,
            same_site=block.same_site,
            path=block.path,
            domain=block.domain,
            key=derived_key(service) if secret is None else secret.encode(),
            keyed_by_secret=secret is not None,
        )


class StickyCodec:
    """Mints and checks ``1.<bid>.<exp>.<mac>`` values under one key (SPEC §7.6).

    ``mac`` covers the text ``1.<bid>.<exp>`` exactly as it appears in the value, and is compared
    as its base64url text, so a value is accepted only in the one form ``encode`` writes: no
    padding, no alternative final character, no leading zeros or signs that ``int`` would accept.
    """

    __slots__ = ("_key", "_max_age")

    def __init__(self, key: bytes, max_age: int) -> None:
        self._key = key
        self._max_age = max_age

    def _mac(self, signed: bytes) -> bytes:
        digest = hmac.new(self._key, signed, hashlib.sha256).digest()[:_MAC_BYTES]
        return base64.urlsafe_b64encode(digest).rstrip(b"=")

    def encode(self, bid: str, now: int) -> str:
        """The value naming ``bid``, minted at ``now``: it expires at ``now + max_age`` (or never
        on the server side when ``max_age`` is 0, written as ``exp`` = 0)."""
        exp = 0 if self._max_age == 0 else now + self._max_age
        signed = b"%s.%s.%d" % (_VERSION, bid.encode("ascii"), exp)
        return (signed + b"." + self._mac(signed)).decode("ascii")

    def decode(self, value: bytes, now: int) -> str | None:
        """The ``bid`` of a well-formed, authentic, unexpired ``value``, else None; never raises.

        Constant-time in the MAC comparison; bounded work: values longer than any valid one are
        rejected before hashing.
        """
        if len(value) > _MAX_VALUE_LEN:
            return None
        parts = value.split(b".")
        if len(parts) != 4:  # version, bid, exp, mac
            return None
        version, bid, exp_text, mac = parts
        if version != _VERSION or len(bid) != _BID_LEN or not _HEX.issuperset(bid):
            return None
        # bytes.isdigit() is ASCII-only; reject "007" so one expiry has exactly one spelling.
        if not exp_text.isdigit() or (len(exp_text) > 1 and exp_text.startswith(b"0")):
            return None
        if not hmac.compare_digest(self._mac(value[: -len(mac) - 1]), mac):
            return None
        exp = int(exp_text)
        if exp != 0 and exp <= now:
            return None
        return bid.decode("ascii")


def _named_value(line: bytes, name: bytes) -> bytes | None:
    """The value of the first cookie called ``name`` in one ``Cookie`` field, else None.

    Pairs are split on ``;`` and trimmed of spaces and tabs (SPEC §7.6, RFC 6265 §5.2); a pair
    without ``=`` has no name and is skipped.
    """
    if name not in line:  # fast path, C speed, for the common field that lacks our cookie
        return None
    for pair in line.split(b";"):
        key, equals, value = pair.partition(b"=")
        if equals and key.strip(_OWS) == name:
            return value.strip(_OWS)
    return None


class StickyPool:
    """The backends of one service pool, addressable by their SPEC §7.6 ``bid``.

    Built once per pool and config generation (backends are identities, see ``backend.py``);
    reading ``Backend.available`` at lookup time follows health and drain changes without
    rebuilding. If two servers of the pool share a URL they share a ``bid``; the first in pool
    order wins, and the cookie of the other one names the first.

    Not yet considered (SPEC §7.6, §7.9): the ``container_concurrency`` limit ("under its
    concurrency limit") and revisions with a zero live share; the caller adds those checks when
    they exist.
    """

    __slots__ = ("_bids", "_by_bid", "_codec", "_name", "_service", "_settings", "_suffix")

    def __init__(self, service: str, backends: Sequence[Backend], settings: StickySettings) -> None:
        self._service = service
        self._settings = settings
        self._codec = StickyCodec(settings.key, settings.max_age)
        self._name = settings.cookie.encode("ascii")
        # Both directions are computed once: ``set_cookie`` runs on every non-sticky response.
        self._bids: dict[Backend, str] = {}
        self._by_bid: dict[str, Backend] = {}
        for backend in backends:
            bid = backend_id(service, backend.url.text)
            self._bids[backend] = bid
            self._by_bid.setdefault(bid, backend)
        # The attributes after the value are constant per pool (DESIGN.md §3.13 rule 8): format
        # them once, for a plain and for a TLS request.
        self._suffix = (self._attributes(tls=False), self._attributes(tls=True))

    @property
    def settings(self) -> StickySettings:
        """The settings this pool signs and writes cookies with."""
        return self._settings

    def backend_id(self, backend: Backend) -> str:
        """``backend``'s ``bid`` in this service (SPEC §7.6); any backend, not only the pool's."""
        bid = self._bids.get(backend)
        return backend_id(self._service, backend.url.text) if bid is None else bid

    def lookup(
        self, headers: Sequence[tuple[bytes, bytes]], now: int, *, panic: bool = False
    ) -> Backend | None:
        """The backend the request's sticky cookie validly names, if it is available.

        Every ``cookie`` field is read in order and the first cookie with the configured name is
        the only one considered: if it is invalid, expired, names no backend of this pool, or
        its backend is unavailable (weight 0, unhealthy, ejected: SPEC §7.1), the answer is None
        and the caller runs normal selection and sets a new cookie. In panic mode (``panic``,
        SPEC §7.1) health is ignored as the balancer ignores it: a weight-positive backend is
        honoured, so clients keep their affinity instead of being re-pinned on every request.
        Never raises.
        """
        for name, line in headers:
            if name != _COOKIE:
                continue
            value = _named_value(line, self._name)
            if value is None:
                continue
            bid = self._codec.decode(value, now)
            if bid is None:
                return None
            backend = self._by_bid.get(bid)
            if backend is None or not (backend.weight > 0 if panic else backend.available):
                return None
            return backend
        return None

    def cookie_value(self, backend: Backend, now: int) -> str:
        """The signed value ``1.<bid>.<exp>.<mac>`` naming ``backend``, minted at ``now``."""
        return self._codec.encode(self.backend_id(backend), now)

    def set_cookie(self, backend: Backend, now: int, *, tls: bool) -> tuple[bytes, bytes]:
        """The ``Set-Cookie`` field that makes the client stick to ``backend`` (SPEC §7.6).

        ``tls`` is whether the request arrived over TLS; it decides ``Secure`` when the setting
        is unset.
        """
        value = self.cookie_value(backend, now).encode("ascii")
        return (_SET_COOKIE, self._name + b"=" + value + self._suffix[tls])

    def _attributes(self, *, tls: bool) -> bytes:
        settings = self._settings
        parts = [f"; Path={settings.path}"]
        if settings.max_age:
            parts.append(f"; Max-Age={settings.max_age}")
        if settings.domain is not None:
            parts.append(f"; Domain={settings.domain}")
        # SPEC §3.10: same_site "none" forces Secure — browsers drop a SameSite=None cookie
        # without it (RFC 6265bis §5.6.7), so writing it insecure would silently lose affinity.
        # Validation already rejects "none" with secure = false; this covers direct construction.
        secure = settings.same_site == "none" or (
            tls if settings.secure is None else settings.secure
        )
        if secure:
            parts.append("; Secure")
        if settings.http_only:
            parts.append("; HttpOnly")
        parts.append(f"; SameSite={_SAME_SITE_TEXT[settings.same_site]}")
        return "".join(parts).encode("ascii")

"""The ``host[:port]`` grammar shared by listen addresses and URLs (SPEC §3.3.2).

Ring 0: pure parsing; no trio, sockets, TLS or clocks, and no name resolution (a DNS name is
only checked for shape here; it is resolved at connect time, SPEC §10.4).

The helpers raise ``GrammarError`` with a reason; the value class that called them (``Address``
in ``values``, the URL classes in ``urls``) turns it into its ``ValueError``.

Must not: raise anything but ``GrammarError`` for bad input, or name a whole value in a message
(it may carry a password; only the host part is quoted).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

from a3s_gateway.config.scalar import GrammarError, quote_value

_DNS_NAME: Final = re.compile(
    r"(?=.{1,253}\.?\Z)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?"
)
#: A host whose last label is all digits: it must be an IPv4 address, not a DNS name.
NUMERIC_LABEL: Final = re.compile(r"(?:.*\.)?[0-9]+\.?")
_PORT: Final = re.compile(r"[0-9]{1,5}")


def split_authority(authority: str) -> tuple[str, bool, str | None]:
    """``host[:port]`` or ``[v6][:port]`` → (host, bracketed, port text or None)."""
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise GrammarError('missing "]" after the IPv6 address')
        rest = authority[end + 1 :]
        if rest and not rest.startswith(":"):
            raise GrammarError('expected ":<port>" after "]"')
        return authority[1:end], True, rest[1:] if rest else None
    if authority.count(":") > 1:
        raise GrammarError('an IPv6 address must be in brackets, e.g. "[::1]:8080"')
    host, colon, port = authority.partition(":")
    return host, False, port if colon else None


def parse_port(text: str, *, minimum: int) -> int:
    """A port number ``minimum``-65535 written in decimal."""
    if _PORT.fullmatch(text) is None or not minimum <= int(text) <= 65535:
        raise GrammarError(f"the port must be a number {minimum}-65535")
    return int(text)


def parse_ip(host: str, *, bracketed: bool) -> str:
    """A normalised IP literal; IPv6 only inside brackets, IPv4 only outside."""
    if "%" in host:
        raise GrammarError('zone ids ("%...") are not allowed')
    try:
        if bracketed:
            return str(ipaddress.IPv6Address(host))
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        family = "IPv6" if bracketed else "IPv4"
        raise GrammarError(f"{quote_value(host)} is not a valid {family} address") from None


def parse_host(host: str, *, bracketed: bool) -> str:
    """An IP literal or DNS name, normalised (names lower-cased)."""
    if bracketed or NUMERIC_LABEL.fullmatch(host):
        return parse_ip(host, bracketed=bracketed)
    if not host:
        raise GrammarError("the host is empty")
    if _DNS_NAME.fullmatch(host) is None:
        raise GrammarError(f"{quote_value(host)} is not a valid host name or IP address")
    return host.lower()


def check_visible(text: str, part: str) -> None:
    """Reject anything but visible ASCII in ``text`` (the ``part`` of a URL, for the message)."""
    if any(not "!" <= ch <= "~" for ch in text):
        raise GrammarError(
            f"the {part} may contain only visible ASCII characters (percent-encode others)"
        )

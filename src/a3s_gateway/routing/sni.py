"""The SNI → certificate choice of a TLS entrypoint (SPEC §5.9), pure.

Ring 0: no ``ssl``, sockets or clocks. The shell (``server/tls.py``) loads each configured
certificate, reads its DNS names (the SAN DNS names, or the subject CN when there is no SAN)
and builds one ``SniMap`` over the list, in configuration order: ``cert_file``/``key_file``
first, then ``certificates``. Its SNI callback asks ``SniMap.choose`` for the index of the
certificate whose prebuilt context the handshake switches to.

The rule, for a server name sent by the client (lower-cased, one trailing dot ignored):

1. the first certificate that lists the name exactly;
2. else the first certificate that lists the one-label wildcard ``*.<rest>`` where the name is
   ``<label>.<rest>`` (``*.example.com`` covers ``a.example.com``, not ``a.b.example.com`` and
   not ``example.com``);
3. else the default (index 0), or ``None`` with ``sni_strict`` (the handshake then fails with
   ``unrecognized_name``).

A client that sends no server name gets the default certificate, ``sni_strict`` or not:
strictness is about names the entrypoint does not serve, and an IP-literal client has no name
to send.

Must not: import ``ssl`` or read files (the names arrive as strings).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["SniMap", "normalise_name"]


def normalise_name(name: str) -> str:
    """A DNS name as the map keys it: lower case, without one trailing dot."""
    name = name.lower()
    return name.removesuffix(".")


@dataclass(frozen=True, slots=True)
class SniMap:
    """Exact and wildcard names → certificate index; index 0 is the default."""

    #: Exact names (normalised) → the first certificate listing them.
    exact: Mapping[str, int]
    #: ``rest`` of each ``*.rest`` name → the first certificate listing it.
    wildcard: Mapping[str, int]
    #: How many certificates the map was built over (0: none, nothing can be chosen).
    count: int
    #: ``sni_strict``: an unknown name gets no certificate.
    strict: bool = False

    @classmethod
    def build(
        cls, names: Sequence[Sequence[str]], *, strict: bool = False, first: Sequence[int] = ()
    ) -> SniMap:
        """The map of certificates whose DNS names are ``names[i]``, in configuration order
        (an earlier certificate wins a name two of them list), the certificates at the
        indexes ``first`` (ACME's, SPEC §12.5) claiming their names before the others. Index
        0 stays the default."""
        exact: dict[str, int] = {}
        wildcard: dict[str, int] = {}
        claimed = [index for index in first if 0 <= index < len(names)]
        order = claimed + [index for index in range(len(names)) if index not in claimed]
        for index in order:
            listed = names[index]
            for raw in listed:
                name = normalise_name(raw)
                if name.startswith("*."):
                    rest = name[2:]
                    if rest and "*" not in rest:
                        wildcard.setdefault(rest, index)
                elif name and "*" not in name:
                    exact.setdefault(name, index)
        return cls(exact, wildcard, len(names), strict)

    def choose(self, server_name: str | None) -> int | None:
        """The index of the certificate for ``server_name`` (None: the client sent none), or
        None when there is none to offer (an unknown name with ``strict``, or no
        certificates at all)."""
        if self.count == 0:
            return None
        if not server_name:
            return 0
        name = normalise_name(server_name)
        index = self.exact.get(name)
        if index is not None:
            return index
        dot = name.find(".")
        if dot > 0:
            index = self.wildcard.get(name[dot + 1 :])
            if index is not None:
                return index
        return None if self.strict else 0

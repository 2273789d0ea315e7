"""The pending ACME challenges of one process: what the listeners answer while an order waits.

Ring 0: plain data, no IO. The ACME manager (``acme/manager.py``, through the solvers of
``acme/solvers.py``) adds a challenge when it presents one and removes it after validation; the
data plane reads it: the HTTP-01 answer on plaintext http entrypoints
(``server/acme_answer.py``: ``/.well-known/acme-challenge/<token>`` → the key authorization) and
the TLS-ALPN-01 handshake on TLS entrypoints (``server/listeners.py``: a ClientHello offering
``acme-tls/1`` for a pending name gets that name's challenge certificate). With ``--workers N``
the manager runs in the supervisor, whose board calls ``on_change`` at every change; the
supervisor pushes ``state()`` to every worker, which ``replace``-s its own board with it (SPEC
§12.2, §13.4); a solver awaits ``delivered`` before the CA is asked to validate, so that the
workers have the challenge when its request comes.

Must not: hold anything but pending challenges (a challenge is removed once its authorization is
settled, so the board stays as small as the orders in flight), or log a key authorization or a
key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["BoardState", "ChallengeBoard"]


class BoardState(msgspec.Struct, frozen=True):
    """The whole board as one value (the supervisor's push to its workers)."""

    #: HTTP-01: token → key authorization.
    http: dict[str, str] = {}
    #: TLS-ALPN-01: lower-case domain → (certificate PEM, key PEM) of its challenge certificate.
    alpn: dict[str, tuple[bytes, bytes]] = {}


def _nothing() -> None:
    pass


async def _delivered() -> None:
    return


class ChallengeBoard:
    """The pending challenges (module docstring). ``on_change`` is called after every change
    (the supervisor sets it to push the board to its workers)."""

    __slots__ = ("_alpn", "_http", "delivered", "on_change", "version")

    def __init__(self) -> None:
        self._http: dict[str, str] = {}
        self._alpn: dict[str, tuple[bytes, bytes]] = {}
        self.on_change: Callable[[], None] = _nothing
        #: Awaited after a challenge is presented, before the CA is told to validate: the
        #: supervisor sets it to wait (bounded) until every worker has been sent the board.
        self.delivered: Callable[[], Awaitable[None]] = _delivered
        #: Counts the changes (each one also calls ``on_change``).
        self.version = 0

    # -- the data plane's reads ----------------------------------------------------------

    @property
    def has_http(self) -> bool:
        """Whether any HTTP-01 challenge is pending (the hot path's one check)."""
        return bool(self._http)

    @property
    def has_alpn(self) -> bool:
        """Whether any TLS-ALPN-01 challenge is pending (then TLS entrypoints peek hellos)."""
        return bool(self._alpn)

    def http_answer(self, token: str) -> str | None:
        """The key authorization for ``token``, or None when it is not pending."""
        return self._http.get(token)

    def alpn_certificate(self, domain: str) -> tuple[bytes, bytes] | None:
        """The challenge certificate and key for ``domain`` (lower case), or None."""
        return self._alpn.get(domain)

    # -- the manager's writes ------------------------------------------------------------

    def add_http(self, token: str, key_authorization: str) -> None:
        self._http[token] = key_authorization
        self._changed()

    def remove_http(self, token: str) -> None:
        if self._http.pop(token, None) is not None:
            self._changed()

    def add_alpn(self, domain: str, certificate: tuple[bytes, bytes]) -> None:
        self._alpn[domain.lower()] = certificate
        self._changed()

    def remove_alpn(self, domain: str, certificate: tuple[bytes, bytes] | None = None) -> None:
        """Remove ``domain``'s challenge (only if it is still ``certificate``, when given: a
        newer order for the same name may have replaced it)."""
        key = domain.lower()
        found = self._alpn.get(key)
        if found is None or (certificate is not None and found != certificate):
            return
        del self._alpn[key]
        self._changed()

    # -- the supervisor's push -----------------------------------------------------------

    def state(self) -> BoardState:
        """Everything pending now, as one value."""
        return BoardState(dict(self._http), dict(self._alpn))

    def replace(self, state: BoardState) -> None:
        """Become ``state`` (a worker applying the supervisor's push)."""
        self._http = dict(state.http)
        self._alpn = dict(state.alpn)
        self._changed()

    def _changed(self) -> None:
        self.version += 1
        self.on_change()

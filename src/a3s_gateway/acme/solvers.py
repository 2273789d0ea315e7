"""The three ACME challenge types, presented and cleaned up for the issuer (SPEC §12.2).

Ring 1. Each solver is the ``Solver`` the issuer (``acme/issuer.py``) calls from its worker
thread: ``present`` before the challenge is answered, ``cleanup`` after the authorization is
settled (always). HTTP-01 and TLS-ALPN-01 put the challenge on the process's
``ChallengeBoard`` through ``trio.from_thread`` (the board belongs to the event loop; the
listeners answer from it), HTTP-01 also as ``<storage>/challenges/<token>`` for gateways that
share the storage. DNS-01 publishes the TXT record through the configured provider
(``acme/dns01.py``) and waits until the ``resolver`` sees it, at most ``propagation_wait_secs``
(then it goes on anyway: the CA's resolvers may see it sooner).

Nurseries: none. Deadlines: the DNS providers bound each call; the propagation wait is bounded
by its setting. Must not: be called on the event loop (they block), or log a key
authorization.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.acme.dns01 import build_dns_provider, wait_for_propagation
from a3s_gateway.acme.keys import dns01_value, tls_alpn_certificate

if TYPE_CHECKING:
    from a3s_gateway.acme.board import ChallengeBoard
    from a3s_gateway.acme.dns01 import DnsChallengeProvider
    from a3s_gateway.acme.issuer import Solver
    from a3s_gateway.acme.order_plan import AcmeEntry
    from a3s_gateway.acme.storage import AcmeStorage
    from a3s_gateway.config.schema_entrypoints import AcmeDns

__all__ = ["Dns01Solver", "Http01Solver", "TlsAlpn01Solver", "solver_for"]

log: Final = logging.getLogger("a3s_gateway.acme")


class Http01Solver:
    """HTTP-01: the token on the board and in the shared storage."""

    challenge_type: Final = "http-01"

    def __init__(
        self, board: ChallengeBoard, storage: AcmeStorage, token: trio.lowlevel.TrioToken
    ) -> None:
        self._board = board
        self._storage = storage
        self._token = token

    def present(self, domain: str, token: str, key_authorization: str) -> None:
        self._storage.write_challenge(token, key_authorization)
        trio.from_thread.run_sync(
            self._board.add_http, token, key_authorization, trio_token=self._token
        )
        trio.from_thread.run(self._board.delivered, trio_token=self._token)

    def cleanup(self, domain: str, token: str, key_authorization: str) -> None:
        with contextlib.suppress(trio.RunFinishedError):  # stopped: its board went with it
            trio.from_thread.run_sync(self._board.remove_http, token, trio_token=self._token)
        self._storage.remove_challenge(token)


class TlsAlpn01Solver:
    """TLS-ALPN-01: the name's challenge certificate on the board (RFC 8737)."""

    challenge_type: Final = "tls-alpn-01"

    def __init__(self, board: ChallengeBoard, token: trio.lowlevel.TrioToken) -> None:
        self._board = board
        self._token = token
        #: The certificate presented per domain, removed only if it is still that one.
        self._presented: dict[str, tuple[bytes, bytes]] = {}

    def present(self, domain: str, token: str, key_authorization: str) -> None:
        now = datetime.datetime.now(datetime.UTC)
        certificate = tls_alpn_certificate(domain, key_authorization, now)
        self._presented[domain] = certificate
        trio.from_thread.run_sync(self._board.add_alpn, domain, certificate, trio_token=self._token)
        trio.from_thread.run(self._board.delivered, trio_token=self._token)

    def cleanup(self, domain: str, token: str, key_authorization: str) -> None:
        with contextlib.suppress(trio.RunFinishedError):
            trio.from_thread.run_sync(
                self._board.remove_alpn,
                domain,
                self._presented.pop(domain, None),
                trio_token=self._token,
            )


class Dns01Solver:
    """DNS-01: the TXT record through the provider, then the propagation wait."""

    challenge_type: Final = "dns-01"

    def __init__(self, settings: AcmeDns, provider: DnsChallengeProvider | None = None) -> None:
        self._settings = settings
        self._provider = provider if provider is not None else build_dns_provider(settings)

    def present(self, domain: str, token: str, key_authorization: str) -> None:
        value = dns01_value(key_authorization)
        self._provider.present(domain, value)
        settings = self._settings
        seen = wait_for_propagation(
            domain,
            value,
            resolver=settings.resolver.text if settings.resolver is not None else None,
            max_wait=float(settings.propagation_wait_secs),
        )
        if not seen:
            log.warning(
                "acme: the TXT record of %s is not visible after %s s; asking the CA anyway",
                domain,
                settings.propagation_wait_secs,
            )

    def cleanup(self, domain: str, token: str, key_authorization: str) -> None:
        self._provider.cleanup(domain, dns01_value(key_authorization))


def solver_for(
    entry: AcmeEntry, board: ChallengeBoard, storage: AcmeStorage, token: trio.lowlevel.TrioToken
) -> Solver:
    """The solver of ``entry``'s ``acme_challenge``."""
    if entry.challenge == "http-01":
        return Http01Solver(board, storage, token)
    if entry.challenge == "tls-alpn-01":
        return TlsAlpn01Solver(board, token)
    assert entry.dns is not None  # validated: dns-01 needs acme_dns
    return Dns01Solver(entry.dns)

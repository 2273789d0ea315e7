"""TLS termination on http entrypoints: certificates by SNI, the handshake, hot reload (SPEC §5.9).

Ring 1. Three parts:

- ``Terminator``: one TLS entrypoint's loaded certificates (one ``ssl.SSLContext`` per pair,
  ``server/tls_material.py``) and their ``SniMap`` (``routing/sni.py``), held as one state
  object that a reload replaces in one assignment. Every context carries the terminator's SNI
  callback, which switches the connection's ``SSLObject.context`` to the chosen certificate's
  prebuilt context (or fails the handshake with ``unrecognized_name`` under ``sni_strict``).
  New handshakes read the current state; a connection keeps the context it was given.
- ``handshake``: the server handshake of one accepted connection, in the connection's own
  task (``server/listeners.py``), before the HTTP/1.1 driver starts. **Deadline**: one cancel
  scope of ``timeouts.handshake`` (default 10 s) around it. A failure (timeout, not TLS, no
  shared version or cipher, unknown SNI, a rejected client certificate, EOF, …) closes that
  connection only, is counted in ``a3s_tls_handshake_errors_total{entrypoint,reason}`` and
  logged at debug. trio's ``SSLStream`` does not flush the alert of a failed handshake, so
  the client sees the connection close.
- ``TlsStore``: the terminators of every TLS entrypoint, across config generations.
  ``prepare`` loads what a config needs (new or changed settings; unchanged ones are kept and
  their files re-checked) and ``install`` puts the result in place at the swap. ``refresh``
  re-checks every certificate, key and CA file by (mtime, size, inode); a changed pair is
  loaded and verified in a worker thread (``trio.to_thread.run_sync``), then used for new
  handshakes. A pair that fails to load keeps the old one, logs an error and counts in
  ``a3s_tls_reload_errors_total``; it is tried again when its files change again.
  ``a3s_tls_certificate_not_after_seconds`` is set for every loaded certificate.

**Nursery**: ``TlsStore.run`` is the hot-reload poller, a task of the gateway's *root* nursery
(``app.py``; it lives as long as the process, across config generations, like the store) that
calls ``refresh`` every ``POLL_INTERVAL`` (10 s). Config reloads (file change, SIGHUP,
``POST /reload``) refresh as well, through ``prepare``. Refreshes are serialised by a lock.

Must not: parse HTTP, or block the event loop (files are read only in worker threads).
"""

from __future__ import annotations

import logging
import ssl
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.errors import StartError
from a3s_gateway.routing.sni import SniMap, normalise_name
from a3s_gateway.server.downstream import ConnInfo
from a3s_gateway.server.tls_material import (
    CertificateError,
    LoadedCertificate,
    Stamp,
    fallback_pair,
    load_certificate,
    stamp,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from a3s_gateway.observability.gateway_metrics import GatewayMetrics
    from a3s_gateway.runtime.compile import EntrypointRuntime, TlsSettings

__all__ = [
    "HANDSHAKE_REASONS",
    "POLL_INTERVAL",
    "CertificateInfo",
    "Terminator",
    "TlsStore",
    "handshake",
]

log: Final = logging.getLogger("a3s_gateway.tls")

#: How often the poller re-checks the certificate, key and CA files (SPEC §5.9).
POLL_INTERVAL: Final = 10.0

#: The ``reason`` label values of ``a3s_tls_handshake_errors_total``.
HANDSHAKE_REASONS: Final = (
    "timeout",
    "not_tls",
    "protocol_version",
    "no_shared_cipher",
    "unknown_sni",
    "bad_certificate",
    "client_alert",
    "eof",
    "other",
)

#: OpenSSL reason codes → handshake error reasons (anything else is ``other``).
_SSL_REASONS: Final = {
    "HTTP_REQUEST": "not_tls",
    "HTTPS_PROXY_REQUEST": "not_tls",
    "WRONG_VERSION_NUMBER": "not_tls",
    "UNKNOWN_PROTOCOL": "not_tls",
    "PACKET_LENGTH_TOO_LONG": "not_tls",
    "RECORD_LENGTH_MISMATCH": "not_tls",
    "UNSUPPORTED_PROTOCOL": "protocol_version",
    "VERSION_TOO_LOW": "protocol_version",
    "TLSV1_ALERT_PROTOCOL_VERSION": "protocol_version",
    "NO_SHARED_CIPHER": "no_shared_cipher",
    "NO_SUITABLE_SIGNATURE_ALGORITHM": "no_shared_cipher",
    "NO_SHARED_GROUPS": "no_shared_cipher",
    "CALLBACK_FAILED": "unknown_sni",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "bad_certificate",
    "CERTIFICATE_VERIFY_FAILED": "bad_certificate",
}

#: ``SSLObject.version()`` → the ``tls_version`` fact (access log, SPEC §9.2).
_VERSIONS: Final = {"TLSv1.2": "1.2", "TLSv1.3": "1.3"}

#: The short names of RFC 4514 for the subject attributes ``getpeercert`` spells out.
_SUBJECT_KEYS: Final = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
    "domainComponent": "DC",
    "userId": "UID",
}


class _Hello:
    """What the SNI callback learned about the handshake running in this task."""

    __slots__ = ("sni", "unknown_sni")

    def __init__(self) -> None:
        self.sni = ""
        self.unknown_sni = False


#: The handshake of the current task: ``handshake`` sets it around ``do_handshake``, and the
#: SNI callback, which OpenSSL calls synchronously inside it, fills it in.
_HELLO: ContextVar[_Hello | None] = ContextVar("a3s_tls_hello", default=None)


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """One loaded certificate as the management API shows it (``/entrypoints``)."""

    names: tuple[str, ...]
    not_after: float


@dataclass(frozen=True, slots=True)
class _State:
    """What new handshakes use: the certificates in configuration order and their map."""

    certificates: tuple[LoadedCertificate, ...]
    sni: SniMap
    #: The client CA bundle's stamp when the certificates were loaded (None: no bundle).
    ca_stamp: Stamp


class Terminator:
    """One TLS entrypoint's certificates (module docstring)."""

    __slots__ = ("_state", "name", "settings")

    def __init__(self, name: str, settings: TlsSettings, state: _State) -> None:
        self.name = name
        self.settings = settings
        self._state = state
        self._adopt(state)

    @property
    def context(self) -> ssl.SSLContext:
        """The default certificate's context: the one every handshake starts with."""
        return self._state.certificates[0].context

    @property
    def certificates(self) -> tuple[LoadedCertificate, ...]:
        return self._state.certificates

    def _adopt(self, state: _State) -> None:
        for certificate in state.certificates:
            certificate.context.sni_callback = self._on_sni
        self._state = state

    def _on_sni(
        self, connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext
    ) -> int | None:
        """OpenSSL's servername callback: switch to the chosen certificate's context."""
        state = self._state
        index = state.sni.choose(server_name)
        hello = _HELLO.get()
        if hello is not None:
            hello.sni = normalise_name(server_name) if server_name else ""
            hello.unknown_sni = index is None
        if index is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        chosen = state.certificates[index].context
        if chosen is not context:
            connection.context = chosen
        return None

    def check(self) -> tuple[_State, list[str]] | None:
        """Blocking (a worker thread): reload the pairs whose files changed. Returns the new
        state and the errors of pairs that kept their old certificate, or None when no file
        changed."""
        state = self._state
        settings = self.settings
        ca = settings.client_ca_file
        ca_stamp = stamp(ca) if ca is not None and settings.client_auth != "none" else None
        ca_changed = ca_stamp != state.ca_stamp
        certificates: list[LoadedCertificate] = []
        errors: list[str] = []
        changed = ca_changed
        for old in state.certificates:
            stamps = (stamp(old.cert_file), stamp(old.key_file))
            if stamps == old.stamps and not ca_changed:
                certificates.append(old)
                continue
            changed = True
            try:
                certificates.append(load_certificate((old.cert_file, old.key_file), settings))
            except CertificateError as error:
                errors.append(str(error))
                # Tried once per change: the files' new stamps, the old context.
                certificates.append(replace(old, stamps=stamps))
        if not changed:
            return None
        return _state(tuple(certificates), settings, ca_stamp), errors

    def install(self, state: _State) -> None:
        """Use ``state`` for new handshakes (on the event loop)."""
        self._adopt(state)


def _state(
    certificates: tuple[LoadedCertificate, ...], settings: TlsSettings, ca_stamp: Stamp
) -> _State:
    offset = 1 if settings.fallback is not None else 0  # (the fallback comes first)
    sni = SniMap.build(
        [c.names for c in certificates],
        strict=settings.sni_strict,
        first=[index + offset for index in settings.preferred],
    )
    return _State(certificates, sni, ca_stamp)


def build_terminator(name: str, settings: TlsSettings) -> Terminator:
    """Blocking (a worker thread): load every pair of ``settings``; ``CertificateError`` if
    any cannot be loaded."""
    ca = settings.client_ca_file
    ca_stamp = stamp(ca) if ca is not None and settings.client_auth != "none" else None
    pairs = settings.pairs
    if settings.fallback is not None:
        pairs = (fallback_pair(settings.fallback), *pairs)
    if not pairs:
        raise CertificateError("no certificate configured")
    certificates = tuple(load_certificate(pair, settings) for pair in pairs)
    return Terminator(name, settings, _state(certificates, settings, ca_stamp))


#: The key suffix of a TLS http entrypoint's second terminator, the one its TCP routers
#: terminate with: the same certificates, no ALPN offered (the backend speaks the protocol, not
#: the gateway, so agreeing on ``h2`` there would be a lie).
TCP_VARIANT: Final = "\0tcp"


def tcp_key(name: str) -> str:
    """The ``TlsStore`` key of ``name``'s terminator for TCP routers (``TCP_VARIANT``)."""
    return name + TCP_VARIANT


class TlsStore:
    """The terminators of every TLS entrypoint, and their hot reload (module docstring)."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics
        self._terminators: dict[str, Terminator] = {}
        self._lock = trio.Lock()

    def get(self, name: str) -> Terminator | None:
        """The terminator of entrypoint ``name`` (None: not a TLS entrypoint)."""
        return self._terminators.get(name)

    def certificates(self, name: str) -> tuple[CertificateInfo, ...]:
        """The certificates ``name`` serves now, in configuration order."""
        terminator = self._terminators.get(name)
        if terminator is None:
            return ()
        return tuple(CertificateInfo(c.names, c.not_after) for c in terminator.certificates)

    async def prepare(self, entrypoints: Mapping[str, EntrypointRuntime]) -> dict[str, Terminator]:
        """The terminators ``entrypoints`` need: kept when their settings are unchanged (and
        refreshed), else loaded in a worker thread. Raises ``StartError`` naming the
        entrypoint and file when a new certificate cannot be loaded; nothing is installed."""
        await self.refresh()
        prepared: dict[str, Terminator] = {}
        for key, settings in _wanted(entrypoints):
            name = key.removesuffix(TCP_VARIANT)
            current = self._terminators.get(key)
            if current is not None and current.settings == settings:
                prepared[key] = current
                continue
            try:
                prepared[key] = await trio.to_thread.run_sync(build_terminator, name, settings)
            except CertificateError as error:
                raise StartError(f'entrypoint "{name}" tls: {error}') from error
        return prepared

    def install(self, prepared: dict[str, Terminator]) -> None:
        """Serve new connections with ``prepared`` (``prepare``'s result), at the swap."""
        self._terminators = prepared
        self._publish()

    async def refresh(self) -> None:
        """Re-check every file now; reload what changed (module docstring)."""
        async with self._lock:
            changed = False
            for name, terminator in list(self._terminators.items()):
                result = await trio.to_thread.run_sync(terminator.check)
                if result is None:
                    continue
                state, errors = result
                terminator.install(state)
                changed = True
                if name.endswith(TCP_VARIANT):  # the same files: counted and logged once
                    continue
                for error in errors:
                    self._metrics.tls_reload_error(name)
                    log.error(
                        "entrypoint %s: certificate not reloaded, keeping the old one: %s",
                        name,
                        error,
                    )
                if len(errors) < len(state.certificates):
                    log.info("entrypoint %s: certificates reloaded", name)
            if changed:
                self._publish()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The hot-reload poller: ``refresh`` every ``POLL_INTERVAL`` until cancelled."""
        task_status.started()
        while True:
            await trio.sleep(POLL_INTERVAL)
            await self.refresh()

    def _publish(self) -> None:
        self._metrics.tls_certificates(
            (name, certificate.label, certificate.not_after)
            for name, terminator in self._terminators.items()
            if not name.endswith(TCP_VARIANT)
            for certificate in terminator.certificates
        )


def _wanted(entrypoints: Mapping[str, EntrypointRuntime]) -> list[tuple[str, TlsSettings]]:
    """(store key, settings) of every terminator ``entrypoints`` need: one per TLS
    entrypoint, and for a TLS http entrypoint that TCP routers share, one without ALPN."""
    wanted: list[tuple[str, TlsSettings]] = []
    for name, entry in entrypoints.items():
        settings = entry.tls_settings
        if settings is None:
            continue
        wanted.append((name, settings))
        if entry.shares_tcp:
            wanted.append((tcp_key(name), replace(settings, alpn=())))
    return wanted


def _reason(error: BaseException, hello: _Hello) -> str:
    """The ``reason`` label of a failed handshake."""
    if hello.unknown_sni:
        return "unknown_sni"
    cause = error.__cause__ if isinstance(error, trio.BrokenResourceError) else error
    if isinstance(cause, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return "eof"
    if cause is None or (isinstance(cause, OSError) and not isinstance(cause, ssl.SSLError)):
        return "eof"  # the transport ended or was reset
    if isinstance(cause, ssl.SSLError):
        code = str(cause.reason)
        known = _SSL_REASONS.get(code)
        if known is not None:
            return known
        if code.startswith(("TLSV1_ALERT", "SSLV3_ALERT", "TLSV13_ALERT")):
            return "client_alert"
    return "other"


async def handshake(
    stream: trio.abc.Stream,
    terminator: Terminator,
    info: ConnInfo,
    entry: EntrypointRuntime,
    metrics: GatewayMetrics,
) -> tuple[trio.SSLStream[trio.abc.Stream], ConnInfo] | None:
    """Run the server handshake on ``stream`` within ``timeouts.handshake``: the TLS stream
    and the connection's facts, or None after a failure (counted, logged at debug; the
    connection is closed)."""
    wrapped = trio.SSLStream(stream, terminator.context, server_side=True, https_compatible=True)
    reason: str | None = None
    hello = _Hello()
    token = _HELLO.set(hello)
    with trio.move_on_after(entry.handshake_timeout) as scope:
        try:
            await wrapped.do_handshake()
        except (trio.BrokenResourceError, ssl.SSLError) as error:
            reason = _reason(error, hello)
        finally:
            _HELLO.reset(token)
    if scope.cancelled_caught:
        reason = "timeout"
    if reason is not None:
        log.debug("tls handshake from %s on %s failed: %s", info.peer_ip, info.entrypoint, reason)
        metrics.tls_handshake_error(info.entrypoint, reason)
        await trio.aclose_forcefully(wrapped)
        return None
    return wrapped, _facts(wrapped, hello.sni, info)


def _facts(connection: trio.SSLStream[trio.abc.Stream], sni: str, info: ConnInfo) -> ConnInfo:
    """``info`` with the handshake's facts (``ConnInfo``'s TLS fields)."""
    version = connection.version() or ""
    subject = ""
    peer = connection.getpeercert()
    if peer:
        subject = _subject_text(peer.get("subject", ()))
    return ConnInfo(
        info.entrypoint,
        info.peer_ip,
        info.peer_port,
        True,
        _VERSIONS.get(version, version),
        sni,
        connection.selected_alpn_protocol() or "",
        subject,
    )


def _subject_text(subject: object) -> str:
    """``getpeercert()``'s subject as RFC 4514 text (last RDN first)."""
    parts: list[str] = []
    if isinstance(subject, tuple):
        for rdn in reversed(subject):
            for key, value in rdn:
                text = str(value).replace("\\", "\\\\").replace(",", "\\,").replace("+", "\\+")
                parts.append(f"{_SUBJECT_KEYS.get(key, key)}={text}")
    return ",".join(parts)

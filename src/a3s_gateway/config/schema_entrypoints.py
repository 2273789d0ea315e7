"""Schema of ``entrypoints "<name>"`` and their ``tls`` blocks (SPEC §3.7, §3.8).

Ring 0: type definitions only. Fields whose default depends on the entrypoint's protocol, and
fields that apply to only some protocols, default to ``None`` ("not set") so that
``semantic.py`` can tell a field the user wrote from a default and reject fields that do not
apply; ``runtime.py`` resolves the effective values. Must not: perform cross-field checks.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from a3s_gateway.config.block import (
    Block,
    NonNegativeInt,
    PositiveInt,
)
from a3s_gateway.config.values import Address, Duration, DurationOrZero, HttpUrl, IpNetwork

Protocol = Literal["http", "tcp", "udp"]


class ForwardedHeaders(Block, frozen=True, kw_only=True):
    """``forwarded_headers {}``: which peers may supply ``X-Forwarded-*`` and ``Forwarded``."""

    trusted_ips: tuple[IpNetwork, ...] = ()
    insecure: bool = False


class ProxyProtocol(Block, frozen=True, kw_only=True):
    """``proxy_protocol {}``: peers whose PROXY v1/v2 header is honoured."""

    trusted_ips: Annotated[tuple[IpNetwork, ...], msgspec.Meta(min_length=1)]


class EntrypointTimeouts(Block, frozen=True, kw_only=True):
    """``timeouts {}``; ``None`` means the protocol's default (SPEC §3.7 table)."""

    handshake: Duration | None = None
    request_head: Duration | None = None
    idle: DurationOrZero | None = None
    body_idle: Duration | None = None
    request_body: Duration | None = None
    peek: Duration | None = None


class EntrypointLimits(Block, frozen=True, kw_only=True):
    """``limits {}`` of an HTTP entrypoint (SPEC §3.7)."""

    max_request_line_bytes: PositiveInt = 8192
    max_header_bytes: PositiveInt = 32768
    max_headers: PositiveInt = 100
    max_concurrent_requests: PositiveInt = 10000
    max_requests_per_connection: NonNegativeInt = 0


class Http2Settings(Block, frozen=True, kw_only=True):
    """``http2 {}`` of an HTTP entrypoint (SPEC §3.7)."""

    max_concurrent_streams: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100
    initial_window_size: Annotated[int, msgspec.Meta(ge=65535, le=16 * 1024 * 1024)] = 65535
    connection_window_size: Annotated[int, msgspec.Meta(ge=65535, le=2**31 - 1)] = 1048576
    max_frame_size: Annotated[int, msgspec.Meta(ge=16384, le=16777215)] = 16384
    max_header_list_size: PositiveInt = 32768
    max_resets_per_second: PositiveInt = 200


class CertificatePair(Block, frozen=True, kw_only=True):
    """One ``{cert_file, key_file}`` pair for SNI selection."""

    cert_file: str
    key_file: str


AcmeDnsProvider = Literal["cloudflare", "route53", "rfc2136", "challtestsrv"]


class AcmeDns(Block, frozen=True, kw_only=True):
    """``acme_dns {}``: DNS-01 provider settings; ``None`` = not set (fields are per provider)."""

    provider: AcmeDnsProvider
    api_token: str | None = None
    zone_id: str | None = None
    nameserver: Address | None = None
    tsig_key_name: str | None = None
    tsig_secret: str | None = None
    tsig_algorithm: Literal["hmac-sha256", "hmac-sha512", "hmac-sha1"] | None = None
    management_url: HttpUrl | None = None
    resolver: Address | None = None
    propagation_wait_secs: PositiveInt = 60


class Tls(Block, frozen=True, kw_only=True):
    """``tls {}`` inside an entrypoint (SPEC §3.8)."""

    cert_file: str | None = None
    key_file: str | None = None
    certificates: tuple[CertificatePair, ...] = ()
    min_version: Literal["1.2", "1.3"] = "1.2"
    alpn: tuple[str, ...] | None = None
    client_auth: Literal["none", "request", "require"] = "none"
    client_ca_file: str | None = None
    sni_strict: bool = False
    acme: bool = False
    acme_email: str | None = None
    acme_domains: tuple[str, ...] = ()
    acme_staging: bool = False
    acme_directory_url: HttpUrl | None = None
    acme_ca_file: str | None = None
    acme_storage_path: str = "/etc/gateway/acme"
    acme_challenge: Literal["http-01", "tls-alpn-01", "dns-01"] = "http-01"
    acme_renewal_days: Annotated[int, msgspec.Meta(ge=1, le=60)] = 30
    acme_key_type: Literal["ec256", "ec384", "rsa2048", "rsa4096"] = "ec256"
    acme_dns: AcmeDns | None = None


class Entrypoint(Block, frozen=True, kw_only=True):
    """``entrypoints "<name>"`` (SPEC §3.7)."""

    address: Address
    protocol: Protocol = "http"
    tls: Tls | None = None
    max_connections: PositiveInt | None = None
    tcp_allowed_ips: tuple[IpNetwork, ...] | None = None
    udp_session_timeout_secs: PositiveInt | None = None
    udp_max_sessions: PositiveInt | None = None
    redirect_to: str | None = None
    h2c: bool | None = None
    via: bool | None = None
    sanitize_path: bool | None = None
    forwarded_headers: ForwardedHeaders | None = None
    proxy_protocol: ProxyProtocol | None = None
    timeouts: EntrypointTimeouts | None = None
    limits: EntrypointLimits | None = None
    http2: Http2Settings | None = None


#: Which entrypoint fields apply to which protocols (SPEC §3.7 "Applies to"); others: all.
ENTRYPOINT_FIELD_PROTOCOLS: dict[str, frozenset[str]] = {
    "tls": frozenset({"http", "tcp"}),
    "max_connections": frozenset({"http", "tcp"}),
    "tcp_allowed_ips": frozenset({"http", "tcp"}),
    "udp_session_timeout_secs": frozenset({"udp"}),
    "udp_max_sessions": frozenset({"udp"}),
    "redirect_to": frozenset({"http"}),
    "h2c": frozenset({"http"}),
    "via": frozenset({"http"}),
    "sanitize_path": frozenset({"http"}),
    "forwarded_headers": frozenset({"http"}),
    "proxy_protocol": frozenset({"http", "tcp"}),
    "limits": frozenset({"http"}),
    "http2": frozenset({"http"}),
}

#: Which ``timeouts`` fields apply to which protocols (SPEC §3.7 timeouts table).
TIMEOUT_FIELD_PROTOCOLS: dict[str, frozenset[str]] = {
    "handshake": frozenset({"http", "tcp"}),
    "request_head": frozenset({"http"}),
    "idle": frozenset({"http", "tcp"}),
    "body_idle": frozenset({"http"}),
    "request_body": frozenset({"http"}),
    "peek": frozenset({"tcp"}),
}

#: Which ``acme_dns`` fields belong to which DNS provider (SPEC §3.8).
ACME_DNS_FIELD_PROVIDERS: dict[str, frozenset[str]] = {
    "api_token": frozenset({"cloudflare", "route53"}),
    "zone_id": frozenset({"cloudflare", "route53"}),
    "nameserver": frozenset({"rfc2136"}),
    "tsig_key_name": frozenset({"rfc2136"}),
    "tsig_secret": frozenset({"rfc2136"}),
    "tsig_algorithm": frozenset({"rfc2136"}),
    "management_url": frozenset({"challtestsrv"}),
}

"""The config schema root: ``Config`` and the singleton blocks (SPEC §3.6, §3.12–3.14).

Ring 0: type definitions plus the redacting JSON rendering of a config. The section schemas live
beside this module (``schema_entrypoints``, ``schema_routers``, ``schema_services``,
``schema_middlewares``) to keep each file small; this module re-exports the names library users
need. Must not: read files or the environment, or perform cross-field checks.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Annotated, Final, Literal, TypeAlias

import msgspec

from a3s_gateway.config.block import Block, Names, Port, PositiveInt
from a3s_gateway.config.redaction import REDACTED, Redactor
from a3s_gateway.config.schema_entrypoints import Entrypoint, Tls
from a3s_gateway.config.schema_middlewares import MIDDLEWARE_TYPES, Middleware
from a3s_gateway.config.schema_routers import Router, TcpRouter, UdpRouter
from a3s_gateway.config.schema_services import Service
from a3s_gateway.config.values import (
    ENV_NAME_PATTERN,
    OPTIONAL_HEADER_NAME_PATTERN,
    PATH_PREFIX_PATTERN,
    Address,
    Duration,
    HttpUrl,
    IpNetwork,
    RedisUrl,
    enc_hook,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "MIDDLEWARE_TYPES",
    "Config",
    "DiscoveryProvider",
    "DnsProvider",
    "Entrypoint",
    "FileProvider",
    "KubernetesProvider",
    "Management",
    "Middleware",
    "Observability",
    "Providers",
    "Router",
    "Service",
    "TcpRouter",
    "Tls",
    "UdpRouter",
]


#: An environment variable's name.
EnvName: TypeAlias = Annotated[str, msgspec.Meta(pattern=ENV_NAME_PATTERN)]


#: Where a provider object came from (``Config.provider_sources``), in the route order's
#: tie-break order after the files (SPEC §4.7).
ProviderSource: TypeAlias = Literal["discovery", "kubernetes", "kubernetes-crd", "dns", "acme"]


class FileProvider(Block, frozen=True, kw_only=True):
    """``providers { file {} }``: watch the config file and merge a conf.d directory."""

    watch: bool = True
    directory: str | None = None
    debounce: Duration = Duration("500ms")


class DnsService(Block, frozen=True, kw_only=True):
    """``providers { dns { services "<name>" {} } }``: backends from DNS records."""

    hostname: str
    port: Port | None = None
    scheme: Literal["http", "https", "h2c", "ws", "wss", "tcp", "tls", "udp"] = "http"
    record_type: Literal["A+AAAA", "A", "AAAA", "SRV"] = "A+AAAA"
    weight: Annotated[int, msgspec.Meta(ge=0)] = 1


class DnsProvider(Block, frozen=True, kw_only=True):
    """``providers { dns {} }`` (SPEC §10.4)."""

    refresh_interval_secs: PositiveInt = 30
    nameservers: Names = ()
    services: dict[str, DnsService] = {}


class DiscoverySeed(Block, frozen=True, kw_only=True):
    """One ``{ url = "..." }`` entry of ``discovery.seeds``."""

    url: HttpUrl


class DiscoveryProvider(Block, frozen=True, kw_only=True):
    """``providers { discovery {} }`` (SPEC §10.5)."""

    seeds: Annotated[tuple[DiscoverySeed, ...], msgspec.Meta(min_length=1)]
    poll_interval_secs: PositiveInt = 30
    timeout_secs: PositiveInt = 5
    entrypoints: Names = ()
    remove_after_failures: PositiveInt = 3
    max_document_bytes: PositiveInt = 1048576


class KubernetesProvider(Block, frozen=True, kw_only=True):
    """``providers { kubernetes {} }`` (SPEC §10.6)."""

    namespace: str = ""
    label_selector: str = ""
    watch_interval_secs: PositiveInt = 30
    ingress: bool = True
    ingress_class: str = ""
    ingress_route_crd: bool = False
    use_endpoints: bool = True
    entrypoints: Names = ()
    tls_entrypoints: Names = ()
    api_server: str = ""
    kubeconfig: str | None = None


class Providers(Block, frozen=True, kw_only=True):
    """``providers {}`` (SPEC §3.12)."""

    file: FileProvider | None = None
    dns: DnsProvider | None = None
    discovery: DiscoveryProvider | None = None
    kubernetes: KubernetesProvider | None = None


class ManagementTls(Block, frozen=True, kw_only=True):
    """``management { tls {} }``."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None
    require_client_cert: bool = False
    min_version: Literal["1.2", "1.3"] = "1.2"


class Management(Block, frozen=True, kw_only=True):
    """``management {}``: the management API listener (SPEC §3.13, §9.6)."""

    enabled: bool = True
    address: Address = Address("127.0.0.1:9901")
    path_prefix: Annotated[str, msgspec.Meta(pattern=PATH_PREFIX_PATTERN)] = "/api/gateway"
    auth_token_env: Annotated[str, msgspec.Meta(pattern=ENV_NAME_PATTERN)] = (
        "A3S_GATEWAY_ADMIN_TOKEN"
    )
    allowed_ips: tuple[IpNetwork, ...] = (IpNetwork("127.0.0.1"), IpNetwork("::1"))
    tls: ManagementTls | None = None


class Observability(Block, frozen=True, kw_only=True):
    """``observability {}`` (SPEC §3.14)."""

    metrics_enabled: bool = True
    access_log_enabled: bool = True
    tracing_enabled: bool = True
    access_log_path: str = ""
    access_log_include_query: bool = False
    access_log_buffer: Annotated[int, msgspec.Meta(ge=100)] = 10000
    request_id_header: Annotated[str, msgspec.Meta(pattern=OPTIONAL_HEADER_NAME_PATTERN)] = (
        "X-Request-Id"
    )
    tracing_propagation: tuple[Literal["w3c", "b3", "b3multi"], ...] = ("w3c",)
    tracing_sample_rate: Annotated[float, msgspec.Meta(ge=0, le=1)] = 1.0
    otlp_endpoint: str = ""
    service_name: Annotated[str, msgspec.Meta(min_length=1)] = "a3s-gateway"


class Config(Block, frozen=True, kw_only=True, weakref=True):
    """A whole gateway configuration, validated (SPEC §3).

    Immutable: treat the label maps as read-only. ``to_json()`` renders it with secrets
    redacted (SPEC §14.4).
    """

    entrypoints: dict[str, Entrypoint] = {}
    routers: dict[str, Router] = {}
    tcp_routers: dict[str, TcpRouter] = {}
    udp_routers: dict[str, UdpRouter] = {}
    services: dict[str, Service] = {}
    middlewares: dict[str, Middleware] = {}
    providers: Providers | None = None
    management: Management | None = None
    observability: Observability = Observability()
    shutdown_timeout_secs: Annotated[int, msgspec.Meta(ge=1, le=3600)] = 30
    #: The HTTP/1.1 parser engine: llhttp (httptools, the default) or h11 (the reference the
    #: default is differential-tested against). Main file only.
    http1_parser: Literal["llhttp", "h11"] = "llhttp"
    #: Variables whose values are not secrets: shown in ``/config``, logs and problems (SPEC
    #: §14.4). Main file only; literal names, never interpolated.
    public_env: tuple[EnvName, ...] = ()
    #: Which dynamic provider supplied an object (``"routers/<name>"``, ``"services/<name>"``,
    #: ``"certificates/<cert_file>"`` → provider), set by the reload path's merge
    #: (``providers/merge.py``) and read for the route order's tie-break (SPEC §4.7), the
    #: API's ``source`` and the SNI precedence of ACME certificates (SPEC §12.5). Never
    #: written in a file (the loader refuses it); objects not listed come from the files.
    provider_sources: dict[str, ProviderSource] = {}

    def to_builtins(self, *, redact: bool = True) -> dict[str, object]:
        """Plain builtins (the HCL shape), with secrets replaced by ``"<redacted>"``: the
        secret fields, sensitive header values, and every interpolated value the loader
        recorded (``remember_secrets``), wherever it is in a string."""
        tree = msgspec.to_builtins(self, enc_hook=_enc_hook if redact else enc_hook)
        if redact:
            tree = _redact(tree, redactor_of(self))
        assert isinstance(tree, dict)
        return tree

    def to_json(self, *, redact: bool = True) -> bytes:
        """JSON rendering (management API ``/config``, ``validate --format json``)."""
        return _json.encode(self.to_builtins(redact=redact))


#: The top-level labelled block maps (SPEC §3.6), in SPEC order; conf.d may spread them over files.
LABELLED_SECTIONS: Final = (
    "entrypoints",
    "routers",
    "tcp_routers",
    "udp_routers",
    "services",
    "middlewares",
)

_json: Final = msgspec.json.Encoder(order="deterministic")
#: Fields whose values are secrets wherever they appear (SPEC §14.4).
SECRET_FIELDS: Final = frozenset(
    {"keys", "password", "value", "secret", "api_token", "tsig_secret", "env"}
)


def _enc_hook(obj: object) -> object:
    if isinstance(obj, RedisUrl):
        return obj.redacted()
    return enc_hook(obj)


#: Header names whose configured values are secrets (SPEC §14.4), and name parts that are.
_SECRET_HEADERS: Final = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
_SECRET_HEADER_PARTS: Final = ("token", "secret", "key", "password")
#: The interpolated values of each live ``Config`` (by id; dropped when the config is
#: collected), ready to hide.
_SECRET_STRINGS: dict[int, Redactor] = {}
_NOTHING: Final = Redactor()


def remember_secrets(config: Config, secrets: Iterable[str]) -> None:
    """Record the values interpolated into ``config`` (``InterpolationResult.secrets``), so
    that its redacted renderings hide them wherever they ended up."""
    known = secrets_of(config)
    added = frozenset(secrets) - known
    if not any(added):
        return
    key = id(config)
    if key not in _SECRET_STRINGS:
        weakref.finalize(config, _SECRET_STRINGS.pop, key, None)
    _SECRET_STRINGS[key] = Redactor(known | added)


def secrets_of(config: Config) -> frozenset[str]:
    """What ``remember_secrets`` recorded for ``config``."""
    return redactor_of(config).secrets


def redactor_of(config: Config) -> Redactor:
    """A ``Redactor`` for what ``remember_secrets`` recorded for ``config``: apply it to
    anything that may quote the config's values (messages, documents, logs)."""
    return _SECRET_STRINGS.get(id(config), _NOTHING)


def _sensitive_header(name: object) -> bool:
    if not isinstance(name, str):
        return False
    lowered = name.lower()
    return lowered in _SECRET_HEADERS or any(part in lowered for part in _SECRET_HEADER_PARTS)


def _redact(node: object, secrets: Redactor) -> object:
    """A copy of a ``to_builtins`` tree with the secrets hidden (tuples become lists)."""
    if isinstance(node, str):
        return secrets.text(node)
    if isinstance(node, list | tuple):
        return [_redact(item, secrets) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[object, object] = {}
    for key, value in node.items():
        if key in SECRET_FIELDS and value is not None:
            out[key] = _redacted_shape(value)
        elif isinstance(key, str) and key.endswith("headers") and isinstance(value, dict):
            out[key] = {
                name: REDACTED if _sensitive_header(name) else _redact(text, secrets)
                for name, text in value.items()
            }
        else:
            out[key] = _redact(value, secrets)
    return out


def _redacted_shape(value: object) -> object:
    if isinstance(value, dict):
        return dict.fromkeys(value, REDACTED)
    if isinstance(value, list | tuple):
        return [REDACTED for _ in value]
    return REDACTED


def middleware_names() -> tuple[str, ...]:
    """Every middleware ``type`` name, in SPEC order."""
    return tuple(MIDDLEWARE_TYPES)

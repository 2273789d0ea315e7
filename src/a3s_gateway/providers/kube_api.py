"""Access to the Kubernetes API for the Kubernetes provider (SPEC §10.6): where the API server
is and how to authenticate (``load_access``), and a small HTTPS client with the two calls the
provider makes, a paginated LIST (``KubeClient.list``) and a streaming WATCH
(``KubeClient.watch``). Plain HTTP/1.1 over h11, TLS through ``ssl``, one connection per call
(``Connection: close``); why no client library: see ``providers/kubernetes.py``.

Where the API server is, in this order:

- ``kubeconfig`` set: that file (YAML). Its ``current-context`` names a cluster (``server``,
  ``certificate-authority`` or ``certificate-authority-data``, ``insecure-skip-tls-verify``,
  ``tls-server-name``) and a user (``token``, ``tokenFile``, ``client-certificate[-data]`` with
  ``client-key[-data]``). Relative paths are relative to the file's directory, as kubectl
  reads them. ``exec`` and ``auth-provider`` users (cloud plugins), basic auth and
  ``proxy-url`` are refused with an error naming them. A certificate or key given as
  ``-data`` is written to a private temporary file (``mkstemp``: mode 0600) only for as long
  as ``ssl`` takes to load it, then removed. ``api_server``, when also set, replaces the
  cluster's ``server`` (kubectl's ``--server``).
- ``api_server`` set: that URL; the service account's token and ``ca.crt`` are used when the
  files exist (else no authentication and the system's trust store).
- otherwise in-cluster: ``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`` with the
  service account's ``token`` and ``ca.crt``.

A token file (the service account's, a kubeconfig ``tokenFile``) is read again at every
request, so rotated (projected) tokens work. The bearer token travels over https only, except
a kubeconfig that pairs a token with an ``http://`` server: the operator wrote both. (The
service account's token never goes to an ``http://`` ``api_server`` such as ``kubectl proxy``,
which authenticates itself.)

Requests are ``GET`` with ``Accept: application/json``. Redirects are never followed (a 3xx is
an error). Ring 1. Nurseries: none. Deadlines: connect, TLS handshake, request and response
head within ``HEAD_WAIT``; a LIST page's body may pause at most ``LIST_IDLE`` between reads
and is capped at ``MAX_LIST_BODY``; a WATCH has no overall deadline (the server ends it after
``WATCH_SERVER_TIMEOUT``), but ``WATCH_IDLE`` without a byte ends it as an error, and an event
line over ``MAX_EVENT_LINE`` is an error for that stream. Errors are ``KubeApiError``: one
line, the call named by method and URL without its query.

Must not: follow redirects, retry (the watch loops own retries and backoff), block the event
loop (``load_access`` is blocking: call it in a thread), or put a token or key in any message,
repr or log line.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import os
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, cast
from urllib.parse import quote, urlencode

import h11
import msgspec
import trio
import yaml

from a3s_gateway.config.urls import HttpUrl
from a3s_gateway.errors import GatewayError
from a3s_gateway.version import __version__

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator, Mapping

    from a3s_gateway.config.schema import KubernetesProvider

__all__ = [
    "HEAD_WAIT",
    "LIST_IDLE",
    "LIST_PAGE_SIZE",
    "MAX_EVENT_LINE",
    "MAX_LIST_BODY",
    "SERVICE_ACCOUNT_DIR",
    "WATCH_IDLE",
    "WATCH_SERVER_TIMEOUT",
    "ApiAccess",
    "ApiServer",
    "KubeApiError",
    "KubeClient",
    "KubeList",
    "WatchEvent",
    "load_access",
    "one_line",
]

#: Where a pod finds its service account's token and CA certificate.
SERVICE_ACCOUNT_DIR: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
#: Connect, TLS handshake, request and response head of one call.
HEAD_WAIT: Final = 10.0
#: The longest pause while a LIST page's body arrives.
LIST_IDLE: Final = 30.0
#: The cap on one LIST page's body.
MAX_LIST_BODY: Final = 64 << 20
#: Objects per LIST page (``limit``; the server may ignore it).
LIST_PAGE_SIZE: Final = 500
#: ``timeoutSeconds`` of a WATCH: the server ends the stream cleanly after it.
WATCH_SERVER_TIMEOUT: Final = 300
#: The longest silence on a WATCH stream before it counts as dead (the server's own timeout
#: plus a margin: a quiet resource may send nothing, bookmarks aside, until then).
WATCH_IDLE: Final = WATCH_SERVER_TIMEOUT + 30.0
#: The cap on one WATCH event line (SPEC §10.6).
MAX_EVENT_LINE: Final = 16 << 20
#: The cap on the body of an error answer (for its ``Status.message``).
_MAX_ERROR_BODY: Final = 64 << 10
_READ_SIZE: Final = 65536
_USER_AGENT: Final = f"a3s-gateway/{__version__}"
_MESSAGE_LIMIT: Final = 300
_REFUSED_USER_FIELDS: Final = {
    "exec": "exec credential plugins",
    "auth-provider": "auth-provider plugins",
    "username": "basic authentication",
    "password": "basic authentication",
}


def one_line(text: str, limit: int = _MESSAGE_LIMIT) -> str:
    """``text`` on one line (control characters and runs of blanks become one space), cut at
    ``limit`` characters."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class KubeApiError(GatewayError):
    """A call to the API server failed, or its configuration is unusable. ``str()`` is one line
    without secrets; ``status`` is the HTTP status or a watch ``ERROR`` event's code, when the
    server gave one (410: the resource version is too old; LIST again)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(one_line(message))
        self.status = status


# -- where and how ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiServer:
    """The API server's scheme, host (an IPv6 address without brackets), port, and a path
    prefix without a trailing ``/`` (possibly empty)."""

    scheme: Literal["http", "https"]
    host: str
    port: int
    prefix: str = ""

    @classmethod
    def parse(cls, text: str, what: str) -> ApiServer:
        """``text`` as an ``http``/``https`` URL. Raises ``KubeApiError`` naming ``what``."""
        try:
            url = HttpUrl(text.strip())
        except ValueError as error:
            raise KubeApiError(f"{what}: {error}") from None
        scheme: Literal["http", "https"] = "https" if url.scheme == "https" else "http"
        return cls(scheme, url.host, url.port, url.target.partition("?")[0].rstrip("/"))

    @property
    def authority(self) -> str:
        """The ``Host`` header: the port only when it is not the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.authority}{self.prefix}"


@dataclass(frozen=True, slots=True)
class ApiAccess:
    """Everything a request needs: the server, TLS, credentials, and ``source`` (how it was
    found, for ``/providers``: ``in-cluster``, ``kubeconfig <path> (context <name>)`` or
    ``api_server``). The token never shows in ``repr``."""

    server: ApiServer
    source: str
    context: ssl.SSLContext | None = None
    server_hostname: str | None = None
    token: str | None = field(default=None, repr=False)
    token_file: Path | None = None
    #: Whether the token file must exist (a kubeconfig ``tokenFile``) or is optional (the
    #: service account's, absent outside a pod).
    token_required: bool = False
    #: The operator paired a token with an ``http://`` server (kubeconfig): send it anyway.
    token_over_http: bool = False
    #: TLS verification is off (``insecure-skip-tls-verify``): worth a warning.
    insecure: bool = False

    async def bearer(self) -> str | None:
        """The token for the next request, the file read now; None when there is none or the
        server is plain http. Raises ``KubeApiError`` for an unreadable or empty token file."""
        if self.server.scheme == "http" and not self.token_over_http:
            return None
        if self.token is not None:
            return self.token
        path = self.token_file
        if path is None:
            return None
        try:
            token = (await trio.Path(path).read_text(encoding="utf-8")).strip()
        except FileNotFoundError:
            if not self.token_required:
                return None
            raise KubeApiError(f"token file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or type(error).__name__
            raise KubeApiError(f"token file {path}: {reason}") from None
        if not token:
            raise KubeApiError(f"token file {path} is empty")
        return token


def load_access(
    settings: KubernetesProvider,
    *,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
    environ: Mapping[str, str],
) -> ApiAccess:
    """Where the API server is and how to authenticate, from ``settings`` (see the module
    docstring). Blocking (reads files, builds an ``SSLContext``): run it in a thread. Raises
    ``KubeApiError``."""
    if settings.kubeconfig:
        path = Path(settings.kubeconfig).expanduser()
        return _from_kubeconfig(path, settings.api_server.strip())
    token_file = service_account_dir / "token"
    ca_file = service_account_dir / "ca.crt"
    if settings.api_server.strip():
        server = ApiServer.parse(settings.api_server, "providers.kubernetes.api_server")
        source = "api_server"
    else:
        server = _in_cluster_server(environ)
        source = "in-cluster"
    context = None
    if server.scheme == "https":
        context = _verifying_context(ca_file if ca_file.is_file() else None, None, what=source)
    return ApiAccess(
        server=server,
        source=source,
        context=context,
        server_hostname=server.host,
        token_file=token_file,
    )


def _in_cluster_server(environ: Mapping[str, str]) -> ApiServer:
    host = environ.get("KUBERNETES_SERVICE_HOST", "").strip().strip("[]")
    if not host:
        raise KubeApiError(
            "no API server: KUBERNETES_SERVICE_HOST is unset (not in a pod); set "
            "providers.kubernetes.kubeconfig or api_server"
        )
    port = environ.get("KUBERNETES_SERVICE_PORT", "").strip() or "443"
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise KubeApiError(f"KUBERNETES_SERVICE_PORT {port!r} is not a port")
    return ApiServer("https", host, int(port))


def _verifying_context(ca_file: Path | None, ca_data: bytes | None, *, what: str) -> ssl.SSLContext:
    """A client context trusting ``ca_file`` or ``ca_data`` (the system's store when both are
    None). Raises ``KubeApiError``."""
    try:
        if ca_data is not None:
            return ssl.create_default_context(cadata=ca_data.decode("ascii"))
        return ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))
    except (OSError, ValueError) as error:  # (ssl.SSLError is an OSError)
        where = f"CA file {ca_file}" if ca_file is not None else "certificate-authority-data"
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise KubeApiError(f"{what}: {where}: {reason}") from None


# -- kubeconfig ------------------------------------------------------------------------------


def _from_kubeconfig(path: Path, api_server: str) -> ApiAccess:
    what = f"kubeconfig {path}"
    try:
        document: object = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise KubeApiError(f"{what}: {error.strerror or type(error).__name__}") from None
    except (UnicodeDecodeError, yaml.YAMLError):
        raise KubeApiError(f"{what}: not a valid YAML file") from None
    config = _mapping(document, what)
    context_name = config.get("current-context")
    if not isinstance(context_name, str) or not context_name:
        raise KubeApiError(f"{what}: no current-context")
    what = f"{what} (context {context_name})"
    context = _named(config, "contexts", context_name, "context", what)
    cluster_name, user_name = context.get("cluster"), context.get("user")
    if not isinstance(cluster_name, str):
        raise KubeApiError(f"{what}: the context names no cluster")
    cluster = _named(config, "clusters", cluster_name, "cluster", what)
    user: Mapping[str, object] = {}
    if isinstance(user_name, str) and user_name:
        user = _named(config, "users", user_name, "user", what)
    for key, name in _REFUSED_USER_FIELDS.items():
        if user.get(key) is not None:
            raise KubeApiError(f"{what}: user {user_name}: {name} ({key}) are not supported")
    base = path.parent
    server = _cluster_server(cluster, api_server, what)
    access = ApiAccess(server=server, source=what, server_hostname=server.host)
    access = _with_token(access, user, base, what)
    if server.scheme == "https":
        access = _with_tls(access, cluster, user, base, what)
    return access


def _mapping(value: object, what: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise KubeApiError(f"{what}: expected a mapping")
    return {str(key): item for key, item in value.items()}


def _named(
    config: Mapping[str, object], section: str, name: str, body: str, what: str
) -> Mapping[str, object]:
    """The ``body`` mapping of the entry called ``name`` in the list ``section``."""
    entries = config.get(section)
    for entry in entries if isinstance(entries, list) else ():
        if isinstance(entry, dict) and entry.get("name") == name:
            return _mapping(entry.get(body) or {}, f"{what}: {section} {name}")
    raise KubeApiError(f"{what}: {section[:-1]} {name!r} is not defined")


def _cluster_server(cluster: Mapping[str, object], api_server: str, what: str) -> ApiServer:
    if cluster.get("proxy-url"):
        raise KubeApiError(f"{what}: proxy-url is not supported")
    if api_server:
        return ApiServer.parse(api_server, "providers.kubernetes.api_server")
    text = cluster.get("server")
    if not isinstance(text, str) or not text:
        raise KubeApiError(f"{what}: the cluster has no server")
    return ApiServer.parse(text, f"{what}: server")


def _with_token(access: ApiAccess, user: Mapping[str, object], base: Path, what: str) -> ApiAccess:
    token, token_file = user.get("token"), user.get("tokenFile")
    over_http = access.server.scheme == "http"
    if isinstance(token, str) and token.strip():
        return dataclasses.replace(access, token=token.strip(), token_over_http=over_http)
    if isinstance(token_file, str) and token_file:
        return dataclasses.replace(
            access,
            token_file=base / Path(token_file).expanduser(),
            token_required=True,
            token_over_http=over_http,
        )
    if token is not None or token_file is not None:
        raise KubeApiError(f"{what}: the user's token or tokenFile is empty or not a string")
    return access


def _with_tls(
    access: ApiAccess,
    cluster: Mapping[str, object],
    user: Mapping[str, object],
    base: Path,
    what: str,
) -> ApiAccess:
    insecure = cluster.get("insecure-skip-tls-verify") is True
    ca_file = _file_field(cluster, "certificate-authority", base)
    ca_data = _data_field(cluster, "certificate-authority-data", what)
    if insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = _verifying_context(ca_file, ca_data, what=what)
    _load_client_pair(context, user, base, what)
    server_name = cluster.get("tls-server-name")
    hostname = server_name if isinstance(server_name, str) and server_name else None
    return dataclasses.replace(
        access,
        context=context,
        server_hostname=hostname or access.server.host,
        insecure=insecure,
    )


def _file_field(section: Mapping[str, object], key: str, base: Path) -> Path | None:
    value = section.get(key)
    return base / Path(value).expanduser() if isinstance(value, str) and value else None


def _data_field(section: Mapping[str, object], key: str, what: str) -> bytes | None:
    value = section.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise KubeApiError(f"{what}: {key} is not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise KubeApiError(f"{what}: {key} is not valid base64") from None


def _load_client_pair(
    context: ssl.SSLContext, user: Mapping[str, object], base: Path, what: str
) -> None:
    """Client-certificate authentication, when the user has a certificate and a key."""
    cert_file = _file_field(user, "client-certificate", base)
    cert_data = _data_field(user, "client-certificate-data", what)
    key_file = _file_field(user, "client-key", base)
    key_data = _data_field(user, "client-key-data", what)
    has_cert = cert_file is not None or cert_data is not None
    has_key = key_file is not None or key_data is not None
    if not has_cert and not has_key:
        return
    if not (has_cert and has_key):
        raise KubeApiError(f"{what}: the user has a client certificate or key without the other")
    with _as_file(cert_file, cert_data) as cert_path, _as_file(key_file, key_data) as key_path:
        try:
            context.load_cert_chain(str(cert_path), str(key_path))
        except (OSError, ValueError) as error:
            # (never quote the file's content; ssl's messages name reasons, not bytes)
            reason = getattr(error, "strerror", None) or type(error).__name__
            raise KubeApiError(f"{what}: the client certificate or key: {reason}") from None


@contextlib.contextmanager
def _as_file(path: Path | None, data: bytes | None) -> Iterator[Path]:
    """``path``, or ``data`` in a private temporary file (0600) removed on exit."""
    if data is None:
        assert path is not None
        yield path
        return
    handle, name = tempfile.mkstemp(prefix="a3s-kube-", suffix=".pem")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        yield Path(name)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)


# -- the client ------------------------------------------------------------------------------


class _ListMeta(msgspec.Struct, frozen=True, rename="camel"):
    resource_version: str = ""
    continue_: str = msgspec.field(default="", name="continue")


class _ListBody(msgspec.Struct, frozen=True):
    metadata: _ListMeta = _ListMeta()
    items: list[dict[str, object]] | None = None


class _Status(msgspec.Struct, frozen=True):
    """A ``meta/v1`` Status: the body of an error answer and of a watch ``ERROR`` event."""

    message: str = ""
    reason: str = ""
    code: int = 0


class WatchEvent(msgspec.Struct, frozen=True):
    """One line of a WATCH stream: ``type`` (``ADDED``, ``MODIFIED``, ``DELETED``,
    ``BOOKMARK``; ``ERROR`` never reaches the caller) and the object (``obj``, JSON ``object``)."""

    type: str
    obj: dict[str, object] = msgspec.field(name="object")


@dataclass(frozen=True, slots=True)
class KubeList:
    """A complete LIST: every object and the list's resource version (where a WATCH starts)."""

    items: tuple[dict[str, object], ...]
    resource_version: str


_list_decoder: Final = msgspec.json.Decoder(_ListBody)
_event_decoder: Final = msgspec.json.Decoder(WatchEvent)
_status_decoder: Final = msgspec.json.Decoder(_Status)


class _CallError(Exception):
    """A reason a call failed, prefixed with the call's method and URL by ``_calling``."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class KubeClient:
    """LIST and WATCH against ``access.server``; one new connection per call."""

    def __init__(self, access: ApiAccess) -> None:
        self.access = access

    async def list_objects(self, path: str, query: Mapping[str, str]) -> KubeList:
        """Every object at ``path`` (``/api/v1/services``), page by page (``limit`` and
        ``continue``). Raises ``KubeApiError`` (``status`` 410: a continue token expired)."""
        items: list[dict[str, object]] = []
        token = ""
        while True:
            page_query = {**query, "limit": str(LIST_PAGE_SIZE)}
            if token:
                page_query["continue"] = token
            body = await self._get_body(path, page_query)
            try:
                page = _list_decoder.decode(body)
            except msgspec.DecodeError as error:
                raise KubeApiError(f"LIST {self._url(path)}: invalid answer: {error}") from None
            items.extend(page.items or ())
            token = page.metadata.continue_
            if not token:
                return KubeList(tuple(items), page.metadata.resource_version)

    async def watch(
        self, path: str, query: Mapping[str, str], on_event: Callable[[WatchEvent], None]
    ) -> None:
        """Stream WATCH events of ``path`` to ``on_event`` (synchronous; what it raises ends
        the stream and propagates) until the server ends the stream. Raises ``KubeApiError``
        for a failed or broken stream, a silence of ``WATCH_IDLE``, a line over
        ``MAX_EVENT_LINE``, an undecodable line, or an ``ERROR`` event (its code as
        ``status``: 410 means LIST again)."""
        where = f"WATCH {self._url(path)}"

        def on_line(line: bytes) -> None:
            try:
                event = _event_decoder.decode(line)
            except msgspec.DecodeError as error:
                raise _CallError(f"invalid event: {error}") from None
            if event.type == "ERROR":
                try:
                    status = msgspec.convert(event.obj, _Status)
                except msgspec.ValidationError:
                    status = _Status()
                said = status.message or status.reason or "no message"
                raise _CallError(f"ERROR event {status.code}: {said}", status.code or None)
            on_event(event)

        async with self._calling(where, path, query) as exchange:
            await exchange.stream_lines(on_line)

    async def _get_body(self, path: str, query: Mapping[str, str]) -> bytes:
        async with self._calling(f"LIST {self._url(path)}", path, query) as exchange:
            return await exchange.read_body(MAX_LIST_BODY, LIST_IDLE)

    def _url(self, path: str) -> str:
        return f"{self.access.server}{path}"

    @contextlib.asynccontextmanager
    async def _calling(
        self, where: str, path: str, query: Mapping[str, str]
    ) -> AsyncIterator[_Exchange]:
        """An open exchange whose answer is 2xx; every failure becomes ``KubeApiError``."""
        server = self.access.server
        target = server.prefix + path
        if query:
            target += "?" + urlencode(query, quote_via=quote, safe="")
        try:
            token = await self.access.bearer()
        except KubeApiError as error:
            raise KubeApiError(f"{where}: {error}") from None
        try:
            with trio.fail_after(HEAD_WAIT):
                exchange = await _open_exchange(self.access, _request_head(server, target, token))
            async with exchange:
                await exchange.expect_2xx()
                yield exchange
        except trio.TooSlowError:
            raise KubeApiError(f"{where}: no answer within {HEAD_WAIT:g} s") from None
        except _CallError as error:
            raise KubeApiError(f"{where}: {error}", status=error.status) from None
        except (h11.LocalProtocolError, UnicodeError):
            # (h11's message may quote a header value, and one of them carries the token)
            raise KubeApiError(f"{where}: the request could not be encoded") from None
        except h11.RemoteProtocolError as error:
            raise KubeApiError(f"{where}: invalid HTTP answer: {error}") from None
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as error:
            raise KubeApiError(f"{where}: {_transport_reason(error)}") from None


def _request_head(server: ApiServer, target: str, token: str | None) -> h11.Request:
    headers = [
        ("Host", server.authority),
        ("User-Agent", _USER_AGENT),
        ("Accept", "application/json"),
        ("Connection", "close"),
    ]
    if token is not None:
        if not all("\x21" <= c <= "\x7e" for c in token):
            raise _CallError("the bearer token is not a valid header value")
        headers.append(("Authorization", f"Bearer {token}"))
    return h11.Request(method="GET", target=target, headers=headers)


async def _open_exchange(access: ApiAccess, head: h11.Request) -> _Exchange:
    """Connect, shake hands, send ``head`` and read the answer's head (the caller bounds it)."""
    server = access.server
    stream: trio.abc.Stream = await trio.open_tcp_stream(server.host, server.port)
    try:
        if server.scheme == "https":
            tls = trio.SSLStream(
                stream,
                access.context or ssl.create_default_context(),
                server_hostname=access.server_hostname or server.host,
                https_compatible=True,
            )
            stream = tls
            await tls.do_handshake()
        connection = h11.Connection(h11.CLIENT)
        await stream.send_all(
            (connection.send(head) or b"") + (connection.send(h11.EndOfMessage()) or b"")
        )
        exchange = _Exchange(stream, connection)
        await exchange.read_head()
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return exchange


class _Exchange:
    """One request's answer being read; closes its stream on exit."""

    def __init__(self, stream: trio.abc.Stream, connection: h11.Connection) -> None:
        self._stream = stream
        self._connection = connection
        self.status = 0

    async def __aenter__(self) -> _Exchange:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await trio.aclose_forcefully(self._stream)

    async def _next_event(self) -> h11.Event | type[h11.PAUSED]:
        connection = self._connection
        while True:
            event = connection.next_event()
            if event is not h11.NEED_DATA:
                # (mypy does not narrow a union of sentinel classes with ``is not``)
                return cast("h11.Event | type[h11.PAUSED]", event)
            connection.receive_data(bytes(await self._stream.receive_some(_READ_SIZE)))

    async def read_head(self) -> None:
        """Read up to the final answer's head (interim 1xx answers are skipped)."""
        while True:
            event = await self._next_event()
            if isinstance(event, h11.Response):
                self.status = event.status_code
                return
            if isinstance(event, h11.ConnectionClosed):
                raise _CallError("the connection closed before an answer")
            if not isinstance(event, h11.InformationalResponse):
                raise _CallError(f"unexpected HTTP event {type(event).__name__}")

    async def expect_2xx(self) -> None:
        """Raise ``_CallError`` (with the status and the server's message) unless 2xx."""
        status = self.status
        if 200 <= status < 300:
            return
        if 300 <= status < 400:
            raise _CallError(f"HTTP {status}: redirects are not followed", status)
        try:
            with trio.move_on_after(HEAD_WAIT):
                body = await self.read_body(_MAX_ERROR_BODY, HEAD_WAIT)
                said = _status_decoder.decode(body).message
        except (_CallError, msgspec.DecodeError, h11.RemoteProtocolError, OSError):
            said = ""
        except trio.BrokenResourceError:
            said = ""
        raise _CallError(f"HTTP {status}: {said}" if said else f"HTTP {status}", status)

    async def read_body(self, limit: int, idle: float) -> bytes:
        """The whole body (at most ``limit`` bytes), with at most ``idle`` s between reads."""
        body = bytearray()
        with trio.CancelScope() as scope:
            while True:
                scope.deadline = trio.current_time() + idle
                event = await self._next_event()
                if isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > limit:
                        raise _CallError(f"the answer is longer than {limit} bytes")
                elif isinstance(event, h11.EndOfMessage):
                    return bytes(body)
                else:
                    raise _CallError(f"unexpected HTTP event {type(event).__name__}")
        raise _CallError(f"the answer paused for more than {idle:g} s")

    async def stream_lines(self, on_line: Callable[[bytes], None]) -> None:
        """Hand every non-empty line of the body to ``on_line`` until the body ends."""
        buffer = bytearray()
        scanned = 0
        with trio.CancelScope() as scope:
            while True:
                scope.deadline = trio.current_time() + WATCH_IDLE
                event = await self._next_event()
                if isinstance(event, h11.EndOfMessage):
                    if buffer.strip():
                        on_line(bytes(buffer))
                    return
                if not isinstance(event, h11.Data):
                    raise _CallError(f"unexpected HTTP event {type(event).__name__}")
                buffer += event.data
                scanned = _split_lines(buffer, scanned, on_line)
        raise _CallError(f"no data for {WATCH_IDLE:g} s")


def _split_lines(buffer: bytearray, scanned: int, on_line: Callable[[bytes], None]) -> int:
    """Hand the complete lines at the front of ``buffer`` to ``on_line`` and remove them;
    return how far the rest was searched for a newline. Raises ``_CallError`` for a line
    longer than ``MAX_EVENT_LINE``."""
    start = 0
    while True:
        end = buffer.find(b"\n", max(start, scanned))
        if end < 0:
            break
        if end - start > MAX_EVENT_LINE:
            raise _CallError(f"an event line is longer than {MAX_EVENT_LINE} bytes")
        line = bytes(buffer[start:end]).strip()
        start = end + 1
        if line:
            on_line(line)
    del buffer[:start]
    if len(buffer) > MAX_EVENT_LINE:
        raise _CallError(f"an event line is longer than {MAX_EVENT_LINE} bytes")
    return len(buffer)


def _transport_reason(error: BaseException) -> str:
    """A one-line reason for a connect, TLS or stream failure (trio wraps TLS errors)."""
    cause = error.__cause__
    if isinstance(error, trio.BrokenResourceError) and isinstance(cause, ssl.SSLError):
        return f"TLS: {cause}"
    if isinstance(error, ssl.SSLError):
        return f"TLS: {error}"
    return getattr(error, "strerror", None) or str(error) or type(error).__name__

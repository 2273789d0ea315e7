"""The executors that scale through an HTTP API (SPEC §11.9): ``box`` (A3S Box) and
``kubernetes`` (the ``/scale`` subresource of a Deployment or StatefulSet), the small
JSON-over-HTTP/1.1 client they share (h11 over a trio TCP stream, TLS through ``ssl``), and the
value types every executor returns (``ScaleResult``, ``Current``, ``ExecutorError``). The value
types live here, not in ``executors.py``, because ``executors.make_executor`` imports this
module and ``executor_local``: kept below both, they add no import cycle.

Ring 1. Nurseries: none (one connection per call, opened and closed inside the call). Deadlines:
each call is one ``fail_after`` around connect, TLS handshake, request and the whole answer:
``box.timeout`` for ``box``, ``KUBERNETES_WAIT`` (10 s) for ``kubernetes``. Redirects are not
followed (a 3xx is an error), answer bodies are capped at ``MAX_BODY`` (1 MiB) and heads at
h11's 16 KiB; answers are decoded with msgspec into typed Structs, so a wrong type is an error.

Kubernetes API access, in this order:

- ``A3S_KUBERNETES_API`` (environment): a full base URL, ``http://`` or ``https://``, whose path
  (if any) prefixes every request (``kubectl proxy`` is ``http://127.0.0.1:8001``);
- otherwise in-cluster: ``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`` (443 when
  the port is unset).

The bearer token is read from ``A3S_KUBERNETES_TOKEN_FILE`` when set (sent over http too: the
operator asked for it), else from the service account's ``token`` file when it exists (sent
over https only). It is read at every call, so a rotated token is picked up. An https API is
verified against ``A3S_KUBERNETES_CA_FILE`` when set, else the service account's ``ca.crt``
when it exists, else the system's trust store. The namespace is ``kubernetes.namespace``, else
the service account's ``namespace`` file, else ``default``. The service-account directory is
``/var/run/secrets/kubernetes.io/serviceaccount`` (a keyword argument, for tests).

Must not: follow redirects, keep connections, retry (the autoscaler loop asks again at its next
tick), or put a token in a log line or an error message.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final, Literal, TypedDict, TypeVar
from urllib.parse import quote

import h11
import msgspec
import trio

from a3s_gateway.config.urls import HttpUrl
from a3s_gateway.errors import GatewayError, one_line
from a3s_gateway.version import __version__

if TYPE_CHECKING:
    import logging
    from collections.abc import Mapping

    from a3s_gateway.config.schema_services import BoxExecutor as BoxSettings
    from a3s_gateway.config.schema_services import KubernetesExecutor as KubernetesSettings

__all__ = [
    "KUBERNETES_WAIT",
    "MAX_BODY",
    "SERVICE_ACCOUNT_DIR",
    "BoxExecutor",
    "Current",
    "ExecutorError",
    "JsonClient",
    "KubernetesExecutor",
    "Origin",
    "Reply",
    "ScaleResult",
]

#: The cap on an answer's body; a longer one is an error.
MAX_BODY: Final = 1 << 20
#: The deadline of one Kubernetes API call (connect to the end of the answer).
KUBERNETES_WAIT: Final = 10.0
#: Where a pod finds its service account's token, CA certificate and namespace.
SERVICE_ACCOUNT_DIR: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
_READ_SIZE: Final = 65536
_USER_AGENT: Final = f"a3s-gateway/{__version__}"
#: A bearer token is sent as is: visible ASCII only (RFC 6750 §2.1 is narrower still).
_TOKEN: Final = re.compile(r"[\x21-\x7e]+")
_FIELD_MANAGER: Final = "a3s-gateway"

_T = TypeVar("_T")


# -- the values every executor returns ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScaleResult:
    """The answer to ``scale``: whether the executor took the decision, how many replicas it
    reports now, and its message (one line)."""

    accepted: bool
    actual_replicas: int
    message: str


@dataclass(frozen=True, slots=True)
class Current:
    """The replicas an executor reports; ``endpoints`` are backend URLs like
    ``http://127.0.0.1:9101`` when the executor knows them (``local``), else None."""

    replicas: int
    endpoints: tuple[str, ...] | None


class ExecutorError(GatewayError):
    """A call to an executor failed, timed out or was answered with something invalid.
    ``str()`` is one line without secrets."""

    def __init__(self, reason: str) -> None:
        super().__init__(one_line(reason))


# -- the JSON-over-HTTP/1.1 client ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Origin:
    """Where requests go: scheme, host (an IPv6 address without brackets), port, and a path
    prefix without a trailing ``/`` (possibly empty)."""

    scheme: Literal["http", "https"]
    host: str
    port: int
    prefix: str = ""

    @classmethod
    def from_url(cls, url: HttpUrl) -> Origin:
        """The origin of ``url``; its path is the prefix (a query is dropped)."""
        scheme: Literal["http", "https"] = "https" if url.scheme == "https" else "http"
        prefix = url.target.partition("?")[0].rstrip("/")
        return cls(scheme, url.host, url.port, prefix)

    @property
    def authority(self) -> str:
        """The ``Host`` header: the port only when it is not the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Reply:
    """A complete answer: status, body (≤ ``MAX_BODY``) and ``where`` (method and URL, for
    messages)."""

    status: int
    body: bytes
    where: str

    def expect_2xx(self) -> None:
        """Raise ``ExecutorError`` unless the status is 2xx."""
        if not 200 <= self.status < 300:
            raise ExecutorError(f"{self.where}: HTTP {self.status}")

    def decode(self, kind: type[_T]) -> _T:
        """The body as JSON of type ``kind`` (a msgspec Struct). Raises ``ExecutorError``."""
        try:
            return msgspec.json.decode(self.body, type=kind)
        except msgspec.DecodeError as error:  # (ValidationError is a DecodeError)
            raise ExecutorError(f"{self.where}: invalid answer: {error}") from error


class _Auth(TypedDict):
    """``JsonClient.request``'s keyword arguments for authentication and TLS."""

    token: str | None
    context: ssl.SSLContext | None


class _CallError(Exception):
    """A reason a call failed, prefixed with the call's ``where`` by ``JsonClient.request``."""


class JsonClient:
    """Requests to one ``Origin``, one new connection each (``Connection: close``), each bounded
    by ``seconds`` from connect to the end of the answer. ``label`` names the caller in
    messages (``box executor``)."""

    def __init__(self, origin: Origin, *, label: str, seconds: float) -> None:
        self.origin = origin
        self._label = label
        self._seconds = seconds

    async def request(
        self,
        method: str,
        target: str,
        *,
        body: bytes | None = None,
        content_type: str = "application/json",
        token: str | None = None,
        context: ssl.SSLContext | None = None,
    ) -> Reply:
        """Send ``method target`` (target: path and query below the origin's prefix) and return
        the complete answer. ``token`` becomes ``Authorization: Bearer``; ``context`` is used
        when the origin is https. Raises ``ExecutorError`` on a transport or TLS failure, a
        timeout, a 3xx, an invalid or too long answer. A checkpoint."""
        origin = self.origin
        path = origin.prefix + target
        where = (
            f"{self._label}: {method} {origin.scheme}://{origin.authority}{path.partition('?')[0]}"
        )
        if token is not None and _TOKEN.fullmatch(token) is None:
            raise ExecutorError(f"{where}: the bearer token is not a valid header value")
        head = _request_head(origin, method, path, body, content_type, token)
        try:
            with trio.fail_after(self._seconds):
                status, data = await self._exchange(head, body, context)
        except trio.TooSlowError:
            raise ExecutorError(f"{where}: no complete answer within {self._seconds:g} s") from None
        except _CallError as error:
            raise ExecutorError(f"{where}: {error}") from None
        except (h11.LocalProtocolError, UnicodeError):
            # (h11's message may quote a header value, and one of them carries the token; a
            # host from the environment may not be ASCII)
            raise ExecutorError(f"{where}: the request could not be encoded") from None
        except h11.RemoteProtocolError as error:
            raise ExecutorError(f"{where}: invalid HTTP answer: {error}") from error
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as error:
            raise ExecutorError(f"{where}: {_transport_reason(error)}") from error
        return Reply(status, data, where)

    async def _exchange(
        self, head: h11.Request, body: bytes | None, context: ssl.SSLContext | None
    ) -> tuple[int, bytes]:
        origin = self.origin
        stream: trio.abc.Stream = await trio.open_tcp_stream(origin.host, origin.port)
        try:
            if origin.scheme == "https":
                tls = trio.SSLStream(
                    stream,
                    context or ssl.create_default_context(),
                    server_hostname=origin.host,
                    https_compatible=True,
                )
                stream = tls
                await tls.do_handshake()
            connection = h11.Connection(h11.CLIENT)
            data = connection.send(head) or b""
            if body is not None:
                data += connection.send(h11.Data(data=body)) or b""
            data += connection.send(h11.EndOfMessage()) or b""
            await stream.send_all(data)
            return await _receive_reply(connection, stream)
        finally:
            await trio.aclose_forcefully(stream)


def _request_head(
    origin: Origin,
    method: str,
    target: str,
    body: bytes | None,
    content_type: str,
    token: str | None,
) -> h11.Request:
    headers = [
        ("Host", origin.authority),
        ("User-Agent", _USER_AGENT),
        ("Accept", "application/json"),
        ("Connection", "close"),
    ]
    if body is not None:
        headers += [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    if token is not None:
        headers.append(("Authorization", f"Bearer {token}"))
    return h11.Request(method=method, target=target, headers=headers)


async def _receive_reply(connection: h11.Connection, stream: trio.abc.Stream) -> tuple[int, bytes]:
    """The final answer's status and body; interim (1xx) answers are skipped."""
    status = 0
    body = bytearray()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(bytes(await stream.receive_some(_READ_SIZE)))
        elif isinstance(event, h11.Response):
            status = event.status_code
            if 300 <= status < 400:
                raise _CallError(f"HTTP {status}: redirects are not followed")
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise _CallError(f"the answer is longer than {MAX_BODY} bytes")
        elif isinstance(event, h11.EndOfMessage):
            return status, bytes(body)
        elif isinstance(event, h11.ConnectionClosed):
            raise _CallError("the connection closed before an answer")
        elif not isinstance(event, h11.InformationalResponse):
            raise _CallError(f"unexpected HTTP event {type(event).__name__}")


def _transport_reason(error: BaseException) -> str:
    """A one-line reason for a connect, TLS or stream failure (trio wraps TLS errors)."""
    cause = error.__cause__
    if isinstance(error, trio.BrokenResourceError) and isinstance(cause, ssl.SSLError):
        return f"TLS: {cause}"
    if isinstance(error, ssl.SSLError):
        return f"TLS: {error}"
    return str(error) or type(error).__name__


# -- box ------------------------------------------------------------------------------------


class _BoxRequest(msgspec.Struct, frozen=True):
    service: str
    direction: Literal["up", "down"]
    current_replicas: int
    desired_replicas: int
    reason: str


class _BoxDecision(msgspec.Struct, frozen=True):
    accepted: bool
    actual_replicas: Annotated[int, msgspec.Meta(ge=0)]
    message: str


class _BoxReplicas(msgspec.Struct, frozen=True):
    replicas: Annotated[int, msgspec.Meta(ge=0)]


_encoder: Final = msgspec.json.Encoder()


class BoxExecutor:
    """The ``box`` executor: ``POST``/``GET <url>/v1/scale/<service>`` (SPEC §11.9), with
    ``Authorization: Bearer $<token_env>`` when ``token_env`` is set (read once, here)."""

    name = "box"

    def __init__(
        self,
        service: str,
        settings: BoxSettings,
        *,
        environ: Mapping[str, str],
        log: logging.Logger,
    ) -> None:
        self.service = service
        self._client = JsonClient(
            Origin.from_url(settings.url), label="box executor", seconds=settings.timeout.seconds
        )
        self._token_env = settings.token_env
        token = environ.get(settings.token_env, "") if settings.token_env else ""
        self._token = token.strip() or None
        self._context = ssl.create_default_context() if settings.url.scheme == "https" else None
        if settings.token_env and not self._token:
            log.warning(
                "box executor of service %s: the environment variable %s (box.token_env) is "
                "not set or empty; its calls fail",
                service,
                settings.token_env,
            )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Nothing runs in the background: report started and sleep until cancelled."""
        task_status.started()
        await trio.sleep_forever()

    async def scale(self, service: str, desired: int, reason: str, *, current: int) -> ScaleResult:
        """Ask Box for ``desired`` replicas (negative counts as 0). Raises ``ExecutorError``
        unless a 2xx JSON decision comes back."""
        desired = max(0, desired)
        request = _BoxRequest(
            service=service,
            direction="up" if desired > current else "down",
            current_replicas=current,
            desired_replicas=desired,
            reason=reason,
        )
        reply = await self._client.request(
            "POST", self._target(service), body=_encoder.encode(request), **self._auth()
        )
        reply.expect_2xx()
        decision = reply.decode(_BoxDecision)
        return ScaleResult(decision.accepted, decision.actual_replicas, one_line(decision.message))

    async def current(self, service: str) -> Current:
        """The replica count Box reports. Raises ``ExecutorError``."""
        reply = await self._client.request("GET", self._target(service), **self._auth())
        reply.expect_2xx()
        return Current(reply.decode(_BoxReplicas).replicas, None)

    async def aclose(self) -> None:
        """Nothing to release (no connection outlives a call)."""
        await trio.lowlevel.checkpoint()

    @staticmethod
    def _target(service: str) -> str:
        return f"/v1/scale/{quote(service, safe='')}"

    def _auth(self) -> _Auth:
        if self._token_env is not None and not self._token:
            message = (
                f"box executor: the environment variable {self._token_env} is not set or empty"
            )
            raise ExecutorError(message)
        return {"token": self._token, "context": self._context}


# -- kubernetes -----------------------------------------------------------------------------


class _Replicas(msgspec.Struct, frozen=True):
    replicas: Annotated[int, msgspec.Meta(ge=0)] = 0


class _Scale(msgspec.Struct, frozen=True):
    """An ``autoscaling/v1`` Scale; the fields read here only (others are ignored)."""

    spec: _Replicas = _Replicas()
    status: _Replicas = _Replicas()


class _Status(msgspec.Struct, frozen=True):
    """A ``meta/v1`` Status, the body of an API server's error answer."""

    message: str = ""


def _api_origin(environ: Mapping[str, str]) -> Origin:
    """The API server: ``A3S_KUBERNETES_API``, else in-cluster. Raises ``ExecutorError``."""
    text = environ.get("A3S_KUBERNETES_API", "").strip()
    if text:
        try:
            return Origin.from_url(HttpUrl(text))
        except ValueError as error:
            raise ExecutorError(f"kubernetes executor: A3S_KUBERNETES_API: {error}") from None
    host = environ.get("KUBERNETES_SERVICE_HOST", "").strip().strip("[]")
    if not host:
        raise ExecutorError(
            "kubernetes executor: no API server: KUBERNETES_SERVICE_HOST (in a cluster) and "
            "A3S_KUBERNETES_API are both unset"
        )
    port = environ.get("KUBERNETES_SERVICE_PORT", "").strip() or "443"
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ExecutorError(f"kubernetes executor: KUBERNETES_SERVICE_PORT {port!r} is not a port")
    return Origin("https", host, int(port))


def _file_setting(environ: Mapping[str, str], name: str) -> Path | None:
    text = environ.get(name, "").strip()
    return Path(text) if text else None


def _verifying_context(ca_file: Path | None) -> ssl.SSLContext:
    """A client context trusting ``ca_file`` (the system's store when None); blocking."""
    return ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))


class KubernetesExecutor:
    """The ``kubernetes`` executor (alias ``k8s``): ``GET``/``PATCH`` the ``scale`` subresource
    of ``<kind>/<name>`` (SPEC §11.9). API access: see the module docstring."""

    name = "kubernetes"

    def __init__(
        self,
        service: str,
        settings: KubernetesSettings,
        *,
        environ: Mapping[str, str],
        log: logging.Logger,
        service_account: Path = SERVICE_ACCOUNT_DIR,
    ) -> None:
        self.service = service
        self._settings = settings
        self._account = service_account
        self._token_file = _file_setting(environ, "A3S_KUBERNETES_TOKEN_FILE")
        self._ca_file = _file_setting(environ, "A3S_KUBERNETES_CA_FILE")
        self._namespace = settings.namespace
        self._context: ssl.SSLContext | None = None
        self._client: JsonClient | None = None
        self._problem = ""
        try:
            origin = _api_origin(environ)
        except ExecutorError as error:
            self._problem = str(error)
            log.warning("service %s: %s; its scale calls fail", service, error)
        else:
            self._client = JsonClient(origin, label="kubernetes executor", seconds=KUBERNETES_WAIT)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Nothing runs in the background: report started and sleep until cancelled."""
        task_status.started()
        await trio.sleep_forever()

    async def scale(self, service: str, desired: int, reason: str, *, current: int) -> ScaleResult:
        """Merge-patch ``spec.replicas`` to ``desired`` (negative counts as 0). A 2xx is
        accepted (``actual_replicas`` = the answer's ``spec.replicas``); another status is not
        accepted (``actual_replicas`` = ``current``, the message quotes the API's). Raises
        ``ExecutorError`` on a failed call, a 3xx or an invalid 2xx answer."""
        desired = max(0, desired)
        body = _encoder.encode({"spec": {"replicas": desired}})
        query = f"?fieldManager={_FIELD_MANAGER}"
        reply = await self._call("PATCH", service, query=query, body=body)
        if 200 <= reply.status < 300:
            actual = reply.decode(_Scale).spec.replicas
            return ScaleResult(True, actual, one_line(f"spec.replicas set to {desired}: {reason}"))
        try:
            said = msgspec.json.decode(reply.body, type=_Status).message
        except msgspec.DecodeError:
            said = ""
        return ScaleResult(False, current, one_line(f"HTTP {reply.status}: {said or 'rejected'}"))

    async def current(self, service: str) -> Current:
        """``status.replicas`` of the scale subresource (0 when absent). Raises
        ``ExecutorError``."""
        reply = await self._call("GET", service)
        reply.expect_2xx()
        return Current(reply.decode(_Scale).status.replicas, None)

    async def aclose(self) -> None:
        """Nothing to release (no connection outlives a call)."""
        await trio.lowlevel.checkpoint()

    async def _call(
        self, method: str, service: str, *, query: str = "", body: bytes | None = None
    ) -> Reply:
        client = self._client
        if client is None:
            raise ExecutorError(self._problem)
        namespace = await self._namespace_of()
        name = self._settings.name or service
        target = (
            f"/apis/apps/v1/namespaces/{quote(namespace, safe='')}/{self._settings.kind}/"
            f"{quote(name, safe='')}/scale{query}"
        )
        https = client.origin.scheme == "https"
        return await client.request(
            method,
            target,
            body=body,
            content_type="application/merge-patch+json",
            token=await self._bearer(https=https),
            context=await self._verifying(client.origin) if https else None,
        )

    async def _namespace_of(self) -> str:
        """``kubernetes.namespace``, else the pod's (read once), else ``default``."""
        if self._namespace is None:
            try:
                text = await trio.Path(self._account / "namespace").read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                text = ""
            self._namespace = text.strip() or "default"
        return self._namespace

    async def _bearer(self, *, https: bool) -> str | None:
        """The token, read now (service-account tokens rotate); None when there is none."""
        explicit = self._token_file
        if explicit is None and not https:
            return None  # the pod's own token never travels in clear text
        path = explicit or self._account / "token"
        try:
            token = (await trio.Path(path).read_text(encoding="utf-8")).strip()
        except FileNotFoundError:
            if explicit is None:
                return None
            raise ExecutorError(f"kubernetes executor: token file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or type(error).__name__
            raise ExecutorError(f"kubernetes executor: token file {path}: {reason}") from None
        if not token:
            raise ExecutorError(f"kubernetes executor: token file {path} is empty")
        return token

    async def _verifying(self, origin: Origin) -> ssl.SSLContext:
        """The TLS context for the API server, built once."""
        if self._context is None:
            explicit = self._ca_file
            ca_file = explicit or self._account / "ca.crt"
            if explicit is None and not await trio.Path(ca_file).is_file():
                self._context = await trio.to_thread.run_sync(_verifying_context, None)
                return self._context
            try:
                self._context = await trio.to_thread.run_sync(_verifying_context, ca_file)
            except OSError as error:  # (ssl.SSLError is an OSError)
                reason = error.strerror or str(error) or type(error).__name__
                message = f"kubernetes executor: CA file {ca_file} for {origin.host}: {reason}"
                raise ExecutorError(message) from None
        return self._context

"""A fake Kubernetes API server for tests: real HTTPS, real paths, LIST and WATCH, test controls.

Test support, trio (the Ring 1 rules apply: time from trio, every wait bounded). No real API
server can run here, so the Kubernetes provider and the ``kubernetes`` scale executor are tested
against this one, and ``tests/kubernetes/test_fake_kube_kubectl.py`` checks it against the real
``kubectl``. It shares no code with ``src/``.

What it serves: discovery (``/api``, ``/apis``, ``/api/v1``, ``/apis/<group>[/<version>]``),
``/version``, a skeleton OpenAPI v3 (kubectl reads it to leave field validation to the server;
``/openapi/v2`` is a 404), and for every resource in ``fake_kube_store.RESOURCES`` the
namespaced (``.../namespaces/<ns>/<plural>``) and all-namespaces (``.../<plural>``) collections
and items: LIST (label selectors with ``=``, ``==``, ``!=``, ``in``, ``notin``, ``key``,
``!key``; field selectors on ``metadata.name``, ``metadata.namespace`` and a secret's ``type``;
``limit``/``continue`` are ignored: every list is one page), WATCH, GET, POST, PUT, PATCH (merge
patch; strategic merge patch as ``fake_kube_match.strategic_merge_patch`` approximates it; JSON
patch and server-side apply are 415), DELETE, ``dryRun=All``, and the ``/scale`` subresource of
Deployments and StatefulSets (GET, PUT, merge PATCH; ``fieldManager`` is recorded in
``metadata.managedFields``). ``fieldValidation`` is accepted and not enforced. The parts:
``fake_kube_store`` holds the objects and the event log, ``fake_kube_match`` selects and
patches, ``fake_kube_router.Router`` answers each request, ``fake_kube_api`` shapes the
documents; this module does TLS, HTTP/1.1 (h11), streaming, threads and the test controls.

WATCH (``watch=1|true``) answers a chunked stream of JSON lines ``{"type", "object"}``: from
``resourceVersion`` "" or "0" the current objects as ADDED first, else the logged events after
it; then live events, filtered by namespace and selectors (an object that stops matching
arrives as DELETED, one that starts matching as ADDED); BOOKMARKs when the client allows them
and the test calls ``send_bookmarks``; ``sendInitialEvents=true`` ends its ADDED events with the
``k8s.io/initial-events-end`` bookmark; ``timeoutSeconds`` ends the stream cleanly. A
resourceVersion older than the last ``compact()`` gets what the real server sends, a 200 stream
with one ERROR event (Status 410 ``Expired``), or with ``expired_as="status"`` an HTTP 410.

Auth: a bearer token (``token``, random per server) or a client certificate issued by the
client CA (the TLS layer asks for one and verifies it); anything else is a 401 Status. The
request log (``requests``) records the kind of credential, never the token.

Nurseries and deadlines: ``serve`` (started with ``nursery.start``, or by ``running_fake_kube``
or ``fake_kube_in_thread``) owns one nursery: the listener, and one task per connection; a watch
owns a nursery of two (the event pump and an EOF reader that ends the watch when the client
goes). TLS handshakes are bounded by ``HANDSHAKE_WAIT``; ``stop`` cancels everything.

Threads: every control method may be called from any thread (a lock guards the state; watch
tasks are woken through the server loop's trio token), so tests that run the gateway and kubectl
as subprocesses can drive a server running in ``fake_kube_in_thread``.

Must not: log or record a secret; read the wall clock for timing; leave a task or a thread
running after ``stop``/the context managers' exit.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import secrets
import ssl
import tempfile
import threading
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, TypeAlias

import h11
import trio
import trustme

from tests.support import fake_kube_api as api
from tests.support.fake_kube_match import JsonObject, KubeError, Selector
from tests.support.fake_kube_router import (
    ExpiredAs,
    Reply,
    Router,
    Watch,
    error_reply,
    json_reply,
)
from tests.support.fake_kube_store import LogEntry, ObjectStore, find_resource

__all__ = [
    "AuthKind",
    "FakeKube",
    "JsonObject",
    "KubeError",
    "KubeRequest",
    "fake_kube_in_thread",
    "running_fake_kube",
]

AuthKind: TypeAlias = Literal["token", "cert", "bad-token", "none"]

HANDSHAKE_WAIT: Final = 10.0
READ_SIZE: Final = 65536
MAX_BODY: Final = 16 * 1024 * 1024
#: How long ``fake_kube_in_thread`` waits for the server to start and to stop.
THREAD_WAIT: Final = 10.0
#: The user a client certificate names (CN) and its group (O), as kube-apiserver reads them.
CLIENT_USER: Final = "fake-kube-admin"
CLIENT_GROUP: Final = "system:masters"


@dataclass(frozen=True)
class KubeRequest:
    """One request the server received. ``auth`` says which credential it carried
    (``bad-token``: a bearer token that is not the server's); the token itself is never kept."""

    method: str
    path: str
    query: dict[str, str]
    auth: AuthKind
    content_type: str = ""

    @property
    def watch(self) -> bool:
        return self.query.get("watch") in ("1", "true")


@dataclass
class _Failure:
    remaining: int
    status: int
    path_contains: str
    watch: bool | None

    def takes(self, path: str, watch: bool) -> bool:
        """Whether this planned failure answers a request for ``path`` (and counts it)."""
        if self.remaining <= 0 or self.path_contains not in path:
            return False
        if self.watch is not None and self.watch != watch:
            return False
        self.remaining -= 1
        return True


class _DroppedError(Exception):
    """A watch stream the test dropped: close the connection without ending the response."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class FakeKube:
    """The fake API server's state, its certificates and files, and the test controls.

    Files under ``directory``: ``ca.crt`` (``ca_file``, the server CA), ``token``
    (``token_file``), ``client.crt``/``client.key`` (a client certificate from the client CA),
    and ``serviceaccount/`` (``service_account_dir``: ``token``, ``ca.crt``, ``namespace`` — what
    a pod finds under ``/var/run/secrets/kubernetes.io/serviceaccount``).
    """

    def __init__(
        self, directory: Path, *, instant_rollout: bool = True, expired_as: ExpiredAs = "event"
    ) -> None:
        self.directory = directory
        self.token = secrets.token_urlsafe(24)
        self.host = "127.0.0.1"
        self.port = 0
        self._ca = trustme.CA()
        self._client_ca = trustme.CA()
        self._server_cert = self._ca.issue_cert("127.0.0.1", "localhost")
        self._client_cert = self._client_ca.issue_cert(
            CLIENT_USER, common_name=CLIENT_USER, organization_name=CLIENT_GROUP
        )
        self._ssl = self._server_context()
        self._write_files()
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._store = ObjectStore(instant_rollout=instant_rollout, on_event=self._fan_out)
        self._router = Router(
            self._store,
            changed=self._changed,
            address=lambda: f"{self.host}:{self.port}",
            expired_as=expired_as,
        )
        self._watches = self._router.watches
        self._requests: list[KubeRequest] = []
        self._failures: list[_Failure] = []
        self._trio_token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._loop_event = trio.Event()

    @property
    def expired_as(self) -> ExpiredAs:
        """How a watch from an expired resourceVersion is answered: ``"event"`` (a 200 stream
        with one ERROR event, as the real server does) or ``"status"`` (an HTTP 410)."""
        return self._router.expired_as

    @expired_as.setter
    def expired_as(self, value: ExpiredAs) -> None:
        with self._lock:
            self._router.expired_as = value

    def __repr__(self) -> str:
        return f"<FakeKube {self.url} rv={self.resource_version}>"

    # -- certificates and files -------------------------------------------------------------

    def _server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server_cert.configure_cert(context)
        self._client_ca.configure_trust(context)
        context.verify_mode = ssl.CERT_OPTIONAL
        context.set_alpn_protocols(["http/1.1"])
        return context

    def _write_files(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ca_file = self.directory / "ca.crt"
        self._ca.cert_pem.write_to_path(str(self.ca_file))
        self.token_file = self.directory / "token"
        self.token_file.write_text(self.token)
        self.client_cert_file = self.directory / "client.crt"
        self.client_key_file = self.directory / "client.key"
        self.client_cert_file.write_bytes(self.client_cert_pem)
        self._client_cert.private_key_pem.write_to_path(str(self.client_key_file))
        self.service_account_dir = self.service_account(self.directory / "serviceaccount")

    @property
    def ca_pem(self) -> bytes:
        """The server CA certificate (PEM)."""
        return self._ca.cert_pem.bytes()

    @property
    def client_cert_pem(self) -> bytes:
        """The client certificate chain (PEM), issued by the client CA."""
        return b"".join(blob.bytes() for blob in self._client_cert.cert_chain_pems)

    @property
    def client_key_pem(self) -> bytes:
        return self._client_cert.private_key_pem.bytes()

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def service_account(self, directory: Path, namespace: str = "default") -> Path:
        """Write a service-account directory (``token``, ``ca.crt``, ``namespace``) there."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "token").write_text(self.token)
        (directory / "ca.crt").write_bytes(self.ca_pem)
        (directory / "namespace").write_text(namespace)
        return directory

    def in_cluster_env(self) -> dict[str, str]:
        """``KUBERNETES_SERVICE_HOST``/``_PORT`` as a pod sees them (for in-cluster tests)."""
        return {"KUBERNETES_SERVICE_HOST": self.host, "KUBERNETES_SERVICE_PORT": str(self.port)}

    def kubeconfig(
        self,
        path: Path,
        *,
        auth: Literal["token", "cert"] = "token",
        namespace: str = "default",
        token: str | None = None,
    ) -> Path:
        """Write a kubeconfig (YAML, data inline) for this server and return ``path``.

        ``auth="token"`` puts the server's token (or ``token``, e.g. a wrong one) in it;
        ``"cert"`` the client certificate and key. kubectl and the provider both read it.
        """
        if auth == "token":
            user = f"    token: {json.dumps(token if token is not None else self.token)}\n"
        else:
            user = (
                f"    client-certificate-data: {_b64(self.client_cert_pem)}\n"
                f"    client-key-data: {_b64(self.client_key_pem)}\n"
            )
        path.write_text(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n"
            f"    server: {self.url}\n    certificate-authority-data: {_b64(self.ca_pem)}\n"
            f"users:\n- name: fake-user\n  user:\n{user}"
            "contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake-user\n"
            f"    namespace: {json.dumps(namespace)}\ncurrent-context: fake\n"
        )
        return path

    # -- test controls (any thread) ---------------------------------------------------------

    @property
    def resource_version(self) -> str:
        """The current global resourceVersion."""
        with self._lock:
            return str(self._store.rv)

    @property
    def requests(self) -> list[KubeRequest]:
        """Every request so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def apply(self, obj: JsonObject) -> JsonObject:
        """Create or replace ``obj`` (by apiVersion, kind, namespace, name), unconditionally;
        fills the server's metadata, emits ADDED or MODIFIED and returns the stored object."""
        resource = find_resource(obj.get("apiVersion", ""), obj.get("kind", ""))
        obj = {**obj, "metadata": dict(obj.get("metadata") or {})}
        obj["metadata"].pop("resourceVersion", None)
        with self._lock:
            stored = self._store.write(resource, obj)
            self._changed()
        return stored

    def delete(
        self, api_version: str, kind_or_plural: str, namespace: str, name: str
    ) -> JsonObject:
        """Delete an object (``KubeError`` 404 if missing), emitting DELETED; returns it."""
        resource = find_resource(api_version, kind_or_plural)
        with self._lock:
            gone = self._store.delete(resource, namespace, name)
            self._changed()
        return gone

    def get(self, api_version: str, kind_or_plural: str, namespace: str, name: str) -> JsonObject:
        """The stored object (``KubeError`` 404 if missing)."""
        with self._lock:
            return self._store.get(find_resource(api_version, kind_or_plural), namespace, name)

    def objects(
        self, api_version: str, kind_or_plural: str, namespace: str | None = None
    ) -> list[JsonObject]:
        """The stored objects of a resource (in ``namespace``, or all), by namespace, name."""
        with self._lock:
            resource = find_resource(api_version, kind_or_plural)
            return self._store.list_objects(resource, namespace, Selector())

    def compact(self) -> None:
        """Forget the event log: a watch from any resourceVersion older than the current one
        is expired from now on (a watch from the current one is not: to make a client's
        resumed watch fail, drop it, write something, then compact). Open watches go on."""
        with self._lock:
            self._store.compact()

    def send_bookmarks(self) -> int:
        """Send a BOOKMARK (current resourceVersion) on every open watch that allows them;
        returns how many were sent."""
        with self._lock:
            sent = 0
            for watch in self._watches:
                if watch.bookmarks and not watch.finite:
                    mark = api.bookmark(watch.resource, self._store.rv)
                    watch.queue.append(("BOOKMARK", mark, None))
                    sent += 1
            self._changed()
            return sent

    def drop_watches(self) -> int:
        """Close every open watch stream abruptly (mid-body, no final chunk, no TLS
        close_notify); returns how many."""
        with self._lock:
            for watch in self._watches:
                watch.dropped = True
            self._changed()
            return len(self._watches)

    def fail_next(
        self, count: int, status: int, *, path_contains: str = "", watch: bool | None = None
    ) -> None:
        """Answer the next ``count`` authenticated requests whose path contains
        ``path_contains`` (and that are watches, with ``watch=True``, or are not, with
        ``False``) with a Status of HTTP ``status``: 410 as ``Expired``, 429, 500, 503…"""
        with self._lock:
            self._failures.append(_Failure(count, status, path_contains, watch))

    def watch_count(self, plural: str | None = None) -> int:
        """How many watch streams are open (on ``plural``, e.g. "ingresses", or on any)."""
        with self._lock:
            return sum(
                1
                for w in self._watches
                if not w.dropped and not w.finite and plural in (None, w.resource.plural)
            )

    def wait_for_blocking(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Block this thread until ``predicate()`` (re-checked after every change of the
        server's state: writes, requests, watches) holds; ``TimeoutError`` after ``timeout``
        seconds. For threads other than the server's loop."""
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise TimeoutError(f"fake kube: condition not met in {timeout} s")

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds, re-checked on every change (it runs with the
        state's lock held: keep it a quick read of the controls). From the server's own loop it
        is event-driven and bounded by the caller's cancel scope; from another trio loop it
        waits in a worker thread (``wait_for_blocking``, 10 s at most)."""
        if not self._in_loop():
            await trio.to_thread.run_sync(self.wait_for_blocking, predicate, abandon_on_cancel=True)
            return
        while True:
            with self._lock:
                event = self._loop_event
                if predicate():
                    return
            await event.wait()

    async def wait_for_watch(self, plural: str, count: int = 1) -> None:
        """Wait until at least ``count`` watches are open on ``plural``."""
        await self.wait_for(lambda: self.watch_count(plural) >= count)

    def wait_for_watch_blocking(self, plural: str, count: int = 1, timeout: float = 10.0) -> None:
        self.wait_for_blocking(lambda: self.watch_count(plural) >= count, timeout)

    # -- waking the loop ---------------------------------------------------------------------

    def _in_loop(self) -> bool:
        try:
            return trio.lowlevel.current_trio_token() is self._trio_token
        except RuntimeError:
            return False

    def _changed(self) -> None:
        """Something changed (call with the lock held): wake blocked threads and the loop."""
        self._cond.notify_all()
        if self._trio_token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self._trio_token.run_sync_soon(self._wake_loop)

    def _wake_loop(self) -> None:
        with self._lock:
            event, self._loop_event = self._loop_event, trio.Event()
        event.set()

    def _fan_out(self, entry: LogEntry) -> None:
        """A store event (the lock is held): queue it on every watch that wants it."""
        for watch in self._watches:
            if watch.wants(entry) and not watch.finite:
                watch.queue.append((entry.type, entry.obj, entry.old))

    # -- serving ----------------------------------------------------------------------------

    async def serve(
        self, *, task_status: trio.TaskStatus[FakeKube] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen on 127.0.0.1 (a free port) and serve until ``stop``; ``task_status`` gets
        this object once the port is bound."""
        with trio.CancelScope() as scope:
            listeners = await trio.open_tcp_listeners(0, host=self.host)
            self.port = listeners[0].socket.getsockname()[1]
            with self._lock:
                self._scope = scope
                self._trio_token = trio.lowlevel.current_trio_token()
                self._loop_event = trio.Event()
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(trio.serve_listeners, self._connection, listeners)
                    task_status.started(self)
            finally:
                with self._lock:
                    self._trio_token = self._scope = None
                    self._watches.clear()  # the router's list, emptied in place

    def stop(self) -> None:
        """Stop serving (from any thread); open connections are cut."""
        with self._lock:
            scope, token = self._scope, self._trio_token
        if scope is None or token is None:
            return
        if self._in_loop():
            scope.cancel()
            return
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(scope.cancel)

    async def _connection(self, tcp: trio.SocketStream) -> None:
        """One client connection: TLS handshake (bounded), then HTTP/1.1 exchanges; closed
        with close_notify when it ended normally, cut when a watch on it was dropped."""
        stream = trio.SSLStream(tcp, self._ssl, server_side=True)
        graceful = False
        try:
            with trio.fail_after(HANDSHAKE_WAIT):
                await stream.do_handshake()
            await self._exchanges(stream, cert=bool(stream.getpeercert()))
            graceful = True
        except _DroppedError:
            pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            pass
        except h11.ProtocolError:
            pass
        finally:
            if graceful:
                with trio.move_on_after(1):
                    await stream.aclose()
            await trio.aclose_forcefully(stream)

    async def _exchanges(self, stream: trio.SSLStream[trio.SocketStream], *, cert: bool) -> None:
        """Serve requests on one connection until it closes."""
        conn = h11.Connection(h11.SERVER)
        while True:
            received = await self._receive(conn, stream)
            if received is None:
                return
            answer = self._answer(*received, cert=cert)
            if isinstance(answer, Watch):
                await self._stream_watch(conn, stream, answer)
            else:
                await self._send_reply(conn, stream, answer)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _receive(
        self, conn: h11.Connection, stream: trio.SSLStream[trio.SocketStream]
    ) -> tuple[h11.Request, bytes] | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(bytes(await stream.receive_some(READ_SIZE)))
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    raise h11.RemoteProtocolError("request body too large")
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return head, bytes(body)
            else:  # ConnectionClosed
                return None

    async def _send_reply(
        self, conn: h11.Connection, stream: trio.SSLStream[trio.SocketStream], reply: Reply
    ) -> None:
        headers = [
            ("content-type", reply.content_type),
            ("content-length", str(len(reply.body))),
            ("cache-control", "no-cache, private"),
        ]
        response = h11.Response(status_code=reply.status, headers=headers)
        await stream.send_all(conn.send(response) + conn.send(h11.Data(data=reply.body)))
        await stream.send_all(conn.send(h11.EndOfMessage()))

    # -- requests ---------------------------------------------------------------------------

    def _auth(self, authorization: str, cert: bool) -> AuthKind:
        if cert:
            return "cert"
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return "none"
        ok = hmac.compare_digest(presented.strip().encode(), self.token.encode())
        return "token" if ok else "bad-token"

    def _answer(self, head: h11.Request, raw: bytes, *, cert: bool) -> Reply | Watch:
        """Log the request, check its credential and the planned failures, then route it."""
        path, _, raw_query = head.target.decode("latin-1").partition("?")
        path = urllib.parse.unquote(path)
        query = dict(urllib.parse.parse_qsl(raw_query, keep_blank_values=True))
        headers = {bytes(k).decode("latin-1"): bytes(v).decode("latin-1") for k, v in head.headers}
        auth = self._auth(headers.get("authorization", ""), cert)
        content_type = headers.get("content-type", "")
        method = head.method.decode("ascii")
        with self._lock:
            self._requests.append(KubeRequest(method, path, query, auth, content_type))
            self._changed()
            if auth not in ("token", "cert"):
                return json_reply(401, api.status(401, "Unauthorized"))
            watch = query.get("watch") in ("1", "true")
            for failure in self._failures:
                if failure.takes(path, watch):
                    code = failure.status
                    return json_reply(code, api.status(code, f"injected failure ({code})"))
            try:
                return self._router.route(method, path, query, raw, content_type)
            except KubeError as error:
                return error_reply(error)

    async def _stream_watch(
        self, conn: h11.Connection, stream: trio.SSLStream[trio.SocketStream], watch: Watch
    ) -> None:
        headers = [
            ("content-type", "application/json"),
            ("cache-control", "no-cache, private"),
            ("connection", "close"),
        ]
        # "timeout" (or a finite watch's "done"): end the response; "dropped": cut the
        # connection; "gone": the client closed it.
        outcome = "timeout"

        async def pump(cancel: trio.CancelScope) -> None:
            nonlocal outcome
            try:
                with trio.move_on_after(watch.timeout):
                    outcome = await self._pump(conn, stream, watch)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                outcome = "gone"
            cancel.cancel()

        async def read_eof(cancel: trio.CancelScope) -> None:
            nonlocal outcome
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while await stream.receive_some(READ_SIZE):
                    pass  # nothing more is expected on this connection (Connection: close)
            outcome = "gone"
            cancel.cancel()

        try:
            await stream.send_all(conn.send(h11.Response(status_code=200, headers=headers)))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump, nursery.cancel_scope)
                nursery.start_soon(read_eof, nursery.cancel_scope)
        finally:
            with self._lock:
                if watch in self._watches:
                    self._watches.remove(watch)
                self._changed()
        if outcome == "dropped":
            raise _DroppedError
        if outcome == "gone":
            raise trio.BrokenResourceError("the watching client went away")
        await stream.send_all(conn.send(h11.EndOfMessage()))

    async def _pump(
        self, conn: h11.Connection, stream: trio.SSLStream[trio.SocketStream], watch: Watch
    ) -> str:
        """Send queued events until the watch is dropped ("dropped") or, for a finite watch,
        its queue is empty ("done")."""
        while True:
            with self._lock:
                items = list(watch.queue)
                watch.queue.clear()
                dropped = watch.dropped
                event = self._loop_event
            for item in items:
                shaped = watch.shape(item)
                if shaped is not None:
                    await stream.send_all(conn.send(h11.Data(data=api.event_line(*shaped))))
            if dropped:
                return "dropped"
            if watch.finite:
                return "done"
            await event.wait()


@contextlib.contextmanager
def _directory(directory: Path | None) -> Iterator[Path]:
    if directory is not None:
        yield directory
        return
    with tempfile.TemporaryDirectory(prefix="fake-kube-") as temporary:
        yield Path(temporary)


@contextlib.asynccontextmanager
async def running_fake_kube(
    nursery: trio.Nursery,
    directory: Path | None = None,
    *,
    instant_rollout: bool = True,
    expired_as: ExpiredAs = "event",
) -> AsyncIterator[FakeKube]:
    """A ``FakeKube`` served by a task in ``nursery`` (the caller's), stopped at exit.
    Its files go to ``directory`` (default: a temporary directory removed at exit)."""
    with _directory(directory) as where:
        kube = FakeKube(where, instant_rollout=instant_rollout, expired_as=expired_as)
        await nursery.start(kube.serve)
        try:
            yield kube
        finally:
            kube.stop()


@contextlib.contextmanager
def fake_kube_in_thread(
    directory: Path | None = None,
    *,
    instant_rollout: bool = True,
    expired_as: ExpiredAs = "event",
) -> Iterator[FakeKube]:
    """A ``FakeKube`` served by its own trio loop in a background thread, for synchronous
    tests (subprocesses: the gateway, kubectl); stopped and joined (bounded) at exit."""
    with _directory(directory) as where:
        kube = FakeKube(where, instant_rollout=instant_rollout, expired_as=expired_as)
        ready = threading.Event()
        failures: list[BaseException] = []

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                await nursery.start(kube.serve)
                ready.set()

        def run() -> None:
            try:
                trio.run(main)
            except BaseException as exc:  # reported to the test thread below
                failures.append(exc)
            finally:
                ready.set()

        thread = threading.Thread(target=run, name="fake-kube", daemon=True)
        thread.start()
        try:
            if not ready.wait(THREAD_WAIT) or failures:
                raise RuntimeError(f"the fake Kubernetes API did not start: {failures!r}")
            yield kube
        finally:
            kube.stop()
            thread.join(THREAD_WAIT)
            assert not thread.is_alive(), "the fake Kubernetes API thread did not stop"

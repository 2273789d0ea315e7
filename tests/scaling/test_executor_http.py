"""The ``box`` and ``kubernetes`` executors against a fake API server on a real socket.

``FakeApi`` is an HTTP/1.1 server (trio + h11) on 127.0.0.1, over TLS when given a context: it
records every request (method, target, headers, body) and answers what the test's function
says: good JSON, bad JSON, wrong types, an error status, a redirect, a huge body, or nothing
at all (the client's deadline is then a short configured timeout, not a long sleep).
"""

from __future__ import annotations

import json
import logging
import re
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import h11
import pytest
import trio
import trustme

from a3s_gateway.config.schema_services import BoxExecutor as BoxSettings
from a3s_gateway.config.schema_services import KubernetesExecutor as KubernetesSettings
from a3s_gateway.config.urls import HttpUrl
from a3s_gateway.config.values import Duration
from a3s_gateway.scaling.executor_http import (
    MAX_BODY,
    BoxExecutor,
    Current,
    ExecutorError,
    KubernetesExecutor,
    ScaleResult,
)

LOG = logging.getLogger("tests.scaling.executor_http")
TOKEN = "s3cret-token-value"
SCALE_PATH = "/apis/apps/v1/namespaces/shop/deployments/api/scale"


@dataclass(frozen=True)
class Seen:
    """One request the fake server received (header names lower-cased)."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


@dataclass(frozen=True)
class Answer:
    """What the fake server sends back; ``hang`` sends nothing, ever."""

    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)
    hang: bool = False


def reply(document: object, status: int = 200) -> Answer:
    return Answer(status, json.dumps(document).encode())


class FakeApi:
    """A one-request-per-connection HTTP/1.1 server playing A3S Box or the Kubernetes API."""

    def __init__(self, answer: Callable[[Seen], Answer], context: ssl.SSLContext | None) -> None:
        self.answer = answer
        self.context = context
        self.seen: list[Seen] = []
        self.port = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        tcp = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = tcp[0].socket.getsockname()[1]
        listeners: list[trio.abc.Listener[trio.abc.Stream]] = list(tcp)
        if self.context is not None:
            listeners = [trio.SSLListener(one, self.context, https_compatible=True) for one in tcp]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.abc.Stream) -> None:
        try:
            connection = h11.Connection(h11.SERVER)
            seen = await self._receive(connection, stream)
            if seen is None:
                return
            self.seen.append(seen)
            answer = self.answer(seen)
            if answer.hang:
                await trio.sleep_forever()
            await self._send(connection, stream, answer)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            pass  # (a client that gave up, or a TLS handshake the client refused)
        finally:
            await trio.aclose_forcefully(stream)

    @staticmethod
    async def _receive(connection: h11.Connection, stream: trio.abc.Stream) -> Seen | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(bytes(await stream.receive_some(65536)))
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage) and head is not None:
                headers = {k.decode().lower(): v.decode() for k, v in head.headers}
                return Seen(head.method.decode(), head.target.decode(), headers, bytes(body))
            else:
                return None

    @staticmethod
    async def _send(connection: h11.Connection, stream: trio.abc.Stream, answer: Answer) -> None:
        headers = [*answer.headers, ("Content-Length", str(len(answer.body)))]
        data = connection.send(h11.Response(status_code=answer.status, headers=headers)) or b""
        data += connection.send(h11.Data(data=answer.body)) or b""
        data += connection.send(h11.EndOfMessage()) or b""
        await stream.send_all(data)


async def start(
    nursery: trio.Nursery, answer: Callable[[Seen], Answer], context: ssl.SSLContext | None = None
) -> FakeApi:
    api = FakeApi(answer, context)
    await nursery.start(api.serve)
    return api


def box_for(
    api: FakeApi, *, path: str = "", timeout: str = "2s", token_env: str | None = "T"
) -> BoxExecutor:
    settings = BoxSettings(
        url=HttpUrl(f"http://127.0.0.1:{api.port}{path}"),
        token_env=token_env,
        timeout=Duration(timeout),
    )
    return BoxExecutor("api", settings, environ={"T": f" {TOKEN}\n"}, log=LOG)


def assert_clean(error: ExecutorError) -> None:
    """One line, and no token in it."""
    text = str(error)
    assert "\n" not in text
    assert TOKEN not in text


# -- box --------------------------------------------------------------------------------------


async def test_box_scale_posts_the_decision_with_the_bearer_token(nursery: trio.Nursery) -> None:
    api = await start(
        nursery, lambda _: reply({"accepted": True, "actual_replicas": 3, "message": "ok"})
    )
    with trio.fail_after(5):
        result = await box_for(api).scale("api", 3, "load 2.4 > 1.4", current=1)
    assert result == ScaleResult(accepted=True, actual_replicas=3, message="ok")
    [seen] = api.seen
    assert (seen.method, seen.target) == ("POST", "/v1/scale/api")
    assert seen.headers["authorization"] == f"Bearer {TOKEN}"
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["host"] == f"127.0.0.1:{api.port}"
    assert seen.json() == {
        "service": "api",
        "direction": "up",
        "current_replicas": 1,
        "desired_replicas": 3,
        "reason": "load 2.4 > 1.4",
    }


async def test_box_scale_down_and_a_refused_decision(nursery: trio.Nursery) -> None:
    document = {"accepted": False, "actual_replicas": 2, "message": "busy\nnow", "extra": 1}
    api = await start(nursery, lambda _: reply(document))
    with trio.fail_after(5):
        result = await box_for(api).scale("api", -4, "idle", current=2)
    assert result == ScaleResult(accepted=False, actual_replicas=2, message="busy now")
    body = api.seen[0].json()
    assert isinstance(body, dict)
    assert (body["direction"], body["desired_replicas"]) == ("down", 0)


async def test_box_current_and_a_path_prefix_without_token(nursery: trio.Nursery) -> None:
    api = await start(nursery, lambda _: reply({"replicas": 4}))
    box = box_for(api, path="/box/", token_env=None)
    with trio.fail_after(5):
        assert await box.current("a/b") == Current(replicas=4, endpoints=None)
    [seen] = api.seen
    assert (seen.method, seen.target) == ("GET", "/box/v1/scale/a%2Fb")
    assert "authorization" not in seen.headers


async def test_box_with_its_token_variable_unset(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    api = await start(nursery, lambda _: reply({"replicas": 4}))
    settings = BoxSettings(url=HttpUrl(f"http://127.0.0.1:{api.port}"), token_env="BOX_TOKEN")
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        box = BoxExecutor("api", settings, environ={}, log=LOG)
    assert "BOX_TOKEN" in caplog.text
    with pytest.raises(ExecutorError, match="BOX_TOKEN is not set"):
        await box.current("api")
    assert api.seen == []


async def test_box_with_a_token_that_is_no_header_value(nursery: trio.Nursery) -> None:
    api = await start(nursery, lambda _: reply({"replicas": 4}))
    settings = BoxSettings(url=HttpUrl(f"http://127.0.0.1:{api.port}"), token_env="T")
    box = BoxExecutor("api", settings, environ={"T": f"{TOKEN} more"}, log=LOG)
    with pytest.raises(
        ExecutorError, match="the bearer token is not a valid header value"
    ) as caught:
        await box.current("api")
    assert_clean(caught.value)
    assert api.seen == []


BAD_ANSWERS = {
    "bad json": (Answer(200, b"{not json"), "invalid answer: JSON is malformed"),
    "wrong type": (
        reply({"accepted": "yes", "actual_replicas": 1, "message": ""}),
        "Expected `bool`, got `str` - at `$.accepted`",
    ),
    "negative": (
        reply({"accepted": True, "actual_replicas": -1, "message": ""}),
        "Expected `int` >= 0",
    ),
    "missing field": (reply({"accepted": True}), "missing required field `actual_replicas`"),
    "server error": (
        reply({"accepted": True, "actual_replicas": 1, "message": ""}, 500),
        "HTTP 500",
    ),
    "redirect": (Answer(302, headers=(("Location", "http://elsewhere/"),)), "HTTP 302: redirects"),
    "too long": (Answer(200, b" " * (MAX_BODY + 1)), f"longer than {MAX_BODY} bytes"),
    "no answer": (Answer(hang=True), "no complete answer within 0.2 s"),
}


@pytest.mark.parametrize("case", list(BAD_ANSWERS))
async def test_box_rejects_a_bad_answer(nursery: trio.Nursery, case: str) -> None:
    answer, reason = BAD_ANSWERS[case]
    api = await start(nursery, lambda _: answer)
    box = box_for(api, timeout="200ms")
    with trio.fail_after(5), pytest.raises(ExecutorError, match=re.escape(reason)) as caught:
        await box.scale("api", 2, "load", current=1)
    assert str(caught.value).startswith(
        f"box executor: POST http://127.0.0.1:{api.port}/v1/scale/api: "
    )
    assert_clean(caught.value)
    assert len(api.seen) == 1  # (a redirect is not followed)


async def test_box_current_rejects_a_wrong_type(nursery: trio.Nursery) -> None:
    api = await start(nursery, lambda _: reply({"replicas": "3"}))
    with trio.fail_after(5), pytest.raises(ExecutorError, match="Expected `int`, got `str`"):
        await box_for(api).current("api")


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A bound, not listening port: connections to it are refused."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


async def test_box_unreachable(refused_port: int) -> None:
    settings = BoxSettings(url=HttpUrl(f"http://127.0.0.1:{refused_port}"), token_env="T")
    box = BoxExecutor("api", settings, environ={"T": TOKEN}, log=LOG)
    with trio.fail_after(5), pytest.raises(ExecutorError, match="box executor: GET") as caught:
        await box.current("api")
    assert_clean(caught.value)


async def test_box_run_and_aclose() -> None:
    settings = BoxSettings()
    box = BoxExecutor("api", settings, environ={}, log=LOG)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(box.run)
            nursery.cancel_scope.cancel()
        await box.aclose()


# -- kubernetes -----------------------------------------------------------------------------


SCALE = {"kind": "Scale", "spec": {"replicas": 5}, "status": {"replicas": 3, "selector": "a=b"}}


def token_file(directory: Path, token: str = TOKEN) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "token"
    path.write_text(token + "\n", encoding="utf-8")
    return path


def kubernetes_for(
    environ: dict[str, str],
    account: Path,
    settings: KubernetesSettings | None = None,
) -> KubernetesExecutor:
    settings = settings or KubernetesSettings(namespace="shop")
    return KubernetesExecutor("api", settings, environ=environ, log=LOG, service_account=account)


def through_api(api: FakeApi, tmp_path: Path, prefix: str = "") -> dict[str, str]:
    return {
        "A3S_KUBERNETES_API": f"http://127.0.0.1:{api.port}{prefix}",
        "A3S_KUBERNETES_TOKEN_FILE": str(token_file(tmp_path / "explicit")),
    }


async def test_kubernetes_current_reads_status_replicas(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    api = await start(nursery, lambda _: reply(SCALE))
    executor = kubernetes_for(through_api(api, tmp_path), tmp_path / "none")
    with trio.fail_after(5):
        assert await executor.current("api") == Current(replicas=3, endpoints=None)
    [seen] = api.seen
    assert (seen.method, seen.target) == ("GET", SCALE_PATH)
    assert seen.headers["authorization"] == f"Bearer {TOKEN}"


async def test_kubernetes_current_without_status_is_zero(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    api = await start(nursery, lambda _: reply({"kind": "Scale", "spec": {"replicas": 2}}))
    executor = kubernetes_for(through_api(api, tmp_path, "/k8s/c1"), tmp_path / "none")
    with trio.fail_after(5):
        assert await executor.current("api") == Current(replicas=0, endpoints=None)
    assert api.seen[0].target == "/k8s/c1" + SCALE_PATH


async def test_kubernetes_scale_merge_patches_spec_replicas(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    answer = {"kind": "Scale", "spec": {"replicas": 4}, "status": {"replicas": 3}}
    api = await start(nursery, lambda _: reply(answer))
    executor = kubernetes_for(through_api(api, tmp_path), tmp_path / "none")
    with trio.fail_after(5):
        result = await executor.scale("api", 4, "load", current=3)
    assert result.accepted
    assert result.actual_replicas == 4
    [seen] = api.seen
    assert (seen.method, seen.target) == ("PATCH", SCALE_PATH + "?fieldManager=a3s-gateway")
    assert seen.headers["content-type"] == "application/merge-patch+json"
    assert seen.headers["authorization"] == f"Bearer {TOKEN}"
    assert seen.json() == {"spec": {"replicas": 4}}


async def test_kubernetes_refusal_is_not_accepted(nursery: trio.Nursery, tmp_path: Path) -> None:
    status = {"kind": "Status", "status": "Failure", "message": "scale.spec.replicas: Invalid"}
    api = await start(nursery, lambda _: reply(status, 422))
    executor = kubernetes_for(through_api(api, tmp_path), tmp_path / "none")
    with trio.fail_after(5):
        result = await executor.scale("api", 7, "load", current=2)
    assert result == ScaleResult(False, 2, "HTTP 422: scale.spec.replicas: Invalid")


@pytest.mark.parametrize(
    "answer", [Answer(307, headers=(("Location", "/x"),)), reply({}, 503), reply({"spec": 1})]
)
async def test_kubernetes_current_errors(
    nursery: trio.Nursery, tmp_path: Path, answer: Answer
) -> None:
    api = await start(nursery, lambda _: answer)
    executor = kubernetes_for(through_api(api, tmp_path), tmp_path / "none")
    with (
        trio.fail_after(5),
        pytest.raises(ExecutorError, match="kubernetes executor: GET") as caught,
    ):
        await executor.current("api")
    assert_clean(caught.value)


async def test_kubernetes_statefulset_in_the_pods_namespace(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    api = await start(nursery, lambda _: reply(SCALE))
    account = tmp_path / "account"
    token_file(account)  # (the pod's token: never sent over plain http)
    (account / "namespace").write_text("prod\n", encoding="utf-8")
    environ = {"A3S_KUBERNETES_API": f"http://127.0.0.1:{api.port}"}
    settings = KubernetesSettings(kind="statefulsets", name="db")
    with trio.fail_after(5):
        await kubernetes_for(environ, account, settings).current("api")
        await kubernetes_for(environ, tmp_path / "none", KubernetesSettings()).current("api")
    first, second = api.seen
    assert first.target == "/apis/apps/v1/namespaces/prod/statefulsets/db/scale"
    assert "authorization" not in first.headers
    assert second.target == "/apis/apps/v1/namespaces/default/deployments/api/scale"


@pytest.fixture
def authority() -> trustme.CA:
    return trustme.CA()


def server_context(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    return context


async def test_kubernetes_in_cluster_over_https(
    nursery: trio.Nursery, tmp_path: Path, authority: trustme.CA
) -> None:
    api = await start(nursery, lambda _: reply(SCALE), server_context(authority))
    account = tmp_path / "account"
    token_file(account, "pod-token")
    authority.cert_pem.write_to_path(str(account / "ca.crt"))
    (account / "namespace").write_text("shop", encoding="utf-8")
    environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(api.port)}
    executor = kubernetes_for(environ, account, KubernetesSettings())
    with trio.fail_after(5):
        assert await executor.current("api") == Current(3, None)
        token_file(account, "rotated-token")
        assert (await executor.scale("api", 5, "load", current=3)).accepted
    first, second = api.seen
    assert (first.method, first.target) == ("GET", SCALE_PATH)
    assert first.headers["authorization"] == "Bearer pod-token"
    assert second.headers["authorization"] == "Bearer rotated-token"
    assert second.headers["host"] == f"127.0.0.1:{api.port}"


async def test_kubernetes_https_with_an_untrusted_certificate(
    nursery: trio.Nursery, tmp_path: Path, authority: trustme.CA
) -> None:
    api = await start(nursery, lambda _: reply(SCALE), server_context(authority))
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    environ = {
        "A3S_KUBERNETES_API": f"https://127.0.0.1:{api.port}",
        "A3S_KUBERNETES_CA_FILE": str(other),
        "A3S_KUBERNETES_TOKEN_FILE": str(token_file(tmp_path)),
    }
    executor = kubernetes_for(environ, tmp_path / "none")
    with (
        trio.fail_after(5),
        pytest.raises(ExecutorError, match=r"TLS: .*certificate verify failed") as caught,
    ):
        await executor.current("api")
    assert_clean(caught.value)
    assert api.seen == []


@pytest.mark.parametrize(
    ("environ", "reason"),
    [
        ({}, "no API server: KUBERNETES_SERVICE_HOST"),
        ({"A3S_KUBERNETES_API": "ftp://host"}, 'A3S_KUBERNETES_API: url "ftp://host" is invalid'),
        ({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "x"}, "not a port"),
    ],
)
async def test_kubernetes_without_a_usable_api_server(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, environ: dict[str, str], reason: str
) -> None:
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        executor = kubernetes_for(environ, tmp_path)
    assert reason in caplog.text
    with pytest.raises(ExecutorError, match=re.escape(reason)):
        await executor.current("api")
    with pytest.raises(ExecutorError, match=re.escape(reason)):
        await executor.scale("api", 1, "load", current=0)


async def test_kubernetes_missing_token_file(nursery: trio.Nursery, tmp_path: Path) -> None:
    api = await start(nursery, lambda _: reply(SCALE))
    missing = tmp_path / "missing-token"
    environ = {
        "A3S_KUBERNETES_API": f"http://127.0.0.1:{api.port}",
        "A3S_KUBERNETES_TOKEN_FILE": str(missing),
    }
    with pytest.raises(ExecutorError, match=re.escape(f"token file {missing} does not exist")):
        await kubernetes_for(environ, tmp_path).current("api")
    assert api.seen == []

"""The ``kubernetes`` scale executor (``KubernetesExecutor``) against the fake Kubernetes API
server (``tests/support/fake_kube.py``) over real TLS, at the real ``/scale`` paths.

What is checked: ``current`` reads a Deployment's and a StatefulSet's ``status.replicas``;
``scale`` merge-patches ``spec.replicas`` through the subresource with
``fieldManager=a3s-gateway`` (seen in the stored object and the fake's request log); a wrong
token, a missing Deployment and injected API failures are reported as ``ExecutorError`` (by
``current``) or a result that is not accepted (by ``scale``), one line, no token; in-cluster
access through a service-account directory and ``KUBERNETES_SERVICE_HOST``/``_PORT`` (its
namespace used, its token read at every call, its CA checked); and the executor
``make_executor`` builds for the ``k8s`` alias.

Real sockets on the real clock (the fake runs in the test's nursery); every call is bounded by
``trio.fail_after``, and no test waits on time.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from a3s_gateway.config.schema_services import KubernetesExecutor as KubernetesSettings
from a3s_gateway.config.schema_services import Scaling
from a3s_gateway.scaling.executor_http import (
    Current,
    ExecutorError,
    KubernetesExecutor,
    ScaleResult,
)
from a3s_gateway.scaling.executors import make_executor
from tests.support.fake_kube import FakeKube, JsonObject, KubeRequest, running_fake_kube

LOG = logging.getLogger("tests.scaling.executor_kubernetes_fake")
#: The deadline of one executor call in these tests (the executor's own is 10 s).
CALL_WAIT = 5.0
WRONG_TOKEN = "not-the-servers-token-0123456789"
SHOP_API = "/apis/apps/v1/namespaces/shop/deployments/api/scale"


def workload(
    name: str,
    namespace: str = "shop",
    replicas: int = 1,
    *,
    kind: str = "Deployment",
    status_replicas: int | None = None,
) -> JsonObject:
    """A Deployment or StatefulSet; ``status_replicas`` sets a status (for a fake without
    ``instant_rollout``)."""
    obj: JsonObject = {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}},
    }
    if status_replicas is not None:
        obj["status"] = {"replicas": status_replicas}
    return obj


def explicit_access(kube: FakeKube, *, token_file: Path | None = None) -> dict[str, str]:
    """The environment of an operator who names the API server, token and CA files."""
    return {
        "A3S_KUBERNETES_API": kube.url,
        "A3S_KUBERNETES_TOKEN_FILE": str(token_file or kube.token_file),
        "A3S_KUBERNETES_CA_FILE": str(kube.ca_file),
    }


def executor_for(
    environ: dict[str, str],
    account: Path,
    settings: KubernetesSettings | None = None,
) -> KubernetesExecutor:
    settings = settings or KubernetesSettings(namespace="shop")
    return KubernetesExecutor("api", settings, environ=environ, log=LOG, service_account=account)


def scale_calls(kube: FakeKube) -> list[KubeRequest]:
    """The requests to a ``/scale`` subresource, oldest first."""
    return [request for request in kube.requests if request.path.endswith("/scale")]


def spec_replicas(kube: FakeKube, kind: str, namespace: str, name: str) -> int:
    replicas = kube.get("apps/v1", kind, namespace, name)["spec"]["replicas"]
    assert isinstance(replicas, int)
    return replicas


def assert_clean(message: str, kube: FakeKube, *tokens: str) -> None:
    """One line, and neither the server's token nor any of ``tokens`` in it."""
    assert "\n" not in message
    for secret in (kube.token, *tokens):
        assert secret not in message


# -- reading and scaling ----------------------------------------------------------------------


async def test_current_reads_a_deployments_replicas(nursery: trio.Nursery, tmp_path: Path) -> None:
    async with running_fake_kube(nursery, tmp_path / "kube") as kube:
        kube.apply(workload("api", replicas=3))
        kube.apply(workload("api", "other", replicas=7))
        executor = executor_for(explicit_access(kube), tmp_path / "no-account")
        with trio.fail_after(CALL_WAIT):
            assert await executor.current("api") == Current(replicas=3, endpoints=None)
        [seen] = kube.requests
        assert (seen.method, seen.path, seen.query) == ("GET", SHOP_API, {})
        assert seen.auth == "token"
        assert seen.content_type == ""  # (a GET has no body)


async def test_a_statefulset_is_read_and_scaled_by_its_own_name(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with running_fake_kube(nursery, tmp_path / "kube") as kube:
        kube.apply(workload("db", "data", replicas=2, kind="StatefulSet"))
        kube.apply(workload("db", "data", replicas=9))  # a Deployment of the same name
        settings = KubernetesSettings(namespace="data", name="db", kind="statefulsets")
        executor = executor_for(explicit_access(kube), tmp_path / "no-account", settings)
        with trio.fail_after(CALL_WAIT):
            assert await executor.current("api") == Current(replicas=2, endpoints=None)
            result = await executor.scale("api", 3, "load", current=2)
            assert result.accepted
            assert result.actual_replicas == 3
            assert await executor.current("api") == Current(replicas=3, endpoints=None)
        assert spec_replicas(kube, "statefulsets", "data", "db") == 3
        assert spec_replicas(kube, "deployments", "data", "db") == 9
        paths = {request.path for request in kube.requests}
        assert paths == {"/apis/apps/v1/namespaces/data/statefulsets/db/scale"}


async def test_scale_merge_patches_spec_replicas_as_a3s_gateway(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with running_fake_kube(nursery, tmp_path / "kube") as kube:
        kube.apply(workload("api", replicas=1))
        executor = executor_for(explicit_access(kube), tmp_path / "no-account")
        with trio.fail_after(CALL_WAIT):
            result = await executor.scale("api", 4, "load 2.4 > 1.4", current=1)
            assert result == ScaleResult(True, 4, "spec.replicas set to 4: load 2.4 > 1.4")
            stored = kube.get("apps/v1", "deployments", "shop", "api")
            assert (stored["spec"]["replicas"], stored["status"]["replicas"]) == (4, 4)
            assert await executor.current("api") == Current(replicas=4, endpoints=None)
            # a negative count is 0
            down = await executor.scale("api", -2, "idle", current=4)
            assert (down.accepted, down.actual_replicas) == (True, 0)
            assert await executor.current("api") == Current(replicas=0, endpoints=None)
        assert spec_replicas(kube, "deployments", "shop", "api") == 0
        patches = [request for request in scale_calls(kube) if request.method == "PATCH"]
        assert len(patches) == 2
        for patch in patches:
            assert patch.path == SHOP_API
            assert patch.query == {"fieldManager": "a3s-gateway"}
            assert patch.content_type == "application/merge-patch+json"
            assert patch.auth == "token"
        managers = kube.get("apps/v1", "deployments", "shop", "api")["metadata"]["managedFields"]
        mine = [entry for entry in managers if entry["manager"] == "a3s-gateway"]
        assert [entry["subresource"] for entry in mine] == ["scale"]
        assert mine[0]["fieldsV1"] == {"f:spec": {"f:replicas": {}}}


async def test_current_is_the_status_not_the_spec(nursery: trio.Nursery, tmp_path: Path) -> None:
    """Without an instant rollout the Deployment's status lags its spec: ``current`` reports
    the replicas that exist (status), ``scale`` the replicas asked for (spec)."""
    async with running_fake_kube(nursery, tmp_path / "kube", instant_rollout=False) as kube:
        kube.apply(workload("api", replicas=3, status_replicas=1))
        executor = executor_for(explicit_access(kube), tmp_path / "no-account")
        with trio.fail_after(CALL_WAIT):
            assert await executor.current("api") == Current(replicas=1, endpoints=None)
            result = await executor.scale("api", 5, "load", current=1)
            assert (result.accepted, result.actual_replicas) == (True, 5)
            assert await executor.current("api") == Current(replicas=1, endpoints=None)
            kube.apply(workload("api", replicas=5, status_replicas=5))  # the rollout ends
            assert await executor.current("api") == Current(replicas=5, endpoints=None)
        assert spec_replicas(kube, "deployments", "shop", "api") == 5


# -- failures -----------------------------------------------------------------------------------


async def test_a_wrong_token_is_an_error_without_the_token(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with running_fake_kube(nursery, tmp_path / "kube") as kube:
        kube.apply(workload("api", replicas=2))
        wrong = tmp_path / "wrong-token"
        wrong.write_text(WRONG_TOKEN + "\n", encoding="utf-8")
        executor = executor_for(explicit_access(kube, token_file=wrong), tmp_path / "no-account")
        with trio.fail_after(CALL_WAIT):
            with pytest.raises(ExecutorError, match="HTTP 401") as caught:
                await executor.current("api")
            result = await executor.scale("api", 5, "load", current=2)
        assert str(caught.value).startswith(f"kubernetes executor: GET {kube.url}{SHOP_API}: ")
        assert_clean(str(caught.value), kube, WRONG_TOKEN)
        assert result == ScaleResult(False, 2, "HTTP 401: Unauthorized")
        assert_clean(result.message, kube, WRONG_TOKEN)
        assert spec_replicas(kube, "deployments", "shop", "api") == 2
        assert [(r.method, r.auth) for r in kube.requests] == [
            ("GET", "bad-token"),
            ("PATCH", "bad-token"),
        ]


async def test_a_missing_deployment_is_an_error(nursery: trio.Nursery, tmp_path: Path) -> None:
    async with running_fake_kube(nursery, tmp_path / "kube") as kube:
        kube.apply(workload("other", replicas=2))
        executor = executor_for(explicit_access(kube), tmp_path / "no-account")
        with trio.fail_after(CALL_WAIT):
            with pytest.raises(ExecutorError, match="HTTP 404") as caught:
                await executor.current("api")
            result = await executor.scale("api", 3, "load", current=1)
        assert f"GET {kube.url}{SHOP_API}" in str(caught.value)
        assert_clean(str(caught.value), kube)
        assert result == ScaleResult(False, 1, 'HTTP 404: deployments.apps "api" not found')
        names = [obj["metadata"]["name"] for obj in kube.objects("apps/v1", "deployments")]
        assert names == ["other"]  # (a PATCH of the subresource creates nothing)
        assert spec_replicas(kube, "deployments", "shop", "other") == 2


async def test_api_failures_are_errors_and_the_next_call_works(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with running_fake_kube(nursery, tmp_path / "kube") as kube:
        kube.apply(workload("api", replicas=2))
        executor = executor_for(explicit_access(kube), tmp_path / "no-account")
        kube.fail_next(1, 503, path_contains="/scale")
        kube.fail_next(1, 429, path_contains="/scale")
        with trio.fail_after(CALL_WAIT):
            with pytest.raises(ExecutorError, match="HTTP 503"):
                await executor.current("api")
            result = await executor.scale("api", 3, "load", current=2)
            assert result == ScaleResult(False, 2, "HTTP 429: injected failure (429)")
            assert spec_replicas(kube, "deployments", "shop", "api") == 2
            assert (await executor.scale("api", 3, "load", current=2)).accepted
            assert await executor.current("api") == Current(replicas=3, endpoints=None)


# -- in-cluster access ------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["in-cluster", "api-url"])
async def test_the_pods_service_account(nursery: trio.Nursery, tmp_path: Path, where: str) -> None:
    """The token, CA and namespace from the service-account directory; the server from
    ``KUBERNETES_SERVICE_HOST``/``_PORT`` (or from ``A3S_KUBERNETES_API``, over https)."""
    async with running_fake_kube(nursery, tmp_path / "kube") as kube:
        account = kube.service_account(tmp_path / "account", namespace="shop")
        kube.apply(workload("api", replicas=2))
        kube.apply(workload("api", "default", replicas=8))
        environ = (
            kube.in_cluster_env() if where == "in-cluster" else {"A3S_KUBERNETES_API": kube.url}
        )
        executor = executor_for(environ, account, KubernetesSettings())
        with trio.fail_after(CALL_WAIT):
            assert await executor.current("api") == Current(replicas=2, endpoints=None)
            assert (await executor.scale("api", 6, "load", current=2)).accepted
        assert spec_replicas(kube, "deployments", "shop", "api") == 6
        assert spec_replicas(kube, "deployments", "default", "api") == 8
        assert [(r.method, r.path, r.auth) for r in kube.requests] == [
            ("GET", SHOP_API, "token"),
            ("PATCH", SHOP_API, "token"),
        ]


async def test_in_cluster_reads_the_accounts_token_at_every_call(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """No token file yet: the request goes without a credential (401); once the token is
    mounted (or rotated) the next call sends it."""
    async with running_fake_kube(nursery, tmp_path / "kube") as kube:
        account = kube.service_account(tmp_path / "account", namespace="shop")
        (account / "token").unlink()
        kube.apply(workload("api", replicas=2))
        executor = executor_for(kube.in_cluster_env(), account, KubernetesSettings())
        with trio.fail_after(CALL_WAIT):
            with pytest.raises(ExecutorError, match="HTTP 401") as caught:
                await executor.current("api")
            (account / "token").write_text(WRONG_TOKEN, encoding="utf-8")
            refused = await executor.scale("api", 3, "load", current=2)
            (account / "token").write_text(kube.token + "\n", encoding="utf-8")
            assert await executor.current("api") == Current(replicas=2, endpoints=None)
        assert_clean(str(caught.value), kube)
        assert refused == ScaleResult(False, 2, "HTTP 401: Unauthorized")
        assert [(r.method, r.auth) for r in kube.requests] == [
            ("GET", "none"),
            ("PATCH", "bad-token"),
            ("GET", "token"),
        ]
        assert spec_replicas(kube, "deployments", "shop", "api") == 2


async def test_in_cluster_checks_the_server_against_the_accounts_ca(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """Without ``ca.crt`` the system's trust store is used, which does not know the fake's CA:
    the handshake fails and the token is never sent."""
    async with running_fake_kube(nursery, tmp_path / "kube") as kube:
        account = kube.service_account(tmp_path / "account", namespace="shop")
        (account / "ca.crt").unlink()
        kube.apply(workload("api", replicas=2))
        executor = executor_for(kube.in_cluster_env(), account, KubernetesSettings())
        with trio.fail_after(CALL_WAIT):
            with pytest.raises(ExecutorError, match=r"TLS: .*certificate verify failed") as read:
                await executor.current("api")
            with pytest.raises(ExecutorError, match=r"TLS: .*certificate verify failed") as wrote:
                await executor.scale("api", 3, "load", current=2)
        for error in (read.value, wrote.value):
            assert_clean(str(error), kube)
        assert kube.requests == []
        assert spec_replicas(kube, "deployments", "shop", "api") == 2


async def test_the_k8s_alias_through_make_executor(nursery: trio.Nursery, tmp_path: Path) -> None:
    async with running_fake_kube(nursery, tmp_path / "kube") as kube:
        kube.apply(workload("web", replicas=1))
        scaling = Scaling(executor="k8s", kubernetes=KubernetesSettings(namespace="shop"))
        executor = make_executor("web", scaling, environ=explicit_access(kube), log=LOG)
        assert isinstance(executor, KubernetesExecutor)
        with trio.fail_after(CALL_WAIT):
            assert await executor.current("web") == Current(replicas=1, endpoints=None)
            assert (await executor.scale("web", 2, "load", current=1)).accepted
            await executor.aclose()
        assert spec_replicas(kube, "deployments", "shop", "web") == 2

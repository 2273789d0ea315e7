"""``POST /acme/renew`` and ``/acme/renew-all`` of the management API (management/api.py,
SPEC §12.5): they reach the view's ``acme_check`` (``force`` only for renew-all), answer 202,
404 without ACME, 405 for other methods, and are guarded like every other action."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from a3s_gateway.runtime.compile import compile_runtime
from tests.management.test_api import (
    GUARDED,
    OUTSIDER,
    PREFIX,
    TOKEN,
    FakeView,
    bearer,
    call,
    document,
    load,
)


@dataclass
class AcmeView(FakeView):
    """A ``FakeView`` whose ``acme_check`` records its calls and says whether ACME runs."""

    acme: bool = True
    checks: list[bool] = field(default_factory=list)

    def acme_check(self, *, force: bool) -> bool:
        self.checks.append(force)
        return self.acme


def acme_view(*, acme: bool = True) -> AcmeView:
    config = load()
    return AcmeView(config, compile_runtime(config, 1), acme=acme)


@pytest.mark.parametrize(("path", "force"), [("/acme/renew", False), ("/acme/renew-all", True)])
async def test_a_check_is_asked_and_accepted(path: str, force: bool) -> None:
    view = acme_view()
    response = await call(view, PREFIX + path, "POST")
    assert response.status == 202
    assert document(response) == {"acme": "checking", "force": force}
    assert view.checks == [force]


@pytest.mark.parametrize("path", ["/acme/renew", "/acme/renew-all/"])
async def test_without_acme_it_is_404(path: str) -> None:
    view = acme_view(acme=False)
    response = await call(view, PREFIX + path, "POST")
    assert response.status == 404
    assert document(response) == {"error": "no entrypoint uses ACME"}
    assert len(view.checks) == 1


@pytest.mark.parametrize("path", ["/acme/renew", "/acme/renew-all"])
@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE"])
async def test_other_methods_are_405_and_check_nothing(path: str, method: str) -> None:
    view = acme_view()
    response = await call(view, PREFIX + path, method)
    assert response.status == 405
    assert response.header("allow") == "POST"
    assert view.checks == []


@pytest.mark.parametrize("path", ["/acme", "/acme/renew/now", "/acme/renewall"])
async def test_other_acme_paths_are_404(path: str) -> None:
    view = acme_view()
    response = await call(view, PREFIX + path, "POST")
    assert (response.status, document(response)) == (404, {"error": "not found"})
    assert view.checks == []


@pytest.mark.parametrize("path", ["/acme/renew", "/acme/renew-all"])
async def test_the_token_and_the_ip_guard_it(path: str) -> None:
    view = acme_view()
    anonymous = await call(view, PREFIX + path, "POST", access=GUARDED)
    assert anonymous.status == 401
    assert anonymous.header("www-authenticate") == 'Bearer realm="a3s-gateway-management"'
    wrong = await call(view, PREFIX + path, "POST", access=GUARDED, authorization=bearer("x"))
    assert wrong.status == 401
    outsider = await call(
        view, PREFIX + path, "POST", client=OUTSIDER, authorization=bearer(TOKEN), access=GUARDED
    )
    assert outsider.status == 403
    assert view.checks == []
    allowed = await call(view, PREFIX + path, "POST", authorization=bearer(TOKEN), access=GUARDED)
    assert allowed.status == 202
    assert view.checks == [path.endswith("-all")]

"""The ACME guide (docs/acme.md) stays true to the code.

* Every ```hcl block validates (with the environment variables it names set) and has ACME on.
* The settings, challenge types, DNS providers, metric families, management endpoints, log
  lines and storage paths it names are the ones the code has.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Final

import pytest

from a3s_gateway.acme import manager, order_plan, storage
from a3s_gateway.config.load import load_config_text
from a3s_gateway.config.schema_entrypoints import AcmeDns, Tls
from a3s_gateway.management.api import _match
from a3s_gateway.observability.gateway_metrics import GatewayMetrics

ROOT: Final = Path(__file__).resolve().parents[2]
GUIDE: Final = ROOT / "docs" / "acme.md"
FENCE: Final = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
VARIABLE: Final = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")


def guide() -> str:
    return GUIDE.read_text(encoding="utf-8")


def blocks(kind: str) -> list[str]:
    return [match[2] for match in FENCE.finditer(guide()) if match[1].strip() == kind]


@pytest.mark.parametrize("index", range(len(blocks("hcl"))))
def test_every_hcl_block_loads_with_acme_on(index: int) -> None:
    block = blocks("hcl")[index]
    env = dict.fromkeys(VARIABLE.findall(block), "x" * 40)
    config = load_config_text(block, filename="docs/acme.md", env=env)
    assert any(e.tls is not None and e.tls.acme for e in config.entrypoints.values())


def test_the_first_setup_derives_the_names_it_says() -> None:
    config = load_config_text(blocks("hcl")[0], filename="docs/acme.md", env={})
    [entry] = order_plan.plan_acme(config)
    assert entry.domains == ("shop.example.com", "www.shop.example.com")
    assert entry.directory_url == order_plan.LETS_ENCRYPT_PRODUCTION
    assert order_plan.LETS_ENCRYPT_PRODUCTION in guide()
    assert order_plan.LETS_ENCRYPT_STAGING in guide()


def test_every_setting_and_choice_is_named() -> None:
    text = guide()
    for name in Tls.__struct_fields__:
        if name.startswith("acme"):
            assert f"`{name}`" in text, name
    for name in AcmeDns.__struct_fields__:
        assert f"`{name}`" in text, name
    for challenge in typing.get_args(Tls.__annotations__["acme_challenge"]):
        assert f"`{challenge}`" in text, challenge
    for provider in typing.get_args(AcmeDns.__annotations__["provider"]):
        assert re.search(rf'provider +=  *"{provider}"', text), provider


def test_the_metric_families_exist() -> None:
    metrics = GatewayMetrics(True, version="t")
    names = {family.name for family in (metrics.acme_orders, metrics.acme_challenges_served)}
    names.add(metrics.acme_not_after.name)
    for name in names:
        assert f"`{name}" in guide(), name
    for result in ("success", "ca_error", "rejected", "invalid"):
        assert f"`{result}`" in guide()


def test_the_endpoints_exist() -> None:
    for path in ("acme/renew", "acme/renew-all"):
        assert f"$M/{path}" in guide()
        endpoint = _match(tuple(path.split("/")))
        assert endpoint is not None
        assert endpoint.methods == ("POST",)


def test_the_schedule_and_the_storage_are_as_described() -> None:
    text = guide()
    assert manager.CHECK_INTERVAL == 12 * 3600
    assert "every 12 hours (±1 hour" in text
    assert manager.FIRST_RETRY == 60
    assert "1 minute, then 2, 4" in text
    assert manager.LOCK_RETRY == 5
    assert "every 5 seconds" in text
    assert storage.LOCK_STALE_SECONDS == 600
    assert "older than 10 minutes" in text
    assert storage.domain_directory_name("*.example.com") == "_wildcard.example.com"
    for path in ("account.json", "account.key.pem", "cert.pem", "key.pem", "meta.json"):
        assert f"`{path}`" in text or f"/{path}`" in text, path

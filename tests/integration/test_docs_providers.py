"""The service-discovery guide (docs/providers.md) stays true to the code.

* Every ```hcl block loads (with the environment variables it names set), and every discovery
  document (```json block with a ``"name"`` and a ``"version"``) is one the discovery provider
  accepts, with the routes it describes.
* The guide names every field of a ``/providers`` entry that the hub writes, every annotation
  the Kubernetes provider reads, the provider metric families, and the CRD file it tells users
  to apply exists.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Final

import pytest
import trio
import yaml

from a3s_gateway.config.load import load_config_text, load_text
from a3s_gateway.demo.exchange import serve_backend
from a3s_gateway.demo.replica import WELL_KNOWN, describing
from a3s_gateway.providers import kube_ingress
from a3s_gateway.providers.discovery import parse_document
from a3s_gateway.providers.dynamic import ProviderStatus
from a3s_gateway.providers.http_fetch import fetch
from a3s_gateway.providers.provider_hub import ProviderHub

pytestmark = pytest.mark.integration

ROOT: Final = Path(__file__).resolve().parents[2]
GUIDE: Final = ROOT / "docs" / "providers.md"
FENCE: Final = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
VARIABLE: Final = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")


def guide() -> str:
    return GUIDE.read_text(encoding="utf-8")


def blocks(kind: str) -> list[str]:
    return [match[2] for match in FENCE.finditer(guide()) if match[1].strip() == kind]


def test_the_guide_has_an_example_for_each_provider() -> None:
    text = "\n".join(blocks("hcl"))
    for provider in ("dns {", "discovery {", "kubernetes {"):
        assert provider in text, provider


@pytest.mark.parametrize("index", range(len(blocks("hcl"))))
def test_every_hcl_block_loads(index: int) -> None:
    block = blocks("hcl")[index]
    env = dict.fromkeys(VARIABLE.findall(block), "x" * 40)
    load_config_text(block, filename="docs/providers.md", env=env)


def test_the_discovery_documents_are_accepted() -> None:
    documents = [
        json.loads(block)
        for block in blocks("json")
        if '"version"' in block and '"routes"' in block and not block.lstrip().startswith("[")
    ]
    assert documents
    for document in documents:
        parsed, unknown = parse_document(json.dumps(document).encode())
        assert unknown == ()
        assert parsed.name == document["name"]
        assert [route.rule for route in parsed.routes] == [r["rule"] for r in document["routes"]]


def test_the_guide_names_every_providers_field() -> None:
    class Idle:
        status = ProviderStatus("discovery")

        async def run(self, publish: object, *, task_status: object = None) -> None:
            raise AssertionError("not started here")

    hub = ProviderHub(factories={"discovery": lambda settings: Idle()})
    config = load_config_text(
        'entrypoints "web" {\n  address = "127.0.0.1:0"\n}\n'
        'providers {\n  discovery {\n    seeds = [{ url = "http://127.0.0.1:9" }]\n  }\n}\n',
        filename="t.hcl",
        env={},
    )
    hub.apply(config)
    [document] = hub.documents()
    text = guide()
    for field in document:
        assert f"`{field}`" in text, field


def test_the_guide_names_every_annotation_and_the_crd_exists() -> None:
    text = guide()
    annotations = [
        value
        for name, value in vars(kube_ingress).items()
        if isinstance(value, str)
        and value.startswith("a3s-gateway.io/")
        and name.lstrip("_").isupper()
    ]
    assert annotations
    for annotation in annotations:
        assert f"`{annotation}`" in text, annotation
    [path] = re.findall(r"kubectl apply -f (deploy/crds/\S+\.yaml)", text)
    crd = yaml.safe_load((ROOT / path).read_text(encoding="utf-8"))
    assert crd["spec"]["group"] == "a3s-gateway.io"
    [ingress_route] = [block for block in blocks("yaml") if "kind: IngressRoute" in block]
    assert yaml.safe_load(ingress_route)["apiVersion"] == "a3s-gateway.io/v1alpha1"


def test_the_guide_names_the_provider_metrics() -> None:
    text = guide()
    for name in (
        "a3s_provider_changes_total",
        "a3s_provider_errors_total",
        "a3s_config_pending_references",
    ):
        assert f"`{name}" in text, name


def test_the_discovery_example_loads_without_warnings() -> None:
    example = ROOT / "examples" / "discovery.hcl"
    result = load_text(example.read_text(encoding="utf-8"), filename=str(example), env={})
    assert result.errors == ()
    assert [p.format() for p in result.problems if p.severity == "warning"] == []


async def test_the_demo_replica_describes_itself_as_the_guide_says() -> None:
    handler = describing("users", "1.1.0", ["PathPrefix(`/users`)", "PathPrefix(`/v2/users`)"])
    async with trio.open_nursery() as nursery:
        port = await nursery.start(functools.partial(serve_backend, "users", handler))
        fetched = await fetch(f"http://127.0.0.1:{port}{WELL_KNOWN}", timeout=5, max_body=65536)
        health = await fetch(f"http://127.0.0.1:{port}/status/200", timeout=5, max_body=65536)
        nursery.cancel_scope.cancel()
    assert fetched.status == 200
    document, unknown = parse_document(fetched.body)
    assert unknown == ()
    assert (document.name, document.version) == ("users", "1.1.0")
    assert [route.rule for route in document.routes] == [
        "PathPrefix(`/users`)",
        "PathPrefix(`/v2/users`)",
    ]
    assert document.health_path == "/status/200"
    assert health.status == 200


def test_the_readme_example_of_providers_loads() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    [block] = [
        match[2]
        for match in FENCE.finditer(readme)
        if match[1].strip() == "hcl" and "kubernetes {" in match[2]
    ]
    entrypoint = 'entrypoints "web" {\n  address = "127.0.0.1:8080"\n}\n'
    config = load_config_text(entrypoint + block, filename="README.md", env={})
    assert config.providers is not None
    assert config.providers.dns is not None
    assert config.providers.kubernetes is not None

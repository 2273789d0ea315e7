"""Where provider objects show their source (SPEC §4.7 tie-break, §9.6 ``source``): the route
table orders equal priorities files → discovery → Ingress → IngressRoute, and ``/config``,
``/routes`` and ``/services`` name the provider."""

from __future__ import annotations

import msgspec

from a3s_gateway.config.load import load_text
from a3s_gateway.management.api import (
    Clock,
    config_document,
    provider_documents,
    route_documents,
    service_documents,
)
from a3s_gateway.providers.dynamic import Snapshot, build_router, build_service
from a3s_gateway.runtime.compile import compile_runtime
from tests.management.test_api import make_view

CONFIG = (
    'entrypoints "web" {\n  address = "127.0.0.1:0"\n}\n'
    'services "app" {\n  load_balancer {\n    servers = [{ url = "http://127.0.0.1:9000" }]\n'
    "  }\n}\n"
    'routers "zz-file" {\n  rule = "Path(`/same`)"\n  service = "app"\n}\n'
)


def test_equal_priorities_are_ordered_by_source_then_name() -> None:
    result = load_text(CONFIG, filename="t.hcl", env={})
    assert result.config is not None
    same = build_router({"rule": "Path(`/same`)", "service": "app"})
    config = msgspec.structs.replace(
        result.config,
        routers={
            **result.config.routers,
            "a-crd": same,
            "b-ingress": same,
            "c-discovered": same,
        },
        services={
            **result.config.services,
            "found": build_service(
                {"load_balancer": {"servers": [{"url": "http://127.0.0.1:9001"}]}}
            ),
        },
        provider_sources={
            "routers/a-crd": "kubernetes-crd",
            "routers/b-ingress": "kubernetes",
            "routers/c-discovered": "discovery",
            "services/found": "discovery",
        },
    )
    runtime = compile_runtime(config, 1)
    assert [route.name for route in runtime.routes.routes] == [
        "zz-file",
        "c-discovered",
        "b-ingress",
        "a-crd",
    ]
    documents = route_documents(runtime)
    assert [(d["name"], d["source"]) for d in documents] == [
        ("zz-file", "file"),
        ("c-discovered", "discovery"),
        ("b-ingress", "kubernetes"),
        ("a-crd", "kubernetes-crd"),
    ]
    tree = config_document(config)
    assert "provider_sources" not in tree
    routers = tree["routers"]
    assert isinstance(routers, dict)
    assert routers["a-crd"]["source"] == "kubernetes-crd"
    assert routers["zz-file"]["source"] == "file"
    services = {
        d["name"]: d["source"] for d in service_documents(runtime, Clock(now=0.0, wall=0.0))
    }
    assert services == {"app": "file", "found": "discovery"}


def test_the_file_entry_of_providers_counts_the_files_objects_only() -> None:
    view = make_view(CONFIG + "providers {\n  file {\n    watch = false\n  }\n}\n")
    view.current = msgspec.structs.replace(
        view.current,
        routers={
            **view.current.routers,
            "found": build_router({"rule": "Path(`/x`)", "service": "app"}),
        },
        provider_sources={"routers/found": "discovery"},
    )
    [entry] = provider_documents(view, Clock(now=0.0, wall=0.0))
    objects = entry["objects"]
    assert isinstance(objects, dict)
    assert objects["routers"] == 1


def test_snapshot_counts_include_revision_servers() -> None:
    service = build_service(
        {
            "revisions": [
                {"name": "v1", "traffic_percent": 75, "servers": [{"url": "http://10.0.0.1:80"}]},
                {"name": "v2", "traffic_percent": 25, "servers": [{"url": "http://10.0.0.2:80"}]},
            ]
        }
    )
    assert Snapshot(services={"split": service}).counts()["servers"] == 2

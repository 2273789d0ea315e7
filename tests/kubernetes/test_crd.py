"""The IngressRoute CustomResourceDefinition (``deploy/crds/ingressroutes.a3s-gateway.io.yaml``,
SPEC §10.6): a valid ``apiextensions.k8s.io/v1`` object for the Kubernetes versions we support
(checked offline with the Kubernetes OpenAPI schemas that ``kubernetes-validate`` ships), with a
structural schema the API server accepts, whose strategies are the gateway's own; the sample
IngressRoutes in ``tests/fixtures/kubernetes`` pass its ``openAPIV3Schema`` (``jsonschema``) and
each broken sample in ``invalid/`` fails it for the reason its name gives. The built-in samples
are valid Kubernetes objects too, and ``kubectl apply --dry-run=client`` takes the CRD and the
samples against the fake API server.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Final, get_args

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped] # ships no types (checked: 1.37.0)
import pytest
import trio
import yaml

from a3s_gateway.config.schema_services import Strategy
from tests.support.fake_kube import running_fake_kube
from tests.support.fake_kube_kubectl import Kubectl

ROOT: Final = Path(__file__).parents[2]
CRD_FILE: Final = ROOT / "deploy" / "crds" / "ingressroutes.a3s-gateway.io.yaml"
FIXTURES: Final = ROOT / "tests" / "fixtures" / "kubernetes"
#: Kubernetes minor versions the CRD must be valid for: the oldest still common in managed
#: clusters, the kubectl here, and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS: Final = ("1.29.0", "1.32.0", kubernetes_validate.latest_version())

Schema = dict[str, Any]


def load(path: Path) -> Schema:
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict)
    return loaded


def crd() -> Schema:
    return load(CRD_FILE)


def openapi_schema() -> Schema:
    (version,) = crd()["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    assert isinstance(schema, dict)
    return schema


def strict(schema: Schema) -> Schema:
    """The schema as strict field validation applies it (``kubectl apply``'s default, and the
    API server's ``fieldValidation=Strict``): unknown fields of a typed object are errors
    instead of being pruned."""
    out = copy.deepcopy(schema)
    nodes = [out]
    while nodes:
        node = nodes.pop()
        if node.get("type") == "object" and "properties" in node:
            node.setdefault("additionalProperties", False)
        nodes.extend(node.get("properties", {}).values())
        if isinstance(node.get("items"), dict):
            nodes.append(node["items"])
    return out


def problems(document: Schema, schema: Schema) -> set[tuple[str, str]]:
    """(validator keyword, dotted path) of every error of ``document`` against ``schema``."""
    validator = jsonschema.Draft7Validator(schema)
    return {
        (error.validator, ".".join(str(p) for p in error.absolute_path))
        for error in validator.iter_errors(document)
    }


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_crd_is_a_valid_custom_resource_definition(version: str) -> None:
    assert kubernetes_validate.validate(crd(), version, strict=True)


def test_the_validator_does_check_custom_resource_definitions() -> None:
    """A misspelt field and a wrong type fail: the check above is not vacuous."""
    misspelt = crd()
    misspelt["spec"]["versions"][0]["servd"] = True
    wrong_type = crd()
    wrong_type["spec"]["scope"] = ["Namespaced"]
    for broken in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[1], strict=True)


def test_the_crd_names_and_version() -> None:
    document = crd()
    spec = document["spec"]
    assert document["metadata"]["name"] == f"{spec['names']['plural']}.{spec['group']}"
    assert spec["group"] == "a3s-gateway.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "IngressRoute",
        "listKind": "IngressRouteList",
        "plural": "ingressroutes",
        "singular": "ingressroute",
        "shortNames": ["ir"],
    }
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)


def test_the_fields_of_the_spec() -> None:
    spec = openapi_schema()["properties"]["spec"]
    assert spec["required"] == ["routes"]
    assert set(spec["properties"]) == {"entrypoints", "routes", "tls"}
    assert spec["properties"]["entrypoints"]["items"]["type"] == "string"
    assert spec["properties"]["tls"]["required"] == ["secretName"]
    routes = spec["properties"]["routes"]
    assert routes["minItems"] == 1
    route = routes["items"]
    assert sorted(route["required"]) == ["match", "services"]
    assert set(route["properties"]) == {"match", "priority", "middlewares", "services"}
    assert route["properties"]["priority"]["type"] == "integer"
    assert route["properties"]["middlewares"]["items"]["required"] == ["name"]
    services = route["properties"]["services"]
    assert services["minItems"] == 1
    service = services["items"]["properties"]
    assert sorted(services["items"]["required"]) == ["name", "port"]
    assert service["port"]["x-kubernetes-int-or-string"] is True
    assert (service["weight"]["type"], service["weight"]["minimum"]) == ("integer", 0)
    assert service["weight"]["default"] == 1


def test_the_strategies_are_the_gateways() -> None:
    """The enum is the config's ``Strategy`` literal, in its order (nothing more, nothing less)."""
    spec = openapi_schema()["properties"]["spec"]
    service = spec["properties"]["routes"]["items"]["properties"]["services"]["items"]
    assert service["properties"]["strategy"]["enum"] == list(get_args(Strategy))


def _structural_problems(node: Schema, path: str) -> list[str]:
    """Where ``node`` breaks the structural-schema rules the API server enforces for
    ``apiextensions.k8s.io/v1``: a type everywhere (int-or-string aside), ``anyOf`` only as
    int-or-string's two branches, ``metadata`` with nothing but ``type: object``."""
    found = []
    if "type" not in node and not node.get("x-kubernetes-int-or-string"):
        found.append(f"{path}: no type")
    if "anyOf" in node and node["anyOf"] != [{"type": "integer"}, {"type": "string"}]:
        found.append(f"{path}: anyOf other than int-or-string")
    found += [f"{path}: {key}" for key in ("oneOf", "allOf", "not", "additionalProperties")
              if key in node]  # fmt: skip
    for name, child in node.get("properties", {}).items():
        if name == "metadata" and path == "":
            if child != {"type": "object"}:
                found.append("metadata: more than type: object")
            continue
        found += _structural_problems(child, f"{path}.{name}")
    if "items" in node:
        found += _structural_problems(node["items"], f"{path}[]")
    return found


def test_the_schema_is_structural() -> None:
    assert _structural_problems(openapi_schema(), "") == []


def _samples(pattern: str) -> list[Path]:
    return sorted(FIXTURES.glob(pattern))


@pytest.mark.parametrize("sample", _samples("ingressroute-*.yaml"), ids=lambda p: p.name)
def test_the_sample_ingressroutes_are_valid(sample: Path) -> None:
    document = load(sample)
    assert (document["apiVersion"], document["kind"]) == ("a3s-gateway.io/v1alpha1", "IngressRoute")
    assert problems(document, strict(openapi_schema())) == set()


#: Each broken sample and the error it must produce (validator keyword, path).
BROKEN: Final = {
    "ingressroute-no-spec.yaml": ("required", ""),
    "ingressroute-no-routes.yaml": ("required", "spec"),
    "ingressroute-empty-routes.yaml": ("minItems", "spec.routes"),
    "ingressroute-no-match.yaml": ("required", "spec.routes.0"),
    "ingressroute-empty-services.yaml": ("minItems", "spec.routes.0.services"),
    "ingressroute-service-no-port.yaml": ("required", "spec.routes.0.services.0"),
    "ingressroute-port-float.yaml": ("anyOf", "spec.routes.0.services.0.port"),
    "ingressroute-negative-weight.yaml": ("minimum", "spec.routes.0.services.0.weight"),
    "ingressroute-bad-strategy.yaml": ("enum", "spec.routes.0.services.0.strategy"),
    "ingressroute-middleware-no-name.yaml": ("required", "spec.routes.0.middlewares.0"),
    "ingressroute-priority-string.yaml": ("type", "spec.routes.0.priority"),
    "ingressroute-tls-no-secret.yaml": ("required", "spec.tls"),
    "ingressroute-unknown-field.yaml": ("additionalProperties", "spec.routes.0"),
}


def test_every_broken_sample_is_listed() -> None:
    assert sorted(p.name for p in _samples("invalid/*.yaml")) == sorted(BROKEN)


@pytest.mark.parametrize(("name", "expected"), sorted(BROKEN.items()))
def test_the_broken_samples_fail(name: str, expected: tuple[str, str]) -> None:
    document = load(FIXTURES / "invalid" / name)
    found = problems(document, strict(openapi_schema()))
    assert expected in found, found
    lenient = problems(document, openapi_schema())
    if expected[0] == "additionalProperties":
        assert lenient == set()  # without strict validation the field would only be pruned
    else:
        assert expected in lenient


BUILT_IN: Final = [p for p in _samples("*.yaml") if not p.name.startswith("ingressroute-")]


@pytest.mark.parametrize("sample", BUILT_IN, ids=lambda p: p.name)
def test_the_built_in_samples_are_valid_kubernetes_objects(sample: Path) -> None:
    assert kubernetes_validate.validate(load(sample), KUBERNETES_VERSIONS[1], strict=True)


@pytest.mark.integration
async def test_kubectl_dry_run_takes_the_crd_and_the_samples(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with running_fake_kube(nursery, tmp_path / "kube") as kube:
        files = [CRD_FILE, *_samples("*.yaml")]
        args = [arg for path in files for arg in ("-f", str(path))]
        done = await Kubectl(kube, tmp_path).run("apply", "--dry-run=client", *args)
        assert done.returncode == 0, done.stderr
        printed = done.stdout.decode()
        assert (
            "customresourcedefinition.apiextensions.k8s.io/ingressroutes.a3s-gateway.io" in printed
        )
        assert "ingressroute.a3s-gateway.io/web created (dry run)" in printed
        assert printed.count("(dry run)") == len(files)
        assert {r.method for r in kube.requests} == {"GET"}

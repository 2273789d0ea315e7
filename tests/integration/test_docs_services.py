"""The services guide (docs/services.md) stays true to the code.

* Every ```hcl block loads with ``load_config_text`` without warnings. A block that is only
  ``services`` definitions (a fragment) is completed with an entrypoint ``web`` and a router
  to its first service; ``${VAR}`` values get a 32-byte stand-in.
* Every ```hcl-invalid block is refused, and the ``validate`` output printed right after it is
  what the loader reports.
* The field tables name real fields, and every default they state in backticks is the schema's
  default. Every field of the service blocks is documented in a table, or listed under "Not
  available yet" together with every service setting the loader refuses as not available.
* Some examples run in front of real origins and behave as the guide says: a path prefix with
  ``pass_host_header = false`` and a drained server, the 3:1 round-robin order, the client IP
  behind a trusted proxy, failover after failed connects, passive ejection, the sticky cookie
  and its attributes, and the 10 % mirror.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec
import pytest
import trio

from a3s_gateway import ConfigError, load_config_text
from a3s_gateway.config import schema, schema_services
from a3s_gateway.config.availability import UNAVAILABLE
from a3s_gateway.config.load import load_text
from a3s_gateway.config.values import Duration, DurationOrZero
from tests.support.gateway import curl, free_port, running_gateway
from tests.support.origin import Fixed, Origin

pytestmark = pytest.mark.integration

ROOT: Final = Path(__file__).resolve().parents[2]
GUIDE: Final = ROOT / "docs" / "services.md"
DOCUMENT: Final = GUIDE.read_text(encoding="utf-8")

#: A fenced block: its info string and its text (fences are at the start of a line).
FENCE: Final = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
#: A block's top-level items: names written at the start of a line.
TOP_LEVEL: Final = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\b", re.MULTILINE)
SERVICE_NAME: Final = re.compile(r'^services\s+"([^"]+)"', re.MULTILINE)
#: ``${NAME}`` and ``${NAME:-default}``, but not the literal ``$${``.
VARIABLE: Final = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")
SECRET: Final = "docs-sticky-secret-0123456789abc"


@dataclass(frozen=True)
class Block:
    """One fenced block: its info string, first line number, text, and the text of the fenced
    block right after it (None when something else comes first)."""

    info: str
    line: int
    text: str
    output: str | None


def guide_blocks() -> list[Block]:
    matches = list(FENCE.finditer(DOCUMENT))
    blocks = []
    for index, match in enumerate(matches):
        following = matches[index + 1] if index + 1 < len(matches) else None
        adjacent = following is not None and not DOCUMENT[match.end() : following.start()].strip()
        blocks.append(
            Block(
                info=match[1].strip(),
                line=DOCUMENT.count("\n", 0, match.start()) + 1,
                text=match[2],
                output=following[2] if following is not None and adjacent else None,
            )
        )
    return blocks


BLOCKS: Final = guide_blocks()
VALID: Final = [block for block in BLOCKS if block.info == "hcl"]
INVALID: Final = [block for block in BLOCKS if block.info == "hcl-invalid"]


def completed(text: str, *, address: str = "127.0.0.1:18080") -> str:
    """``text`` as a whole config. A fragment of ``services`` blocks comes first (so its line
    numbers stay), then entrypoint ``web`` and a router to its first service."""
    if set(TOP_LEVEL.findall(text)) != {"services"}:
        return text
    first = SERVICE_NAME.findall(text)[0]
    return (
        f'{text}\nentrypoints "web" {{\n  address = "{address}"\n}}\n'
        f'routers "docs" {{\n  rule    = "PathPrefix(`/`)"\n  service = "{first}"\n}}\n'
    )


def environment(text: str) -> dict[str, str]:
    return dict.fromkeys(VARIABLE.findall(text), SECRET)


def block_with(marker: str) -> Block:
    """The one ```hcl block of the guide that contains ``marker``."""
    found = [block for block in VALID if marker in block.text]
    assert len(found) == 1, (marker, [block.line for block in found])
    return found[0]


def section(heading: str) -> str:
    """The text of the ``## heading`` section, up to the next ``## ``."""
    start = DOCUMENT.index(f"\n## {heading}\n")
    end = DOCUMENT.find("\n## ", start + 1)
    return DOCUMENT[start : end if end >= 0 else len(DOCUMENT)]


# -- every example loads -------------------------------------------------------------------------


def test_the_guide_has_examples_and_no_unknown_fence_kinds() -> None:
    assert len(VALID) >= 12
    assert len(INVALID) >= 1
    assert {block.info for block in BLOCKS if block.info.startswith("hcl")} <= {
        "hcl",
        "hcl-invalid",
    }


@pytest.mark.parametrize("block", VALID, ids=[f"line{block.line}" for block in VALID])
def test_every_hcl_example_loads_without_warnings(block: Block) -> None:
    # Blank lines in front, so that problems point at the guide's own line numbers.
    text = "\n" * block.line + completed(block.text)
    env = environment(text)
    config = load_config_text(text, filename="docs/services.md", env=env)
    for name in SERVICE_NAME.findall(block.text):
        assert name in config.services
    warnings = [p.format() for p in load_text(text, env=env).problems if p.severity == "warning"]
    assert warnings == []


@pytest.mark.parametrize("block", INVALID, ids=[f"line{block.line}" for block in INVALID])
def test_every_invalid_example_is_refused_as_shown(block: Block) -> None:
    text = completed(block.text)
    with pytest.raises(ConfigError) as refused:
        load_config_text(text, filename="gateway.hcl", env=environment(text))
    assert block.output is not None, "show what validate prints after an hcl-invalid block"
    shown = [line for line in block.output.splitlines() if line.strip()]
    assert shown
    assert set(shown) <= {problem.format() for problem in refused.value.problems}


# -- the tables tell the schema's truth ----------------------------------------------------------

#: Each section with a field table, and the block its tables describe.
TABLES: Final[dict[str, type[msgspec.Struct]]] = {
    "A service in brief": schema_services.LoadBalancer,
    "Servers": schema_services.Server,
    "Connect attempts and failover": schema_services.Failover,
    "Timeouts": schema_services.LoadBalancer,
    "The connection pool": schema_services.LoadBalancer,
    "HTTPS backends": schema_services.UpstreamTls,
    "Active health checks": schema_services.HealthCheck,
    "Passive health": schema_services.PassiveHealth,
    "Sticky sessions": schema_services.Sticky,
    "Mirroring": schema_services.Mirror,
}
ROW: Final = re.compile(r"^\| `([a-z_]+)` \| ([^|]*) \|", re.MULTILINE)


def rendered(value: object) -> str:
    """A default as the guide writes it in backticks."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (Duration, DurationOrZero)):
        return value.text
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, tuple):
        return "[" + ", ".join(rendered(item) for item in value) + "]"
    if isinstance(value, dict):
        assert not value
        return "{}"
    return str(value)


def documented_rows() -> list[tuple[str, type[msgspec.Struct], str, str]]:
    """(section, struct, field, default cell) of every field table row."""
    rows = []
    for heading, struct in TABLES.items():
        text = section(heading)
        tables = [part for part in text.split("\n\n") if part.startswith("| Field | Default |")]
        assert tables, f"no field table in {heading!r}"
        for table in tables:
            rows += [(heading, struct, match[1], match[2].strip()) for match in ROW.finditer(table)]
    return rows


ROWS: Final = documented_rows()


@pytest.mark.parametrize(
    ("heading", "struct", "field", "cell"), ROWS, ids=[f"{row[0]}:{row[2]}" for row in ROWS]
)
def test_every_table_row_states_the_schema_default(
    heading: str, struct: type[msgspec.Struct], field: str, cell: str
) -> None:
    fields = {info.encode_name: info for info in msgspec.structs.fields(struct)}
    assert field in fields, f"{heading}: {field} is not a field of {struct.__name__}"
    info = fields[field]
    if info.required:
        assert cell.startswith("required"), cell
        return
    default: object = info.default
    if info.default_factory is not msgspec.NODEFAULT:
        default = info.default_factory()
    if default is None or isinstance(default, msgspec.Struct):
        return  # "none", "unset", "on, with defaults": described in words
    written = re.match(r"`([^`]*)`", cell)
    assert written is not None, f"{heading}: the default of {field} should be in backticks"
    assert written[1] == rendered(default)


def not_available() -> str:
    """Where the guide points at the settings it does not cover itself: the section on
    autoscaling, revisions and rollouts (their own guide, docs/scaling.md)."""
    return section("Autoscaling, revisions and canary rollouts")


def in_backticks(term: str, text: str) -> bool:
    """Whether ``term`` ends a backticked name in ``text`` (`x`, `a.x`)."""
    return re.search(r"`(?:[^`]*[.])?" + re.escape(term) + "`", text) is not None


def test_every_service_field_is_documented_or_listed_as_not_available() -> None:
    tabled = {(struct, field) for _, struct, field, _ in ROWS}
    waiting = not_available()
    for struct in (
        schema_services.LoadBalancer,
        schema_services.Server,
        schema_services.HealthCheck,
        schema_services.PassiveHealth,
        schema_services.Sticky,
        schema_services.Mirror,
        schema_services.Failover,
    ):
        for info in msgspec.structs.fields(struct):
            if (struct, info.encode_name) not in tabled:
                assert in_backticks(info.encode_name, waiting), (struct.__name__, info.encode_name)
    for info in msgspec.structs.fields(schema.Service):
        name = info.encode_name
        assert in_backticks(name, DOCUMENT), name
        if name not in {"load_balancer", "mirror", "failover"}:
            assert in_backticks(name, waiting), name


def refused_service_terms() -> list[str]:
    """What each service row of the loader's "not available yet" table refuses: the URL
    schemes, else the field names (``services.<name>.load_balancer.hash_key (…)`` →
    ``hash_key``)."""
    terms: list[str] = []
    for row in UNAVAILABLE:
        if not row.where.startswith("services."):
            continue
        where = row.where.split(" (")[0]
        schemes = re.findall(r"[a-z0-9]+://", where)
        if schemes:
            terms += schemes
        else:
            terms += [part.strip().rsplit(".", 1)[-1] for part in where.split(",")]
    return terms


def test_not_available_lists_every_refused_service_setting() -> None:
    terms = refused_service_terms()
    assert "scaling" not in terms  # autoscaling works (issue #21), as do revisions and rollouts
    assert "rollout" not in terms
    assert "upstream_tls" not in terms  # HTTPS backends work: documented, no longer refused
    assert "panic_threshold" not in terms  # panic mode works: documented, no longer refused
    assert "https://" not in terms
    assert "wss://" not in terms  # WebSocket proxying works (issue #19)
    assert "tls://" not in terms  # TCP routers work (issue #20)
    waiting = not_available()
    missing = [term for term in terms if not in_backticks(term, waiting)]
    assert missing == []


# -- examples that run ---------------------------------------------------------------------------


def localized(text: str, origins: dict[int, int]) -> str:
    """``text`` completed on an ephemeral port, each ``127.0.0.1:<doc port>`` of ``origins``
    replaced by the real port."""
    text = completed(text, address="127.0.0.1:0").replace(
        'address = "127.0.0.1:8080"', 'address = "127.0.0.1:0"'
    )
    for documented, real in origins.items():
        assert f"127.0.0.1:{documented}" in text, documented
        text = text.replace(f"127.0.0.1:{documented}", f"127.0.0.1:{real}")
    return text


async def started(nursery: trio.Nursery, *names: str) -> list[Origin]:
    origins = [Origin(name) for name in names]
    for origin in origins:
        await nursery.start(origin.serve)
    return origins


async def served_by(url: str, times: int, *args: str) -> list[str]:
    """The ``origin`` of each of ``times`` sequential requests (one curl, one connection)."""
    result = await curl(*[url] * times, *args)
    assert len(result.responses) == times, result.stderr
    names = []
    for response in result.responses:
        assert response.status == 200, response
        origin = response.json()["origin"]
        assert isinstance(origin, str)
        names.append(origin)
    return names


async def test_a_path_prefix_without_the_host_and_a_drained_server(nursery: trio.Nursery) -> None:
    live, drained = await started(nursery, "live", "drained")
    text = localized(block_with('"legacy"').text, {9001: live.port, 9002: drained.port})
    async with running_gateway(load_config_text(text)) as gw:
        await served_by(gw.url("/users?page=2"), 4)
    assert [seen.target for seen in live.requests] == [b"/v1/users?page=2"] * 4
    assert live.requests[0].header(b"host") == f"127.0.0.1:{live.port}".encode()
    assert drained.requests == []


async def test_weights_three_to_one_in_round_robin_order(nursery: trio.Nursery) -> None:
    a, b = await started(nursery, "a", "b")
    text = localized(block_with("servers {").text, {9001: a.port, 9002: b.port})
    async with running_gateway(load_config_text(text)) as gw:
        order = await served_by(gw.url("/"), 8)
    assert order == ["a", "a", "b", "a"] * 2


async def test_the_client_ip_behind_a_trusted_proxy(nursery: trio.Nursery) -> None:
    (app,) = await started(nursery, "app")
    text = localized(block_with("forwarded_headers").text, {9001: app.port})
    # The test's load balancer is 127.0.0.1 rather than the guide's 10.1.2.3.
    trusted = '["10.0.0.0/8"]'
    assert text.count(trusted) == 1
    text = text.replace(trusted, '["10.0.0.0/8", "127.0.0.1"]')
    for config in (text, text.replace(', "127.0.0.1"]', "]")):
        async with running_gateway(load_config_text(config)) as gw:
            await served_by(gw.url("/"), 1, "-H", "X-Forwarded-For: 198.51.100.7, 10.0.4.4")
    behind, direct = app.requests
    assert behind.header(b"x-forwarded-for") == b"198.51.100.7, 10.0.4.4, 127.0.0.1"
    assert behind.header(b"x-real-ip") == b"198.51.100.7"
    assert direct.header(b"x-forwarded-for") == b"127.0.0.1"
    assert direct.header(b"x-real-ip") == b"127.0.0.1"


async def test_failover_after_every_connect_attempt_failed(nursery: trio.Nursery) -> None:
    (fallback,) = await started(nursery, "fallback")
    closed = {9001: free_port(), 9002: free_port(), 9003: free_port()}
    text = localized(block_with("api-fallback").text, {**closed, 9101: fallback.port})
    async with running_gateway(load_config_text(text)) as gw:
        assert await served_by(gw.url("/orders"), 2) == ["fallback", "fallback"]


async def test_passive_health_ejects_a_failing_backend(nursery: trio.Nursery) -> None:
    failing, b, c = await started(nursery, "failing", "b", "c")
    failing.default = Fixed(503, b"busy")
    text = localized(
        block_with('"payments"').text, {9001: failing.port, 9002: b.port, 9003: c.port}
    )
    async with running_gateway(load_config_text(text)) as gw:
        result = await curl(*[gw.url("/pay")] * 13)
    statuses = [response.status for response in result.responses]
    # Round robin gives the failing backend requests 1, 4 and 7; the third 503 within the
    # window ejects it for recovery_time (15 s), so the next six go to the other two.
    assert statuses == [503, 200, 200] * 3 + [200] * 4
    assert len(failing.requests) == 3


async def test_the_sticky_cookie_and_its_attributes(nursery: trio.Nursery) -> None:
    a, b = await started(nursery, "a", "b")
    text = localized(block_with("sticky {").text, {9001: a.port, 9002: b.port})
    config = load_config_text(text, env={"STICKY_SECRET": SECRET})
    sample = re.search(r"^Set-Cookie: (.*)$", DOCUMENT, re.MULTILINE)
    assert sample is not None
    name, _, rest = sample[1].partition("=")
    attributes = rest.partition(";")[2]
    shape = re.compile(
        re.escape(name) + r"=1\.[0-9a-f]{16}\.([0-9]+)\.[A-Za-z0-9_-]{22};" + re.escape(attributes)
    )
    async with running_gateway(config) as gw:
        first = (await curl(gw.url("/cart"))).response
        cookie = first.header(b"set-cookie")
        assert cookie is not None
        matched = shape.fullmatch(cookie.decode())
        assert matched is not None, (cookie, shape.pattern)
        assert abs(int(matched[1]) - (time.time() + 8 * 3600)) < 60
        pinned = cookie.split(b";")[0].decode()
        first_origin = first.json()["origin"]
        again = await curl(*[gw.url("/cart")] * 4, "-H", f"Cookie: {pinned}")
        tampered = pinned[:-1] + ("A" if pinned[-1] != "A" else "B")
        forged = (await curl(gw.url("/cart"), "-H", f"Cookie: {tampered}")).response
    for response in again.responses:
        assert response.json()["origin"] == first_origin
        assert response.header(b"set-cookie") is None
    assert forged.header(b"set-cookie") is not None


async def test_ten_percent_mirrors_every_tenth_request(nursery: trio.Nursery) -> None:
    primary, shadow = await started(nursery, "primary", "shadow")
    text = localized(block_with("mirror {").text, {9001: primary.port, 9201: shadow.port})
    async with running_gateway(load_config_text(text)) as gw:
        await served_by(gw.url("/checkout"), 9)
        assert shadow.requests == []
        await served_by(gw.url("/checkout?n=10"), 1)
        with trio.fail_after(10):
            await shadow.wait_for(lambda: len(shadow.requests) == 1)
    assert len(primary.requests) == 10
    assert shadow.requests[0].target == b"/checkout?n=10"

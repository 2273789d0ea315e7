"""The configuration examples of the middleware guide stay true to the code.

* Every ```hcl block of docs/middlewares.md loads with ``load_config_text`` without warnings. A
  block that is only ``middlewares`` definitions (a fragment) is completed first with an
  entrypoint, a service and a router listing its middlewares in order (a TCP entrypoint,
  service and router for ``tcp-filter``). Together the blocks show all 15 types, and each type
  has its own section.
* Every ```hcl-invalid block is refused, and the ``validate`` output printed right after it is
  exactly what the loader reports.
* examples/middlewares.hcl validates without a warning, builds every router's chain, lists the
  API chain in the recommended order (SPEC §8.1), and behaves as its comments say when run in
  front of two real origins and driven with curl.
"""

from __future__ import annotations

import gzip
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest
import trio

from a3s_gateway import ConfigError, load_config, load_config_text, validate_config
from a3s_gateway.config.load import load_text
from a3s_gateway.config.schema_middlewares import MIDDLEWARE_TYPES
from a3s_gateway.middleware.outbound import MiddlewareDeps
from a3s_gateway.middleware.phases import block_type, compile_chains
from tests.support.gateway import curl, need_tool, running_gateway
from tests.support.origin import Fixed, Origin

pytestmark = pytest.mark.integration

ROOT: Final = Path(__file__).resolve().parents[2]
GUIDE: Final = ROOT / "docs" / "middlewares.md"
EXAMPLE: Final = ROOT / "examples" / "middlewares.hcl"

#: A fenced block: its info string and its text (fences are at the start of a line).
FENCE: Final = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
#: A block's top-level items: names written at the start of a line.
TOP_LEVEL: Final = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\b", re.MULTILINE)
#: A middleware definition whose ``type`` is its first field (as the guide writes them).
DEFINITION: Final = re.compile(
    r'^middlewares\s+"([^"]+)"\s*\{[^{}]*?^\s*type\s*=\s*"([^"]+)"', re.MULTILINE | re.DOTALL
)
#: ``${NAME}`` and ``${NAME:-default}``, but not the literal ``$${``.
VARIABLE: Final = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")
#: The order SPEC §8.1 recommends, as type groups.
RECOMMENDED: Final = (
    {"cors"},
    {"ip-allow"},
    {"api-key", "basic-auth", "jwt", "forward-auth"},
    {"rate-limit", "rate-limit-redis"},
    {"body-limit"},
    {"headers", "strip-prefix"},
    {"circuit-breaker"},
    {"retry"},
    {"compress"},
)


@dataclass(frozen=True)
class Block:
    """One fenced block of the guide: its info string, first line number, text, and the text
    of the fenced block right after it (None when something else comes first)."""

    info: str
    line: int
    text: str
    output: str | None


def guide_blocks() -> list[Block]:
    document = GUIDE.read_text(encoding="utf-8")
    matches = list(FENCE.finditer(document))
    blocks = []
    for index, match in enumerate(matches):
        following = matches[index + 1] if index + 1 < len(matches) else None
        adjacent = following is not None and not document[match.end() : following.start()].strip()
        blocks.append(
            Block(
                info=match[1].strip(),
                line=document.count("\n", 0, match.start()) + 1,
                text=match[2],
                output=following[2] if following is not None and adjacent else None,
            )
        )
    return blocks


BLOCKS: Final = guide_blocks()
VALID: Final = [block for block in BLOCKS if block.info == "hcl"]
INVALID: Final = [block for block in BLOCKS if block.info == "hcl-invalid"]


def definitions(text: str) -> list[tuple[str, str]]:
    """(name, type) of each middleware defined in ``text``, in order."""
    return [(match[1], match[2]) for match in DEFINITION.finditer(text)]


def is_fragment(text: str) -> bool:
    """Whether ``text`` holds only ``middlewares`` blocks, each with ``type`` first."""
    top = TOP_LEVEL.findall(text)
    if set(top) != {"middlewares"}:
        return False
    assert len(definitions(text)) == len(top), f"write `type` first in each block:\n{text}"
    return True


def completed(text: str) -> str:
    """``text`` as a whole config: a fragment comes first (so its line numbers stay), then an
    entrypoint, service and router for its HTTP middlewares, and the same for TCP."""
    if not is_fragment(text):
        return text
    defined = definitions(text)
    http = ", ".join(f'"{name}"' for name, kind in defined if kind != "tcp-filter")
    tcp = ", ".join(f'"{name}"' for name, kind in defined if kind == "tcp-filter")
    parts = [text]
    if http:
        parts.append(f"""
entrypoints "docs-web" {{
  address = "127.0.0.1:18080"
}}
services "docs-app" {{
  load_balancer {{
    servers = [{{ url = "http://127.0.0.1:9001" }}]
  }}
}}
routers "docs-app" {{
  rule        = "PathPrefix(`/`)"
  service     = "docs-app"
  middlewares = [{http}]
}}
""")
    if tcp:
        parts.append(f"""
entrypoints "docs-tcp" {{
  address  = "127.0.0.1:15432"
  protocol = "tcp"
}}
services "docs-db" {{
  load_balancer {{
    servers = [{{ url = "tcp://127.0.0.1:5432" }}]
  }}
}}
tcp_routers "docs-db" {{
  rule        = "HostSNI(`*`)"
  service     = "docs-db"
  middlewares = [{tcp}]
}}
""")
    return "\n".join(parts)


def environment(text: str) -> dict[str, str]:
    """A value for every variable ``text`` interpolates (64 bytes: long enough for any HS
    secret, harmless in a URL's password or a key)."""
    return dict.fromkeys(VARIABLE.findall(text), "d0cs" * 16)


def test_the_guide_has_hcl_examples_and_no_unknown_fence_kinds() -> None:
    assert len(VALID) >= 15
    assert len(INVALID) >= 1
    unknown = {block.info for block in BLOCKS if block.info.startswith("hcl")}
    assert unknown <= {"hcl", "hcl-invalid"}


@pytest.mark.parametrize("block", VALID, ids=[f"line{block.line}" for block in VALID])
def test_every_hcl_example_loads_without_warnings(block: Block) -> None:
    # Blank lines in front, so that problems point at the guide's own line numbers.
    text = "\n" * block.line + completed(block.text)
    env = environment(text)
    config = load_config_text(text, filename="docs/middlewares.md", env=env)
    for name, kind in definitions(block.text):
        assert block_type(config.middlewares[name]) == kind
    warnings = [p.format() for p in load_text(text, env=env).problems if p.severity == "warning"]
    assert warnings == []


@pytest.mark.parametrize("block", INVALID, ids=[f"line{block.line}" for block in INVALID])
def test_every_invalid_example_is_refused_as_shown(block: Block) -> None:
    text = completed(block.text)
    with pytest.raises(ConfigError) as refused:
        load_config_text(text, filename="gateway.hcl", env=environment(text))
    if block.output is not None:
        reported = {problem.format() for problem in refused.value.problems}
        shown = [line for line in block.output.splitlines() if line.strip()]
        assert shown
        assert set(shown) <= reported


def test_the_examples_show_every_type_in_its_own_section() -> None:
    # A type that is not available yet (tcp-filter) is shown as a refused example.
    shown = {kind for block in VALID + INVALID for _, kind in definitions(block.text)}
    assert shown == set(MIDDLEWARE_TYPES)
    headings = set(re.findall(r"^## (\S+)$", GUIDE.read_text(encoding="utf-8"), re.MULTILINE))
    assert set(MIDDLEWARE_TYPES) <= headings


# -- examples/middlewares.hcl ---------------------------------------------------------------------


def test_the_example_validates_without_warnings_and_builds_every_chain() -> None:
    assert validate_config(EXAMPLE, env={}, offline=False) == ()
    config = load_config(EXAMPLE, env={})
    instances, chains = compile_chains(config, deps=MiddlewareDeps(clock=time.time))
    assert set(chains) == set(config.routers)
    assert set(instances) == {
        name for router in config.routers.values() for name in router.middlewares
    }


def test_the_example_api_chain_follows_the_recommended_order() -> None:
    config = load_config(EXAMPLE, env={})
    kinds = [block_type(config.middlewares[name]) for name in config.routers["api"].middlewares]
    ranks = [next(i for i, group in enumerate(RECOMMENDED) if kind in group) for kind in kinds]
    assert ranks == sorted(ranks)
    assert len(set(kinds)) == len(kinds) == 10  # the ten types the example sets out to show


@pytest.fixture
def need_curl() -> None:
    need_tool("curl", "to drive the gateway")


ITEMS: Final = json.dumps({"items": [{"id": n, "name": f"item {n}"} for n in range(100)]})
KEY: Final = "dev-only-api-key-change-me"
BROWSER: Final = "http://localhost:3000"


def example_for(api: Origin, admin: Origin) -> str:
    """examples/middlewares.hcl on an ephemeral port, in front of the two test origins."""
    text = EXAMPLE.read_text(encoding="utf-8")
    for old, new in (
        ('address = "127.0.0.1:8080"', 'address = "127.0.0.1:0"'),
        ('"http://127.0.0.1:9001"', f'"http://127.0.0.1:{api.port}"'),
        ('"http://127.0.0.1:9002"', f'"http://127.0.0.1:{admin.port}"'),
    ):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


async def test_the_example_runs_as_its_comments_say(nursery: trio.Nursery, need_curl: None) -> None:
    api, admin = Origin("api"), Origin("admin")
    await nursery.start(api.serve)
    await nursery.start(admin.serve)
    api.on("/items", Fixed(200, ITEMS.encode(), ((b"content-type", b"application/json"),)))
    config = load_config_text(example_for(api, admin), env={})
    async with running_gateway(config) as gw:
        denied = (await curl(gw.url("/api/items"), "-H", f"Origin: {BROWSER}")).response
        preflight = (
            await curl(
                gw.url("/api/items"),
                "-X",
                "OPTIONS",
                "-H",
                f"Origin: {BROWSER}",
                "-H",
                "Access-Control-Request-Method: PATCH",
                "-H",
                "Access-Control-Request-Headers: x-api-key",
            )
        ).response
        served = (
            await curl(
                gw.url("/api/items"), "-H", f"X-API-Key: {KEY}", "-H", "Accept-Encoding: gzip"
            )
        ).response
        login = (await curl(gw.url("/admin/"), "-u", "admin:dev-only-admin-password")).response

    # cors comes before api-key: the 401 keeps its CORS fields.
    assert denied.status == 401
    assert denied.header(b"access-control-allow-origin") == BROWSER.encode()
    assert denied.header(b"www-authenticate") == b'ApiKey header="X-API-Key"'
    # PATCH and X-API-Key were added to the CORS defaults.
    assert preflight.status == 204
    assert b"PATCH" in (preflight.header(b"access-control-allow-methods") or b"")
    # The API chain: stripped, key removed, headers set, rate-limit fields, compressed.
    assert served.status == 200
    assert served.header(b"content-encoding") == b"gzip"
    assert gzip.decompress(served.body) == ITEMS.encode()
    assert served.header(b"x-content-type-options") == b"nosniff"
    assert served.header(b"ratelimit-limit") == b"40"
    seen = api.requests[-1]
    assert seen.target == b"/items"
    assert seen.header(b"x-api-key") is None
    assert seen.header(b"x-forwarded-prefix") == b"/api"
    # The admin chain: basic-auth with remove_header, its own rate limit.
    assert login.status == 200
    assert login.header(b"ratelimit-limit") == b"2"
    assert admin.requests[-1].target == b"/"
    assert admin.requests[-1].header(b"authorization") is None
    assert len(api.requests) == 1  # neither the 401 nor the preflight reached the backend

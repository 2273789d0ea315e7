"""The operations guide (docs/operations.md) stays true to the code.

* Every ```hcl block loads with ``load_config_text`` without warnings. A block holding only
  ``management``, ``observability`` and ``providers`` settings (a fragment) is completed first
  with an entrypoint, a service and a router. The variables a block interpolates, and the token
  variable of its ``management`` block, are set, as the guide tells operators to do.
* The metric names follow the registry: every family name the guide writes (sample names of a
  histogram or counter count as their family's) is a family of ``GatewayMetrics(enabled=True)``,
  read by rendering the registry and parsing it with ``prometheus_client``'s parser; every
  family of the registry is written in the guide; and the families the guide lists as "not
  there yet" are indeed absent (so the list has to move when one arrives).
* The management base URL the guide's examples use is the ``management`` block's default
  address and prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest
from prometheus_client.parser import text_string_to_metric_families

from a3s_gateway.config.load import load_config_text, load_text
from a3s_gateway.config.schema import Management
from a3s_gateway.observability.gateway_metrics import GatewayMetrics

pytestmark = pytest.mark.integration

ROOT: Final = Path(__file__).resolve().parents[2]
GUIDE: Final = ROOT / "docs" / "operations.md"

#: A fenced block: its info string and its text (fences at the start of a line).
FENCE: Final = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
#: A block's top-level items: names written at the start of a line.
TOP_LEVEL: Final = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\b", re.MULTILINE)
#: ``${NAME}`` and ``${NAME:-default}``, but not the literal ``$${``.
VARIABLE: Final = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")
TOKEN_VARIABLE: Final = re.compile(r'^\s*auth_token_env\s*=\s*"([^"]+)"', re.MULTILINE)
#: Blocks that may stand alone: they are completed with something to serve.
FRAGMENT_ITEMS: Final = frozenset({"management", "observability", "providers"})
#: A metric name (or a ``prefix_*`` pattern): ``a3s_`` or ``process_`` and lower-case words, not
#: part of a longer word or a dotted module path (``a3s_gateway.reload``).
METRIC: Final = re.compile(r"(?<![\w.])((?:a3s|process)_[a-z0-9_]*[a-z0-9])(_\*)?(?!\w|\.[A-Za-z])")
#: Words of that shape that are not metrics: the package (``python -m a3s_gateway``).
NOT_METRICS: Final = frozenset({"a3s_gateway"})
NOT_YET: Final = re.compile(r"<!-- metrics: not yet -->(.*?)<!-- /metrics: not yet -->", re.DOTALL)


@dataclass(frozen=True)
class Block:
    info: str
    line: int
    text: str


def guide() -> str:
    return GUIDE.read_text(encoding="utf-8")


def hcl_blocks() -> list[Block]:
    document = guide()
    return [
        Block(match[1].strip(), document.count("\n", 0, match.start()) + 1, match[2])
        for match in FENCE.finditer(document)
        if match[1].strip() == "hcl"
    ]


BLOCKS: Final = hcl_blocks()


def completed(text: str) -> str:
    """``text`` as a whole config: a fragment first (so its line numbers stay), then an
    entrypoint, a service and a router."""
    if not set(TOP_LEVEL.findall(text)) <= FRAGMENT_ITEMS:
        return text
    return (
        text
        + """
entrypoints "docs-web" {
  address = "127.0.0.1:18080"
}
services "docs-app" {
  load_balancer {
    servers = [{ url = "http://127.0.0.1:9001" }]
  }
}
routers "docs-app" {
  rule    = "PathPrefix(`/`)"
  service = "docs-app"
}
"""
    )


def environment(text: str) -> dict[str, str]:
    """A value for every variable ``text`` interpolates and for its admin token variable."""
    names = {*VARIABLE.findall(text), *TOKEN_VARIABLE.findall(text)}
    names.add(Management().auth_token_env)
    return dict.fromkeys(names, "d0cs-token-" + "7" * 32)


def test_the_guide_has_hcl_examples() -> None:
    assert len(BLOCKS) >= 6
    assert any("management" in TOP_LEVEL.findall(block.text) for block in BLOCKS)
    assert any("observability" in TOP_LEVEL.findall(block.text) for block in BLOCKS)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"line{block.line}" for block in BLOCKS])
def test_every_hcl_example_loads_without_warnings(block: Block) -> None:
    # Blank lines in front, so that problems point at the guide's own line numbers.
    text = "\n" * block.line + completed(block.text)
    env = environment(text)
    load_config_text(text, filename="docs/operations.md", env=env)
    warnings = [p.format() for p in load_text(text, env=env).problems if p.severity == "warning"]
    assert warnings == []


def test_a_fragment_is_completed_and_a_whole_config_is_not() -> None:
    fragment = 'management {\n  address = "127.0.0.1:9901"\n}\n'
    assert 'entrypoints "docs-web"' in completed(fragment)
    whole = 'entrypoints "web" {\n  address = ":80"\n}\n' + fragment
    assert completed(whole) == whole


# -- metric names ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Families:
    """The registry's families as a Prometheus parser sees them."""

    #: Family names as written in ``# TYPE`` lines (counters with their ``_total``).
    names: frozenset[str]
    #: Every sample name a family may have (``_bucket``, ``_sum``, ``_count`` of histograms).
    samples: frozenset[str]


#: The supervisor's own families (``management/fleet.py``, ``--workers N`` only).
SUPERVISOR_FAMILIES: Final = frozenset(
    {"a3s_workers_ready", "a3s_worker_restarts_total", "a3s_worker_query_failures_total"}
)


def registry_families() -> Families:
    text = GatewayMetrics(enabled=True).render().decode("utf-8")
    names: set[str] = set()
    samples: set[str] = set()
    for family in text_string_to_metric_families(text):
        # The parser strips a counter's ``_total``; its samples keep it.
        name = family.name + "_total" if family.type == "counter" else family.name
        names.add(name)
        samples.add(name)
        if family.type == "histogram":
            samples.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
    return Families(frozenset(names), frozenset(samples) | SUPERVISOR_FAMILIES)


def written_names(text: str) -> tuple[set[str], set[str]]:
    """(metric names, ``prefix_*`` patterns as their prefix) written in ``text``."""
    names: set[str] = set()
    patterns: set[str] = set()
    for match in METRIC.finditer(text):
        word = match[1]
        if word in NOT_METRICS:
            continue
        if match[2]:
            patterns.add(word + "_")
        else:
            names.add(word)
    return names, patterns


def split_guide() -> tuple[str, str]:
    """The guide without its "not yet" part, and that part."""
    document = guide()
    found = NOT_YET.search(document)
    assert found is not None, "the guide lists the families that are not there yet"
    return document[: found.start()] + document[found.end() :], found[1]


def test_the_name_pattern_finds_metrics_and_skips_other_words() -> None:
    text = (
        "`a3s_http_requests_total` and rate(a3s_http_request_duration_seconds_bucket[5m]) "
        "from a3s_gateway.reload via `python -m a3s_gateway run`; `a3s_tcp_*`, `process_*`, "
        "process_open_fds."
    )
    names, patterns = written_names(text)
    assert names == {
        "a3s_http_requests_total",
        "a3s_http_request_duration_seconds_bucket",
        "process_open_fds",
    }
    assert patterns == {"a3s_tcp_"}


def test_every_metric_name_in_the_guide_exists() -> None:
    families = registry_families()
    served, _ = split_guide()
    names, patterns = written_names(served)
    assert names, "the guide names metric families"
    assert sorted(names - families.samples) == []
    assert patterns == set()  # outside the "not yet" part, families are named in full


def test_every_family_is_in_the_guide() -> None:
    families = registry_families()
    served, _ = split_guide()
    names, _ = written_names(served)
    assert sorted(families.names - names) == []


def test_the_families_listed_as_not_there_yet_are_absent() -> None:
    families = registry_families()
    _, later = split_guide()
    names, patterns = written_names(later)
    # Empty since ACME landed; the part stays for the next family written before its feature.
    assert sorted(names & families.samples) == []
    assert sorted(name for name in families.names if name.startswith(tuple(patterns))) == []


def test_the_examples_use_the_default_management_url() -> None:
    defaults = Management()
    base = f"http://{defaults.address.text}{defaults.path_prefix}"
    document = guide()
    assert f"`$M` is `{base}`" in document
    assert f"metrics_path: {defaults.path_prefix}/metrics" in document

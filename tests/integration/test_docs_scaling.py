"""The scaling guide (docs/scaling.md) and examples/scaling.hcl stay true to the code.

* Every ```hcl block of the guide loads without an error once completed into a whole config
  (an entrypoint and a router for each service it defines, and a ``scaling`` fragment wrapped in
  a service), and ``examples/scaling.hcl`` loads without a warning.
* The guide names every scaling metric family (read from the registry), every field of a
  ``/scaling`` document and of a ``/rollouts`` document, every buffer result, every executor
  and every rollout state.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

import pytest

from a3s_gateway.config.load import load_config_text, load_text
from a3s_gateway.observability.metrics import Registry
from a3s_gateway.observability.scaling_metrics import ScalingFamilies
from a3s_gateway.scaling.buffer import BufferResult
from a3s_gateway.scaling.rollout import RolloutState

pytestmark = pytest.mark.integration

ROOT: Final = Path(__file__).resolve().parents[2]
GUIDE: Final = ROOT / "docs" / "scaling.md"
EXAMPLE: Final = ROOT / "examples" / "scaling.hcl"
FENCE: Final = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
SERVICE: Final = re.compile(r'^services "([^"]+)"', re.MULTILINE)

#: The fields of a ``/scaling`` document (``scaling.loop.scaling_documents``).
SCALING_FIELDS: Final = (
    "service",
    "executor",
    "min_replicas",
    "max_replicas",
    "target",
    "desired",
    "actual",
    "ready",
    "panic",
    "stable_concurrency",
    "panic_concurrency",
    "excess_burst_capacity",
    "buffer_depth",
    "last_decision",
    "reason",
    "executor_status",
    "executor_errors",
)
#: The fields of a ``/rollouts`` document (``scaling.loop.rollout_document``).
ROLLOUT_FIELDS: Final = ["state", "from", "to", "traffic", "next_step", "steps", "last_step"]


def guide() -> str:
    return GUIDE.read_text(encoding="utf-8")


def blocks() -> list[str]:
    return [match[2] for match in FENCE.finditer(guide()) if match[1].strip() == "hcl"]


def completed(block: str) -> str:
    """``block`` as a whole config."""
    if block.lstrip().startswith("scaling"):
        block = 'services "svc" {\n' + block + "}\n"
    text = block + '\nentrypoints "web" {\n  address = "127.0.0.1:18080"\n}\n'
    for number, name in enumerate(SERVICE.findall(block)):
        text += (
            f'routers "r{number}" {{\n  rule = "PathPrefix(`/{name}`)"\n  service = "{name}"\n}}\n'
        )
    return text


def test_the_guide_has_examples() -> None:
    assert len(blocks()) >= 4


@pytest.mark.parametrize("index", range(len(blocks())))
def test_every_hcl_block_loads(index: int) -> None:
    load_config_text(completed(blocks()[index]), filename="docs/scaling.md", env={})


def test_the_example_loads_without_warnings() -> None:
    result = load_text(EXAMPLE.read_text(encoding="utf-8"), filename=str(EXAMPLE), env={})
    assert result.errors == ()
    assert [p.format() for p in result.problems if p.severity == "warning"] == []


def test_the_guide_names_every_metric_family() -> None:
    registry = Registry()
    ScalingFamilies(registry)
    names = list(registry.families)
    assert names
    text = guide() + (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    for name in names:
        assert f"`{name}`" in text, name


def test_the_guide_names_every_document_field_result_executor_and_state() -> None:
    text = guide()
    for field in (*SCALING_FIELDS, *ROLLOUT_FIELDS):
        assert f'"{field}"' in text or f"`{field}`" in text, field
    for result in BufferResult:
        assert f"`{result.value}`" in text or result.value in text, result
    for executor in ("local", "box", "kubernetes", "mock"):
        assert f"### `{executor}`" in text, executor
    for state in RolloutState:
        assert f"`{state.label}`" in text, state

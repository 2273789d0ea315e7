"""Properties of the config pipeline (issue #2, DESIGN.md §3.7 "Config").

- Any schema-valid config survives ``to_builtins`` → conversion unchanged (and hashes equal).
- An unknown key added anywhere is reported, at a path that names it, and nothing else is.
- Semantic checks never raise on any schema-valid config; they only return problems.
"""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from a3s_gateway.config.convert import convert_config
from a3s_gateway.config.problems import Path, SourceMap, format_path
from a3s_gateway.config.schema import Config
from a3s_gateway.config.semantic import SemanticContext, check_semantics
from a3s_gateway.config.values import dec_hook
from tests.property.strategies import configs

UNKNOWN = "zz_not_a_field"


def struct_paths(
    value: object, tree: object, path: Path = ()
) -> list[tuple[Path, dict[str, object]]]:
    """Every (path, builtins dict) that renders a Struct inside ``tree``."""
    found: list[tuple[Path, dict[str, object]]] = []
    if isinstance(value, msgspec.Struct) and isinstance(tree, dict):
        found.append((path, tree))
        for info in msgspec.structs.fields(value):
            if info.encode_name in tree:
                child = getattr(value, info.name)
                found += struct_paths(child, tree[info.encode_name], (*path, info.encode_name))
    elif isinstance(value, dict) and isinstance(tree, dict):
        for key, child in value.items():
            found += struct_paths(child, tree[key], (*path, key))
    elif isinstance(value, tuple) and isinstance(tree, list | tuple):
        for index, child in enumerate(value):
            found += struct_paths(child, tree[index], (*path, index))
    return found


@given(configs())
def test_builtins_round_trip(config: Config) -> None:
    tree = config.to_builtins(redact=False)
    again = msgspec.convert(tree, Config, dec_hook=dec_hook)
    assert again == config
    assert hash(again) == hash(config)


@given(configs())
def test_the_repairing_converter_accepts_valid_configs_unchanged(config: Config) -> None:
    result = convert_config(
        config.to_builtins(redact=False), SourceMap(), default_file="t", whole=frozenset()
    )
    assert result.problems == []
    assert result.config == config


@given(configs(), st.data())
def test_an_unknown_key_anywhere_is_reported_at_its_path(
    config: Config, data: st.DataObject
) -> None:
    tree = config.to_builtins(redact=False)
    candidates = struct_paths(config, tree)
    path, node = data.draw(st.sampled_from(candidates))
    node[UNKNOWN] = 1
    result = convert_config(tree, SourceMap(), default_file="t", whole=frozenset())
    assert [p.path for p in result.problems] == [format_path((*path, UNKNOWN))]
    assert UNKNOWN in result.problems[0].message
    assert result.config == config


@given(configs(), st.integers(1, 4))
def test_semantic_checks_never_raise(config: Config, workers: int) -> None:
    context = SemanticContext(
        sources=SourceMap(), default_file="t", broken=frozenset(), workers=workers
    )
    problems = check_semantics(config, context)
    assert all(p.severity in ("error", "warning") for p in problems)

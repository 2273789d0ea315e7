"""The HCL structural scanner: positions, duplicates, tolerance of broken input."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a3s_gateway.config.hcl_lex import lex
from a3s_gateway.config.hcl_scan import SourceScan, scan_source

if TYPE_CHECKING:
    from a3s_gateway.config.problems import Path

LIST_FIELDS = frozenset({"servers", "revisions", "seeds", "certificates"})


def scan(text: str) -> SourceScan:
    return scan_source(text, filename="g.hcl", list_fields=LIST_FIELDS)


def where(result: SourceScan, path: Path) -> tuple[int, int | None] | None:
    position = result.sources.get(path)
    return None if position is None else (position.line, position.column)


# ----------------------------------------------------------------------------- positions


CONFIG = """\
entrypoints "web" {
  address = "0.0.0.0:80"
  tls {
    cert_file = "a"
  }
}
services "x\\"y" {
  load_balancer {
    servers { url = "http://a" }
    servers {
      url = "http://b"
    }
    list = [1,
      [2, 3], { k = "v", "q k": 4 }]
  }
}
"""


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (("entrypoints",), (1, 1)),
        (("entrypoints", "web"), (1, 1)),
        (("entrypoints", "web", "address"), (2, 3)),
        (("entrypoints", "web", "tls"), (3, 3)),
        (("entrypoints", "web", "tls", "cert_file"), (4, 5)),
        (("services", 'x"y'), (7, 1)),
        (("services", 'x"y', "load_balancer"), (8, 3)),
        (("services", 'x"y', "load_balancer", "servers"), (9, 5)),
        (("services", 'x"y', "load_balancer", "servers", 0), (9, 5)),
        (("services", 'x"y', "load_balancer", "servers", 0, "url"), (9, 15)),
        (("services", 'x"y', "load_balancer", "servers", 1), (10, 5)),
        (("services", 'x"y', "load_balancer", "servers", 1, "url"), (11, 7)),
        (("services", 'x"y', "load_balancer", "list"), (13, 5)),
        (("services", 'x"y', "load_balancer", "list", 0), (13, 13)),
        (("services", 'x"y', "load_balancer", "list", 1), (14, 7)),
        (("services", 'x"y', "load_balancer", "list", 1, 1), (14, 11)),
        (("services", 'x"y', "load_balancer", "list", 2), (14, 15)),
        (("services", 'x"y', "load_balancer", "list", 2, "k"), (14, 17)),
        (("services", 'x"y', "load_balancer", "list", 2, "q k"), (14, 26)),
    ],
)
def test_positions(path: Path, expected: tuple[int, int]) -> None:
    assert where(scan(CONFIG), path) == expected


def test_positions_headers_keep_every_occurrence() -> None:
    result = scan('a "x" {}\nb {}\na "x" {}\n')
    assert [p.line for p in result.headers[("a", "x")]] == [1, 3]
    assert [p.line for p in result.headers[("b",)]] == [2]


def test_positions_one_line_body_and_conditional_in_object() -> None:
    result = scan("a { b = 1 c = { d = x ? 1 : 2, e = f(1, [2]) } g = h.i[0] }\nj = 1")
    assert where(result, ("a", "c")) == (1, 11)
    assert where(result, ("a", "c", "e")) == (1, 32)
    assert where(result, ("a", "g")) == (1, 48)
    assert where(result, ("j",)) == (2, 1)


def test_positions_survive_for_expressions_and_odd_keys() -> None:
    text = "a = [for x in y : x]\nb = {for k, v in m : k => v}\nc = { (k) = 1, for = 2 }\nd = 1"
    result = scan(text)
    assert where(result, ("c", "for")) == (3, 16)
    assert where(result, ("d",)) == (4, 1)
    assert result.problems == ()


def test_positions_deep_nesting_is_bounded() -> None:
    depth = 500
    text = "a = " + "[" * depth + "]" * depth + "\nb = " + "{x = " * depth + "}" * depth
    result = scan(text + "\nc {\n" * depth + "}\n" * depth + "d = 1\n")
    assert where(result, ("b",)) == (2, 1)
    assert where(result, ("d",)) is not None


# ---------------------------------------------------------------------------- duplicates


def test_duplicate_attribute() -> None:
    (problem,) = scan('a {\n  x = 1\n  x = "2"\n}\n').problems
    assert (problem.line, problem.column, problem.path) == (3, 3, "a.x")
    assert problem.message == 'attribute "x" is set twice (also at line 2)'


def test_duplicate_object_key() -> None:
    (problem,) = scan('o = {\n  k = 1,\n  "k" = 2\n}').problems
    assert (problem.line, problem.path) == (3, "o.k")
    assert problem.message == 'key "k" is set twice (also at line 2)'


@pytest.mark.parametrize("text", ["tls = {}\ntls {}", "tls {}\ntls = {}"])
def test_duplicate_block_and_attribute(text: str) -> None:
    (problem,) = scan(text).problems
    assert problem.line == 2
    expected = '"tls" is defined both as a block and as an attribute (also at line 1)'
    assert problem.message == expected


def test_repeated_blocks_are_not_scanner_duplicates() -> None:
    assert scan('servers {}\nservers {}\nr "a" {}\nr "a" {}\nt {}\nt {}').problems == ()


# ----------------------------------------------------------------------------- tolerance


@pytest.mark.parametrize(
    "text",
    [
        "",
        "}}}]])",
        "a = ",
        'a "b',
        "a = [1,",
        "a = {",
        "a = {b",
        "a = { (",
        "a = <<EOF\n",
        "<<",
        '"${',
        "/*",
        "x = 1 ; y = 2",
        "= = =",
        "a b c",
        "a.b = 1",
    ],
)
def test_never_raises_on_broken_input(text: str) -> None:
    scan(text)


HCL_ALPHABET = st.sampled_from(
    [*'{}[]()=:,?."\\#/*<-$% \n\tab1', "${", "%{", "<<EOF\n", "\nEOF\n", "x = ", '"a"']
)


@settings(max_examples=300, deadline=None)
@given(st.lists(HCL_ALPHABET, max_size=60).map("".join))
def test_never_raises_on_hcl_like_noise(text: str) -> None:
    result = scan(text)
    assert result.protected.restore(result.protected.text) == text
    assert len(result.protected.text) == len(text)
    assert result.protected == lex(text)[1]  # the scan hands back the lexer's protection


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_never_raises_on_any_text(text: str) -> None:
    result = scan(text)
    assert result.protected.restore(result.protected.text) == text

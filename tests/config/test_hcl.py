"""HCL parsing and normalisation (SPEC §3.2), and python-hcl2 8.1.4's output shapes pinned.

The ``test_pinned_python_hcl2_shape_*`` tests describe what python-hcl2 returns with the
options the loader uses. An upgrade of python-hcl2 must keep them passing (or come with a
normaliser change).
"""

from __future__ import annotations

import dataclasses

import hcl2
import pytest
from hcl2.utils import SerializationOptions
from hypothesis import given, settings
from hypothesis import strategies as st
from lark.exceptions import UnexpectedToken, VisitError

from a3s_gateway.config.hcl import LIST_BLOCK_FIELDS, ParsedFile, parse_hcl
from a3s_gateway.config.hcl_lex import decode_escapes
from a3s_gateway.config.problems import Path, make_problem

EXPRESSION = (
    'expressions are not supported; write a quoted string (use "${NAME}" for environment variables)'
)

OPTIONS = SerializationOptions(
    strip_string_quotes=False,
    explicit_blocks=True,
    with_comments=False,
    preserve_heredocs=False,
    preserve_scientific_notation=False,
)


def raw(text: str) -> object:
    loaded: object = hcl2.loads(text, serialization_options=OPTIONS)
    return loaded


def parse(text: str) -> ParsedFile:
    return parse_hcl(text, filename="gateway.hcl")


def ok(text: str) -> dict[str, object]:
    """Parse text that must be valid and problem-free."""
    result = parse(text)
    assert result.ok
    assert result.problems == ()
    return result.data


def messages(text: str) -> list[tuple[int | None, str, str]]:
    return [(p.line, p.path, p.message) for p in parse(text).problems]


# ------------------------------------------------------------------- python-hcl2 shapes


def test_pinned_python_hcl2_shape_top_level_labelled_blocks() -> None:
    assert raw('routers "api" { rule = "x" }\nrouters "b" {}') == {
        "routers": [
            {'"api"': {"rule": '"x"', "__is_block__": True}},
            {'"b"': {"__is_block__": True}},
        ]
    }


def test_pinned_python_hcl2_shape_nested_labelled_blocks_and_two_labels() -> None:
    assert raw('s { websocket_mux { channels "x" {} } }') == {
        "s": [
            {
                "websocket_mux": [
                    {"channels": [{'"x"': {"__is_block__": True}}], "__is_block__": True}
                ],
                "__is_block__": True,
            }
        ]
    }
    assert raw('a "b" c {}') == {"a": [{'"b"': {"c": {"__is_block__": True}}}]}


def test_pinned_python_hcl2_shape_unlabelled_blocks() -> None:
    assert raw("a {\n tls { x = 1 }\n tls { y = 2 }\n}") == {
        "a": [
            {
                "tls": [{"x": 1, "__is_block__": True}, {"y": 2, "__is_block__": True}],
                "__is_block__": True,
            }
        ]
    }
    assert raw("a {}") == {"a": [{"__is_block__": True}]}


def test_pinned_python_hcl2_shape_object_attribute_and_keys() -> None:
    assert raw('tls = { cert_file = "a", "q" = 2 }') == {"tls": {"cert_file": '"a"', '"q"': 2}}
    assert raw('a = { (b) = 1, c.d = 2, 1 = 3, "x" = 4, true = 5, "${e}" = 6 }') == {
        "a": {"${(b)}": 1, "${c.d}": 2, "1": 3, '"x"': 4, "true": 5, '"${e}"': 6}
    }


def test_pinned_python_hcl2_shape_quoted_strings_keep_quotes_and_escapes() -> None:
    assert raw(r'x = "a\"b\n\u00e9 é"') == {"x": r'"a\"b\n\u00e9 é"'}
    # Unknown and malformed escapes are not rejected; the normaliser must do it.
    assert raw(r'x = "\q \u12 \uD800"') == {"x": r'"\q \u12 \uD800"'}
    # A raw newline inside quotes is accepted.
    assert raw('x = "a\nb"') == {"x": '"a\nb"'}


def test_pinned_python_hcl2_shape_heredocs() -> None:
    assert raw('x = <<EOF\nhello "q" \\n ${x}\nEOF\n') == {"x": '"hello \\"q\\" \\\\n ${x}"'}
    # No trailing newline; "<<-" strips the common indentation.
    assert raw("x = <<-EOF\n    hello\n      there\n    EOF\n") == {"x": '"hello\\n  there"'}


def test_pinned_python_hcl2_shape_expressions_are_unquoted_text() -> None:
    assert raw("x = JWT_SECRET") == {"x": "JWT_SECRET"}
    assert raw("x = var.x") == {"x": "${var.x}"}
    assert raw('x = env("X")') == {"x": '${env("X")}'}
    assert raw("x = 1 + 2") == {"x": "${1 + 2}"}
    assert raw('x = a ? "b" : "c"') == {"x": '${a ? "b" : "c"}'}
    assert raw("x = (1)") == {"x": "${(1)}"}


def test_pinned_python_hcl2_shape_scalars() -> None:
    text = "a = 1\nb = -1\nc = 1.5\nd = 1.5e3\ne = 5e-1\nf = true\ng = false\nh = null\ni = 01"
    assert raw(text) == {
        "a": 1, "b": -1, "c": 1.5, "d": 1500.0, "e": 0.5, "f": True, "g": False, "h": None, "i": 1,
    }  # fmt: skip
    assert raw("x = 1e400") == {"x": float("inf")}


def test_pinned_python_hcl2_shape_duplicates_are_silent() -> None:
    assert raw("x = 1\nx = 2") == {"x": 2}
    assert raw("x = {a = 1, a = 2}") == {"x": {"a": 2}}
    assert raw('a "x" {}\na "x" {}') == {
        "a": [{'"x"': {"__is_block__": True}}, {'"x"': {"__is_block__": True}}]
    }
    # A block followed by an attribute of the same name: the block is silently lost...
    assert raw("tls { b = 2 }\ntls = { a = 1 }") == {"tls": {"a": 1}}
    # ...the other way round is a RuntimeError without a position.
    with pytest.raises(RuntimeError, match="already defined"):
        raw("tls = { a = 1 }\ntls { b = 2 }")


def test_pinned_python_hcl2_shape_semicolon_is_a_syntax_error() -> None:
    with pytest.raises(UnexpectedToken) as caught:
        raw("x = 1; y = 2")
    assert (caught.value.line, caught.value.column) == (1, 6)


def test_pinned_python_hcl2_shape_template_sequences() -> None:
    # Escapes are kept verbatim.
    assert raw('x = "$${a} %%{b}"') == {"x": '"$${a} %%{b}"'}
    # Interpolations and directives are re-formatted...
    assert raw('x = "${ NAME }"') == {"x": '"${NAME}"'}
    assert raw('x = "%{if true}a%{else}b%{endif}"') == {"x": '"%{ if true }a%{ else }b%{ endif }"'}
    # ...an unterminated directive raises a VisitError...
    with pytest.raises(VisitError):
        raw('x = "a %{ if x } b"')
    # ...and the SPEC's default syntax is not HCL, hence the loader's template protection.
    with pytest.raises(UnexpectedToken):
        raw('x = "${NAME:-default}"')


def test_pinned_python_hcl2_shape_escaped_interpolation_runs_to_the_next_brace() -> None:
    assert raw('x = "$${"\ny = "}"') == {"x": '"$${"\ny = "}"'}


def test_pinned_python_hcl2_shape_no_positions_even_with_meta() -> None:
    options = dataclasses.replace(OPTIONS, with_meta=True)
    loaded: object = hcl2.loads('a "x" {\n b = 1\n}', serialization_options=options)
    assert loaded == {"a": [{'"x"': {"b": 1, "__is_block__": True}}]}


def test_pinned_python_hcl2_shape_misc() -> None:
    assert raw("") == {}
    assert raw("routers api { a = 1 }") == {"routers": [{"api": {"a": 1, "__is_block__": True}}]}
    assert raw("a { b = 1 c = 2 }") == {"a": [{"b": 1, "c": 2, "__is_block__": True}]}
    assert raw('from = "v1"\nfor = 1\ntrue = 2') == {"from": '"v1"', "for": 1, "true": 2}
    with pytest.raises(UnexpectedToken):
        raw("x = /* comment */ 1")


# -------------------------------------------------------------------------- public shape


def test_public_contract() -> None:
    assert sorted(LIST_BLOCK_FIELDS) == ["certificates", "revisions", "seeds", "servers"]
    result = parse("")
    assert result == ParsedFile(result.data, result.sources, (), ok=True)
    assert result.data == {}
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.ok = False  # type: ignore[misc]


# ---------------------------------------------------------------------------- normalising


def test_labelled_blocks_become_maps() -> None:
    assert ok('routers "api" { rule = "x" }\nrouters "web" {}\nrouters plain {}') == {
        "routers": {"api": {"rule": "x"}, "web": {}, "plain": {}}
    }


def test_nested_labelled_blocks_become_maps() -> None:
    text = """
services "chat" {
  websocket_mux {
    channels "a" { service = "x" }
    channels "b\\"q" { service = "y" }
  }
}
providers {
  dns {
    services "s" { hostname = "h" }
  }
}
"""
    assert ok(text) == {
        "services": {
            "chat": {
                "websocket_mux": {"channels": {"a": {"service": "x"}, 'b"q': {"service": "y"}}}
            }
        },
        "providers": {"dns": {"services": {"s": {"hostname": "h"}}}},
    }


def test_unlabelled_block_becomes_an_object() -> None:
    assert ok('e "w" {\n  tls {\n    cert_file = "a"\n  }\n}') == {
        "e": {"w": {"tls": {"cert_file": "a"}}}
    }


def test_object_attribute_is_accepted_where_a_block_is_expected() -> None:
    assert ok('e "w" {\n  tls = { cert_file = "a", "key file" = "b" }\n}') == {
        "e": {"w": {"tls": {"cert_file": "a", "key file": "b"}}}
    }


@pytest.mark.parametrize("name", sorted(LIST_BLOCK_FIELDS))
def test_list_fields_blocks_and_attribute_lists_are_equivalent(name: str) -> None:
    blocks = ok(f'lb {{\n  {name} {{ url = "a" }}\n  {name} {{\n    url = "b"\n  }}\n}}')
    attribute = ok(f'lb {{\n  {name} = [{{ url = "a" }}, {{ url = "b" }}]\n}}')
    assert blocks == attribute == {"lb": {name: [{"url": "a"}, {"url": "b"}]}}
    assert ok(f'{name} {{ url = "a" }}') == {name: [{"url": "a"}]}


def test_block_markers_are_stripped_everywhere() -> None:
    def has_marker(value: object) -> bool:
        if isinstance(value, dict):
            return "__is_block__" in value or any(has_marker(v) for v in value.values())
        if isinstance(value, list):
            return any(has_marker(v) for v in value)
        return False

    data = ok(README_CONFIG)
    assert not has_marker(data)
    assert ok("a {}\nb {\n c {\n d {}\n }\n}") == {"a": {}, "b": {"c": {"d": {}}}}


def test_strings_are_unquoted_and_decoded() -> None:
    assert ok(r'x = "a\\b \"q\" \n\r\t \u00e9 \U0001F600 é"') == {
        "x": 'a\\b "q" \n\r\t é \U0001f600 é'
    }
    assert ok('x = ""\ny = ["a", "b"]') == {"x": "", "y": ["a", "b"]}


def test_template_sequences_are_left_verbatim() -> None:
    text = r"""
a = "${JWT_SECRET}"
b = "${NAME:-default value}"
c = "$${literal} %%{literal}"
d = "${ var.x } %{ if x }y%{ endif }"
e = "${ "}" }"
f = "cost $${"
g = "}"
h = "${NAME:-http://x:80/p} and \"${X}\""
"""
    assert ok(text) == {
        "a": "${JWT_SECRET}",
        "b": "${NAME:-default value}",
        "c": "$${literal} %%{literal}",
        "d": "${ var.x } %{ if x }y%{ endif }",
        "e": '${ "}" }',
        "f": "cost $${",
        "g": "}",
        "h": '${NAME:-http://x:80/p} and "${X}"',
    }


STRING_PIECES = st.sampled_from(
    ["a", " ", "é", "${A}", "${B_1}", "$${C}", "%%{D}", "$", "%", r"\n", r"\"", r"\\", r"\u00e9"]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(STRING_PIECES, max_size=12).map("".join))
def test_template_protection_agrees_with_python_hcl2(value: str) -> None:
    """Where python-hcl2 itself copes, protecting templates changes nothing."""
    text = f'x = "{value}"\nrouters "r" {{\n  y = ["{value}"]\n}}'
    loaded = raw(text)
    assert isinstance(loaded, dict)
    expected = decode_escapes(loaded["x"][1:-1])
    assert ok(text) == {"x": expected, "routers": {"r": {"y": [expected]}}}


def test_heredocs_become_strings() -> None:
    text = 'a = <<EOF\nline "1" \\n\n${X:-y}\nEOF\nb = <<-EOT\n    x\n      y\n    EOT\n'
    assert ok(text) == {"a": 'line "1" \\n\n${X:-y}', "b": "x\n  y"}


def test_scalars_are_native() -> None:
    assert ok("a = 1\nb = -2\nc = 0.7\nd = 1.5e3\ne = true\nf = false\ng = null") == {
        "a": 1, "b": -2, "c": 0.7, "d": 1500.0, "e": True, "f": False, "g": None,
    }  # fmt: skip


def test_nested_values() -> None:
    assert ok('x = [1, [true, null], { a = { "b" = ["c"] } }]\ny = {}\nz = []') == {
        "x": [1, [True, None], {"a": {"b": ["c"]}}],
        "y": {},
        "z": [],
    }


@pytest.mark.parametrize(
    "value",
    ["JWT_SECRET", "var.x", 'env("X")', "1 + 2", 'a ? "b" : "c"', "(1)", '"a" + "b"', "!true"],
)
def test_expressions_are_rejected(value: str) -> None:
    result = parse(f'middlewares "jwt" {{\n  type = "jwt"\n  value = {value}\n}}')
    assert result.ok
    assert result.data == {"middlewares": {"jwt": {"type": "jwt"}}}
    assert [(p.line, p.column, p.path, p.message) for p in result.problems] == [
        (3, 3, 'middlewares["jwt"].value', EXPRESSION)
    ]


def test_expression_in_a_list_drops_the_list() -> None:
    result = parse('x = ["a", b, "c"]\ny = [{ u = c, v = "d" }]')
    assert result.data == {"y": [{"v": "d"}]}
    assert [(p.line, p.column, p.path) for p in result.problems] == [
        (1, 11, "x[1]"),
        (2, 8, "y[0].u"),
    ]


def test_invalid_escape_is_reported_and_dropped() -> None:
    result = parse('a = "ok"\nb = "bad \\q"')
    assert result.data == {"a": "ok"}
    (problem,) = result.problems
    assert (problem.line, problem.path) == (2, "b")
    assert problem.message.startswith('invalid escape sequence "\\q"')


# ------------------------------------------------------------------- labels and keys


def test_label_with_interpolation_is_an_error() -> None:
    result = parse('routers "${x}" {}\nrouters "ok" {}')
    assert result.data == {"routers": {"ok": {}}}
    assert messages('routers "${x}" {}') == [
        (1, "routers", 'block label "${x}" contains "${": block labels and object keys are literal')
    ]


def test_object_key_with_interpolation_or_expression_is_an_error() -> None:
    result = parse('x = { "a${b}" = 1, (c) = 2, d = 3 }')
    assert result.data == {"x": {"d": 3}}
    assert sorted(p.message for p in result.problems) == [
        'object key "a${b}" contains "${": block labels and object keys are literal',
        f"object key: {EXPRESSION}",
    ]


def test_two_labels_are_an_error() -> None:
    assert messages('a "b" "c" {}\nd = 1') == [
        (1, "a", 'block "a" has 2 labels; at most one is allowed')
    ]
    assert parse('a "b" "c" {}\nd = 1').data == {"d": 1}


def test_mixed_labelled_and_unlabelled_is_an_error() -> None:
    assert messages('routers "a" {}\nrouters {}') == [
        (1, "routers", 'block "routers" is written both with and without a label')
    ]


# --------------------------------------------------------------------------- duplicates


def test_duplicate_label_names_both_locations() -> None:
    text = 'routers "api" {\n  rule = "a"\n}\nrouters "web" {}\nrouters "api" {\n  rule = "b"\n}\n'
    result = parse(text)
    assert result.data == {"routers": {"api": {"rule": "a"}, "web": {}}}
    (problem,) = result.problems
    assert problem.format() == (
        'gateway.hcl:5:1: error: routers["api"]: routers "api" is defined twice '
        "(also at gateway.hcl:1)"
    )


def test_duplicate_nested_label() -> None:
    text = 'services "x" {\n  websocket_mux {\n    channels "c" {}\n    channels "c" {}\n  }\n}'
    assert messages(text) == [
        (
            4,
            'services["x"].websocket_mux.channels["c"]',
            'channels "c" is defined twice (also at gateway.hcl:3)',
        )
    ]


def test_duplicate_attribute() -> None:
    result = parse('routers "a" {\n  service = "x"\n  service = "y"\n}')
    assert result.ok
    assert [(p.line, p.column, p.path, p.message) for p in result.problems] == [
        (3, 3, 'routers["a"].service', 'attribute "service" is set twice (also at line 2)')
    ]


def test_duplicate_object_key() -> None:
    assert messages('x = {\n  a = 1\n  "a" = 2\n}') == [
        (3, "x.a", 'key "a" is set twice (also at line 2)')
    ]


def test_repeated_singular_block() -> None:
    result = parse('entrypoints "w" {\n  tls { a = "1" }\n  tls { a = "2" }\n}')
    assert result.data == {"entrypoints": {"w": {"tls": {"a": "1"}}}}
    assert [(p.line, p.path, p.message) for p in result.problems] == [
        (3, 'entrypoints["w"].tls', 'block "tls" may appear only once')
    ]


@pytest.mark.parametrize(("text", "ok_"), [("tls = {}\ntls {}", False), ("tls {}\ntls = {}", True)])
def test_block_and_attribute_with_one_name(text: str, ok_: bool) -> None:
    result = parse(text)
    assert result.ok is ok_
    assert [(p.line, p.message) for p in result.problems] == [
        (2, '"tls" is defined both as a block and as an attribute (also at line 1)')
    ]


# -------------------------------------------------------------------------- syntax errors


@pytest.mark.parametrize(
    ("text", "line", "column", "message"),
    [
        (
            "x = 1; y = 2",
            1,
            6,
            'syntax error: unexpected ";": HCL has no ";" separator; write one attribute per line',
        ),
        (
            'routers "r" {\n  rule = "a"\n  service = "b"; priority = 2\n}\n',
            3,
            16,
            'syntax error: unexpected ";": HCL has no ";" separator; write one attribute per line',
        ),
        (
            'mirror { service = "x", percentage = 10 }',
            1,
            23,
            'syntax error: unexpected ",": attributes of a block are not separated by ","; '
            "write one attribute per line",
        ),
        ("x = [1,,2]", 1, 8, 'syntax error: unexpected "," (expected a value)'),
        ("a {", 1, 4, 'syntax error: unexpected end of file (expected "}")'),
        ("a {\n  x = 1\n", 3, 1, 'syntax error: unexpected end of file (expected "}")'),
        (
            'x = "open',
            1,
            10,
            "syntax error: unexpected end of file inside a string (missing closing '\"')",
        ),
        ("x = \ny = 1", 1, 5, "syntax error: unexpected end of line (expected a value)"),
        ("x = [1 2]", 1, 8, 'syntax error: unexpected "2" (expected "," or "]" or a new line)'),
        ("x == 1", 1, 3, 'syntax error: unexpected "=="'),
        ("x = @", 1, 5, 'syntax error: unexpected "@" (expected a value)'),
        ('x = "a" "b"', 1, 9, "syntax error: unexpected '\"'"),
        ("}", 1, 1, 'syntax error: unexpected "}" (expected a name or a new line)'),
        ("x\n= 1", 2, 1, 'syntax error: unexpected "=" (expected "{")'),
    ],
)
def test_syntax_errors(text: str, line: int, column: int, message: str) -> None:
    result = parse(text)
    assert not result.ok
    assert result.data == {}
    (problem,) = result.problems
    assert (problem.file, problem.line, problem.column, problem.path) == (
        "gateway.hcl",
        line,
        column,
        "",
    )
    assert problem.message == message
    assert problem.severity == "error"


def test_other_python_hcl2_failures_become_problems() -> None:
    # Only reachable without template protection (see the private-use test below).
    result = parse('x = "\ue000 %{ if x } b"')
    assert not result.ok
    (problem,) = result.problems
    assert (problem.line, problem.column) == (None, None)
    assert problem.message == "could not parse the file: Unterminated template if directive"
    nested = parse("a = " + "[" * 3000 + "]" * 3000)
    assert [p.message for p in nested.problems] == [
        "could not parse the file: values are nested too deeply"
    ]


def test_syntax_error_problem_format() -> None:
    (problem,) = parse("a {\n  x = 1;\n}").problems
    assert problem.format().startswith('gateway.hcl:2:8: error: syntax error: unexpected ";"')


# ------------------------------------------------------------------------ text handling


def test_bom_is_skipped_and_positions_unchanged() -> None:
    result = parse('\ufeffrouters "a" {\n  rule = "x"\n}')
    assert result.ok
    assert result.data == {"routers": {"a": {"rule": "x"}}}
    position = result.sources.get(("routers", "a"))
    assert position is not None
    assert (position.line, position.column) == (1, 1)


def test_empty_and_comment_only_text() -> None:
    assert ok("") == {}
    assert ok("# nothing\n// here\n/* at\nall */\n") == {}


def test_crlf_line_endings() -> None:
    assert ok('a "b" {\r\n  x = "y"\r\n  z = <<EOF\r\nh\r\nEOF\r\n}\r\n')["a"] == {
        "b": {"x": "y", "z": "h"}
    }


def test_template_protection_is_skipped_for_private_use_text() -> None:
    # The placeholders use the private-use area; text already using it keeps python-hcl2's
    # own template handling (so the SPEC's default syntax is then a syntax error).
    assert ok('x = "\ue000 ${A}"') == {"x": "\ue000 ${A}"}
    assert not parse('x = "\ue000 ${A:-b}"').ok


# ------------------------------------------------------------------------------ positions


README_CONFIG = """\
# Entrypoints — network listeners
entrypoints "web" {
address = "0.0.0.0:80"
}
entrypoints "websecure" {
address = "0.0.0.0:443"
tls {
cert_file = "/etc/certs/cert.pem"
key_file = "/etc/certs/key.pem"
}
}
entrypoints "tcp-db" {
address = "0.0.0.0:5432"
protocol = "tcp"
max_connections = 100
tcp_allowed_ips = ["10.0.0.0/8"]
}
# Routers — request matching
routers "api" {
rule = "Host(`api.example.com`) && PathPrefix(`/v1`)"
service = "api-service"
entrypoints = ["websecure"]
middlewares = ["auth-jwt", "rate-limit"]
}
# Services — backend pools
services "api-service" {
load_balancer {
strategy = "round-robin"
servers = [
{ url = "http://127.0.0.1:8001" },
{ url = "http://127.0.0.1:8002" }
]
health_check {
path = "/health"
interval = "10s"
}
sticky {
cookie = "srv_id"
}
}
# Traffic mirroring (optional)
mirror {
service = "shadow-backend"
percentage = 10
}
# Failover (optional)
failover {
service = "backup-pool"
}
# Autoscaling (optional)
scaling {
min_replicas = 0
max_replicas = 10
container_concurrency = 50
target_utilization = 0.7
buffer_enabled = true
executor = "box"
}
# Revision traffic splitting (optional)
revisions = [
{ name = "v1", traffic_percent = 90, strategy = "round-robin",
servers = [{ url = "http://127.0.0.1:8001" }] },
{ name = "v2", traffic_percent = 10, strategy = "round-robin",
servers = [{ url = "http://127.0.0.1:8003" }] }
]
# Gradual rollout (optional)
rollout {
from = "v1"
to = "v2"
step_percent = 10
step_interval_secs = 60
error_rate_threshold = 0.05
latency_threshold_ms = 5000
}
}
# Middlewares
middlewares "auth-jwt" {
type = "jwt"
value = "${JWT_SECRET}"
}
middlewares "rate-limit" {
type = "rate-limit"
rate = 100
burst = 50
}
# Providers
providers {
file {
watch = true
directory = "/etc/gateway/conf.d/"
}
discovery {
poll_interval_secs = 30
seeds = [
{ url = "http://10.0.0.5:8080" },
{ url = "http://10.0.0.6:8080" }
]
}
}
"""


def data_paths(value: object, path: Path = ()) -> list[Path]:
    """Every path into normalised data (each attribute, block, list element and object key)."""
    found: list[Path] = [path] if path else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += data_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += data_paths(item, (*path, index))
    return found


def test_readme_config_normalises() -> None:
    data = ok(README_CONFIG)
    assert sorted(data) == ["entrypoints", "middlewares", "providers", "routers", "services"]
    service = data["services"]
    assert isinstance(service, dict)
    api = service["api-service"]
    assert api["load_balancer"]["servers"] == [
        {"url": "http://127.0.0.1:8001"},
        {"url": "http://127.0.0.1:8002"},
    ]
    assert api["revisions"][1] == {
        "name": "v2",
        "traffic_percent": 10,
        "strategy": "round-robin",
        "servers": [{"url": "http://127.0.0.1:8003"}],
    }
    assert api["scaling"]["target_utilization"] == 0.7
    assert api["rollout"]["from"] == "v1"
    assert data["middlewares"] == {
        "auth-jwt": {"type": "jwt", "value": "${JWT_SECRET}"},
        "rate-limit": {"type": "rate-limit", "rate": 100, "burst": 50},
    }
    assert data["providers"] == {
        "file": {"watch": True, "directory": "/etc/gateway/conf.d/"},
        "discovery": {
            "poll_interval_secs": 30,
            "seeds": [{"url": "http://10.0.0.5:8080"}, {"url": "http://10.0.0.6:8080"}],
        },
    }


def test_readme_config_every_data_path_has_a_position() -> None:
    result = parse(README_CONFIG)
    paths = data_paths(result.data)
    assert len(paths) == len(result.sources)
    assert [path for path in paths if result.sources.get(path) is None] == []


@pytest.mark.parametrize(
    ("path", "line", "column"),
    [
        (("entrypoints", "web"), 2, 1),
        (("entrypoints", "websecure", "tls"), 7, 1),
        (("entrypoints", "websecure", "tls", "key_file"), 9, 1),
        (("entrypoints", "tcp-db", "tcp_allowed_ips", 0), 16, 20),
        (("routers", "api", "middlewares", 1), 23, 28),
        (("services", "api-service", "load_balancer", "servers", 1), 31, 1),
        (("services", "api-service", "load_balancer", "servers", 1, "url"), 31, 3),
        (("services", "api-service", "load_balancer", "sticky", "cookie"), 38, 1),
        (("services", "api-service", "revisions"), 60, 1),
        (("services", "api-service", "revisions", 0, "strategy"), 61, 38),
        (("services", "api-service", "revisions", 1), 63, 1),
        (("services", "api-service", "revisions", 1, "servers"), 64, 1),
        (("services", "api-service", "revisions", 1, "servers", 0, "url"), 64, 14),
        (("services", "api-service", "rollout", "latency_threshold_ms"), 73, 1),
        (("middlewares", "auth-jwt", "value"), 79, 1),
        (("providers", "discovery", "seeds", 1, "url"), 96, 3),
    ],
)
def test_readme_config_positions(path: Path, line: int, column: int) -> None:
    position = parse(README_CONFIG).sources.get(path)
    assert position is not None
    assert (position.file, position.line, position.column) == ("gateway.hcl", line, column)


def test_problems_locate_the_innermost_known_element() -> None:
    result = parse(README_CONFIG)
    path: Path = ("services", "api-service", "revisions", 1, "servers", 0, "url", "host")
    problem = make_problem("error", path, "x", result.sources, default_file="other.hcl")
    assert (problem.file, problem.line, problem.column) == ("gateway.hcl", 64, 14)


def test_list_block_positions_use_indices() -> None:
    result = parse('lb {\n  servers { url = "a" }\n  servers {\n    url = "b"\n  }\n}')
    assert data_paths(result.data) == [
        ("lb",),
        ("lb", "servers"),
        ("lb", "servers", 0),
        ("lb", "servers", 0, "url"),
        ("lb", "servers", 1),
        ("lb", "servers", 1, "url"),
    ]
    lines = [getattr(result.sources.get(p), "line", None) for p in data_paths(result.data)]
    assert lines == [1, 2, 2, 2, 3, 4]


# ------------------------------------------------------------------------------ robustness


@pytest.mark.parametrize(
    "text",
    [
        "[" * 3000,
        "a = " + "[" * 3000 + "]" * 3000,
        "a " * 2000 + "{}",
        'x = "\\',
        "<<EOF",
        "x = <<EOF\n${\nEOF\n",
        "\x00",
        "a = {\n" * 50 + "}\n" * 50,
    ],
)
def test_never_raises_on_pathological_input(text: str) -> None:
    result = parse(text)
    assert result.ok or result.problems


HCL_PIECES = st.sampled_from(
    [
        *'{}[]()=:,?."\\#*<-$% \n\tab1;',
        'x = "',
        "${",
        "%{",
        "$${",
        "<<EOF\n",
        "\nEOF\n",
        'r "a" {\n',
        "}\n",
        "tls {\n",
        "servers {",
        "= [",
        "// c\n",
        "/*",
        "*/",
        "null",
    ]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(HCL_PIECES, max_size=40).map("".join))
def test_never_raises_on_hcl_like_noise(text: str) -> None:
    result = parse(text)
    assert isinstance(result, ParsedFile)
    if not result.ok:
        assert result.data == {}
        assert result.problems


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=120))
def test_never_raises_on_any_text(text: str) -> None:
    assert isinstance(parse(text), ParsedFile)

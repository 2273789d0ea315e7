"""Environment interpolation (SPEC §3.3.1): forms, exact messages, tree walking, coercion."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from a3s_gateway.config.interpolate import (
    InterpolationResult,
    Substituted,
    coerce_scalar,
    interpolate,
    interpolate_tree,
    is_file_path,
)

if TYPE_CHECKING:
    from collections.abc import Callable

ENV = {"HOST": "10.0.0.1", "PORT": "8080", "EMPTY": "", "TRICKY": "${HOST} $${ %{ }", "ON": "true"}
UNSUPPORTED = '": only ${NAME} and ${NAME:-default} are supported'
DIRECTIVE = 'template directives ("%{") are not supported; write "%%{" for a literal "%{"'
KEY_ERROR = '"${" is not allowed in block labels, attribute names or object keys; they are literal'


def raised(error: type[Exception], call: Callable[[], object]) -> str:
    """The message of the ``error`` that ``call`` raises (fails the test if none)."""
    try:
        call()
    except error as caught:
        return str(caught)
    pytest.fail(f"{error.__name__} not raised")


@pytest.mark.parametrize(
    ("text", "result"),
    [
        ("plain", "plain"),
        ("", ""),
        ("${HOST}", "10.0.0.1"),
        ("http://${HOST}:${PORT}/x", "http://10.0.0.1:8080/x"),
        ("${EMPTY}", ""),
        ("a${EMPTY}b", "ab"),
        ("${PORT:-9}", "8080"),
        ("${EMPTY:-9}", "9"),
        ("${UNSET:-9}", "9"),
        ("${UNSET:-}", ""),
        ("${UNSET:-a b:c-d $x {y}", "a b:c-d $x {y"),
        ("${UNSET:-%{x}", "%{x"),
        ("$${HOST}", "${HOST}"),
        ("$$${HOST}", "$${HOST}"),
        ("$$", "$$"),
        ("$", "$"),
        ("cost: $5", "cost: $5"),
        ("$HOST", "$HOST"),
        ("100%", "100%"),
        ("%%{x}", "%{x}"),
        ("%%%{x}", "%%{x}"),
        ("%x{", "%x{"),
        ("{}", "{}"),
        ("${_x1:-d}", "d"),
    ],
)
def test_interpolate_forms(text: str, result: str) -> None:
    assert interpolate(text, ENV) == result


def test_substituted_text_is_not_scanned_again() -> None:
    assert interpolate("${TRICKY}", ENV) == "${HOST} $${ %{ }"
    assert interpolate("<${TRICKY}>", ENV) == "<${HOST} $${ %{ }>"
    assert interpolate("${UNSET:-$HOST}", ENV) == "$HOST"


def test_unset_variable() -> None:
    assert raised(ValueError, lambda: interpolate("${JWT_SECRET}", {})) == (
        "environment variable JWT_SECRET is not set"
    )
    assert raised(ValueError, lambda: interpolate("x ${HOST} ${NOPE}", ENV)) == (
        "environment variable NOPE is not set"
    )


@pytest.mark.parametrize(
    "expression",
    [
        "${var.x}",
        '${env("X")}',
        "${A-b}",
        "${1X}",
        "${}",
        "${ HOST}",
        "${HOST }",
        "${HOST:default}",
        "${HOST:=x}",
        "${HOST-x}",
        "${A:-${B}",
        "${a.b.c}",
        "${HOST?}",
    ],
)
def test_unsupported_expressions(expression: str) -> None:
    message = raised(ValueError, lambda: interpolate(f"x{expression}}}y", ENV))
    assert message == f'unsupported expression "{expression}{UNSUPPORTED}'


def test_nested_default_is_unsupported() -> None:
    message = raised(ValueError, lambda: interpolate("${A:-${B}}", ENV))
    assert message == f'unsupported expression "${{A:-${{B}}{UNSUPPORTED}'


def test_unsupported_expression_escapes_control_characters() -> None:
    message = raised(ValueError, lambda: interpolate("${a\nb}", ENV))
    assert message == f'unsupported expression "${{a\\nb}}{UNSUPPORTED}'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${HOST", 'unterminated expression "${HOST": expected "}"'),
        ("a ${", 'unterminated expression "${": expected "}"'),
        ("${X:-abc", 'unterminated expression "${X:-abc": expected "}"'),
        ("${" + "A" * 60, 'unterminated expression "${' + "A" * 38 + '...": expected "}"'),
    ],
)
def test_unterminated_expression(text: str, message: str) -> None:
    assert raised(ValueError, lambda: interpolate(text, ENV)) == message


@pytest.mark.parametrize("text", ["%{if x}y%{endif}", "a %{", "%%%%{ ok %{"])
def test_template_directives_are_errors(text: str) -> None:
    assert raised(ValueError, lambda: interpolate(text, ENV)) == DIRECTIVE


def test_first_problem_wins() -> None:
    assert raised(ValueError, lambda: interpolate("%{ ${NOPE}", ENV)) == DIRECTIVE
    assert raised(ValueError, lambda: interpolate("${NOPE} %{", ENV)) == (
        "environment variable NOPE is not set"
    )


# --------------------------------------------------------------------------- trees


def test_interpolate_tree_walks_dicts_and_lists() -> None:
    data = {
        "entrypoints": {"web": {"address": ":${PORT}"}},
        "servers": [{"url": "http://${HOST}"}, {"url": "http://x", "weight": 2}],
        "flags": [True, None, 1.5, 3],
    }
    result = interpolate_tree(data, ENV)
    assert result == InterpolationResult(
        data={
            "entrypoints": {"web": {"address": ":8080"}},
            "servers": [{"url": "http://10.0.0.1"}, {"url": "http://x", "weight": 2}],
            "flags": [True, None, 1.5, 3],
        },
        errors=(),
        whole=frozenset(),
        substituted=(
            Substituted(("entrypoints", "web", "address"), ("8080",), (":",)),
            Substituted(("servers", 0, "url"), ("10.0.0.1",), ("http://",)),
        ),
    )


def test_every_substituted_value_is_a_secret_unless_public_or_empty() -> None:
    data = {
        "a": "x${HOST}y${PORT}z",
        "b": "${EMPTY}${MISSING:-}",
        "c": "${HOST}",
        "d": "${NOPE:-fallback}",
        "e": "$${HOST} plain",
    }
    result = interpolate_tree(data, ENV, public=["PORT"])
    assert result.substituted == (
        Substituted(("a",), ("10.0.0.1",), ("x", "y8080z")),
        Substituted(("c",), ("10.0.0.1",), ()),
        Substituted(("d",), ("fallback",), ()),
    )
    assert result.secrets() == frozenset({"10.0.0.1", "fallback"})
    assert result.secrets(besides=frozenset({("c",), ("d",)})) == frozenset({"10.0.0.1"})
    assert interpolate_tree(data, ENV, public=["HOST", "PORT", "NOPE"]).substituted == ()


def test_file_path_fields_hold_no_secrets() -> None:
    data = {
        "tls": {"cert_file": "${HOST}/cert.pem", "certificates": [{"key_file": "${HOST}/k"}]},
        "providers": {"file": {"directory": "${HOST}/conf.d"}},
        "observability": {"access_log_path": "${HOST}/access.log"},
        "local": {"env": {"cert_file": "${PORT}"}, "cwd": "${HOST}"},
    }
    result = interpolate_tree(data, ENV)
    assert result.data["tls"] == {  # type: ignore[index]  # the input's shape: a dict
        "cert_file": "10.0.0.1/cert.pem",
        "certificates": [{"key_file": "10.0.0.1/k"}],
    }
    # A key of a map (an environment variable of a child process) is not a field.
    assert result.substituted == (Substituted(("local", "env", "cert_file"), ("8080",), ()),)
    assert is_file_path(("tls", "client_ca_file"))
    assert not is_file_path(("headers", "x_file"))
    assert not is_file_path(("tls", "cert_file", 0))
    assert not is_file_path(())


def test_interpolate_tree_does_not_mutate_its_input() -> None:
    data = {"a": ["${HOST}"]}
    interpolate_tree(data, ENV)
    assert data == {"a": ["${HOST}"]}


def test_interpolate_tree_records_whole_interpolations() -> None:
    data = {
        "port": "${PORT}",
        "weight": "${W:-5}",
        "on": "${ON}",
        "mixed": "${PORT}0",
        "two": "${PORT}${PORT}",
        "escaped": "$${PORT}",
        "literal": "8080",
        "list": ["${PORT}", "x${PORT}"],
        "broken": "${MISSING}",
    }
    result = interpolate_tree(data, ENV)
    assert result.whole == frozenset({("port",), ("weight",), ("on",), ("list", 0)})
    assert result.errors == ((("broken",), "environment variable MISSING is not set"),)


def test_interpolate_tree_collects_every_error_and_keeps_failed_text() -> None:
    data = {
        "routers": {
            "api": {"rule": "Host(`${NOPE}`)", "service": "${HOST} %{"},
            "b${X}": {"rule": "${var.x}"},
        },
        "list": ["ok", "${", {"deep": ["${ALSO_NOPE}"]}],
    }
    result = interpolate_tree(data, ENV)
    assert result.errors == (
        (("routers", "api", "rule"), "environment variable NOPE is not set"),
        (("routers", "api", "service"), DIRECTIVE),
        (("routers", "b${X}"), KEY_ERROR),
        (("routers", "b${X}", "rule"), f'unsupported expression "${{var.x}}{UNSUPPORTED}'),
        (("list", 1), 'unterminated expression "${": expected "}"'),
        (("list", 2, "deep", 0), "environment variable ALSO_NOPE is not set"),
    )
    assert result.data == data
    assert result.whole == frozenset()


def test_interpolate_tree_keys_are_literal() -> None:
    result = interpolate_tree({"$${x}": "v", "%{y": "w", "a": {"${K}": 1}}, ENV)
    assert result.data == {"$${x}": "v", "%{y": "w", "a": {"${K}": 1}}
    assert result.errors == (
        (("$${x}",), KEY_ERROR),
        (("a", "${K}"), KEY_ERROR),
    )


def test_interpolate_tree_scalars_and_tuples() -> None:
    assert interpolate_tree("${HOST}", ENV).data == "10.0.0.1"
    assert interpolate_tree("${HOST}", ENV).whole == frozenset({()})
    assert interpolate_tree(7, ENV).data == 7
    assert interpolate_tree(None, ENV).data is None
    assert interpolate_tree(("${PORT}", 1), ENV).data == ("8080", 1)
    assert interpolate_tree({1: "${PORT}"}, ENV).whole == frozenset({(1,)})


def test_interpolation_result_is_frozen() -> None:
    result = interpolate_tree({}, ENV)
    with pytest.raises(AttributeError):
        result.data = 1  # type: ignore[misc]  # frozen dataclass: the assignment is the test


# --------------------------------------------------------------------------- coercion


@pytest.mark.parametrize(
    ("text", "target", "value"),
    [
        ("8080", int, 8080),
        ("-3", int, -3),
        ("007", int, 7),
        ("0.5", float, 0.5),
        ("-2", float, -2.0),
        ("1e3", float, 1000.0),
        ("1.5E-2", float, 0.015),
        ("true", bool, True),
        ("false", bool, False),
    ],
)
def test_coerce_scalar_accepts(text: str, target: type[float], value: float) -> None:
    result = coerce_scalar(text, target)
    assert result == value
    assert type(result) is target


@pytest.mark.parametrize(
    ("text", "target", "message"),
    [
        ("", int, 'expected an integer, got ""'),
        ("8080 ", int, 'expected an integer, got "8080 "'),
        ("+1", int, 'expected an integer, got "+1"'),
        ("1.0", int, 'expected an integer, got "1.0"'),
        ("0x10", int, 'expected an integer, got "0x10"'),
        ("1_000", int, 'expected an integer, got "1_000"'),
        ("\u0661", int, 'expected an integer, got "\u0661"'),
        ("9" * 65, int, f'expected an integer, got "{"9" * 65}"'),
        ("", float, 'expected a number, got ""'),
        (".5", float, 'expected a number, got ".5"'),
        ("1.", float, 'expected a number, got "1."'),
        ("nan", float, 'expected a number, got "nan"'),
        ("inf", float, 'expected a number, got "inf"'),
        ("1e999", float, 'expected a number, got "1e999"'),
        ("True", bool, 'expected true or false, got "True"'),
        ("1", bool, 'expected true or false, got "1"'),
        ("yes", bool, 'expected true or false, got "yes"'),
        ("", bool, 'expected true or false, got ""'),
    ],
)
def test_coerce_scalar_rejects(text: str, target: type[float], message: str) -> None:
    assert raised(ValueError, lambda: coerce_scalar(text, target)) == message


def test_coerce_scalar_refuses_other_targets() -> None:
    with pytest.raises(TypeError, match="converts to int, float or bool"):
        coerce_scalar("x", str)  # type: ignore[arg-type]  # the wrong target is the test

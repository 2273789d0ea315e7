"""The routing rule language: typed AST, parser, renderer and matcher-name checks (SPEC §4.1–4.2).

Ring 0: pure functions over strings and frozen values; no I/O, no trio, sockets, TLS or clocks.
Must not: know which matchers exist for which kind of router (the rule compiler passes an
``arity`` table in), interpret arguments (hosts, paths, regexes) or compile regexes.

Theory of operation. ``parse_rule`` runs a recursive-descent parser over the lazy token stream
of ``rule_lexer.RuleLexer``, one function per grammar level::

    rule    = or
    or      = and { "||" and }          (loop: left-associative)
    and     = unary { "&&" unary }      (loop: left-associative)
    unary   = "!" unary | primary
    primary = "(" or ")" | call
    call    = NAME "(" [ string { "," string } [ "," ] ] ")"

so ``!`` binds tighter than ``&&``, which binds tighter than ``||``. The parser only recurses
for ``(`` and ``!``, whose nesting is capped at ``MAX_NESTING``; the depth of the resulting
tree (long ``&&``/``||`` chains included) is capped at ``MAX_DEPTH`` and the text at
``MAX_RULE_LENGTH``, so neither this module nor a recursive consumer of the tree can exhaust the
Python stack. Everything else here walks trees with an explicit stack (``_fold``).

``parse_rule`` checks only lexis and grammar (``Host()`` parses). ``check_calls`` then resolves
each matcher name through its four accepted spellings (§4.2, ``spellings`` and friends live in
``rule_lexer.py`` and are re-exported here) and aliases, and checks argument counts and empty
arguments against the table it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, TypeAlias, TypeVar, assert_never

from a3s_gateway.routing.rule_lexer import (
    NAME_RE,
    RuleLexer,
    RuleSyntaxError,
    quote_string,
    resolve_name,
    spellings,
    unknown_matcher_message,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from a3s_gateway.routing.rule_lexer import Token

__all__ = [
    "MAX_DEPTH",
    "MAX_NESTING",
    "MAX_RULE_LENGTH",
    "VARIADIC",
    "And",
    "Call",
    "Node",
    "Not",
    "Or",
    "RuleSyntaxError",
    "check_calls",
    "leaves",
    "parse_rule",
    "render_rule",
    "resolve_name",
    "spellings",
    "strip_columns",
    "unknown_matcher_message",
]

#: Longest rule text accepted, in characters.
MAX_RULE_LENGTH: Final = 16 * 1024
#: Deepest nesting of ``(`` groups and ``!`` operators (bounds the parser's recursion).
MAX_NESTING: Final = 100
#: Deepest tree accepted: operators on one root-to-leaf path, ``&&``/``||`` chains included.
MAX_DEPTH: Final = 200
#: An ``arity`` maximum for variadic (v2) matchers; any maximum >= MAX_RULE_LENGTH means "no limit".
VARIADIC: Final = 1 << 30

_NO_ALIASES: Final[Mapping[str, str]] = MappingProxyType({})
_T = TypeVar("_T")


# ------------------------------------------------------------------------------------ the tree


@dataclass(frozen=True, slots=True)
class Call:
    """A matcher call: ``name`` as written (canonical after ``check_calls``), decoded ``args``.

    ``column`` is the 1-based column of the name; ``arg_columns`` those of each argument's
    opening quote.
    """

    name: str
    args: tuple[str, ...]
    column: int
    arg_columns: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Not:
    """``!operand``; ``column`` is that of the ``!``."""

    operand: Node
    column: int


@dataclass(frozen=True, slots=True)
class And:
    """``left && right``."""

    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Or:
    """``left || right``."""

    left: Node
    right: Node


Node: TypeAlias = Call | Not | And | Or


def _fold(
    node: Node,
    on_call: Callable[[Call], _T],
    on_not: Callable[[Not, _T], _T],
    on_binary: Callable[[And | Or, _T, _T], _T],
) -> _T:
    """Post-order fold with an explicit stack; calls ``on_call`` in reading order."""
    results: list[_T] = []
    stack: list[tuple[Node, bool]] = [(node, False)]
    while stack:
        current, children_done = stack.pop()
        match current:
            case Call():
                results.append(on_call(current))
            case Not() if children_done:
                results.append(on_not(current, results.pop()))
            case Not():
                stack += [(current, True), (current.operand, False)]
            case And() | Or() if children_done:
                right = results.pop()
                results.append(on_binary(current, results.pop(), right))
            case And() | Or():
                stack += [(current, True), (current.right, False), (current.left, False)]
            case _:
                assert_never(current)
    return results[0]


def _rebuild_not(node: Not, operand: Node) -> Node:
    return Not(operand, node.column)


def _rebuild_binary(node: And | Or, left: Node, right: Node) -> Node:
    return And(left, right) if isinstance(node, And) else Or(left, right)


def leaves(node: Node) -> Iterator[Call]:
    """Every ``Call`` in the tree, in reading order."""
    stack: list[Node] = [node]
    while stack:
        current = stack.pop()
        match current:
            case Call():
                yield current
            case Not():
                stack.append(current.operand)
            case And() | Or():
                stack += [current.right, current.left]
            case _:
                assert_never(current)


def strip_columns(node: Node) -> Node:
    """The same tree with every column set to 0 (to compare trees by shape and values)."""

    def call(leaf: Call) -> Node:
        return Call(leaf.name, leaf.args, 0, (0,) * len(leaf.args))

    return _fold(node, call, lambda _, operand: Not(operand, 0), _rebuild_binary)


# ---------------------------------------------------------------------------------- the parser


def parse_rule(text: str) -> Node:
    """Parse a rule into its tree (SPEC §4.1): lexis and grammar only, no name or arity checks.

    Raises ``RuleSyntaxError`` (with the column of the first offending character) on any error.
    """
    if len(text) > MAX_RULE_LENGTH:
        message = f"rule is too long: {len(text)} characters (the limit is {MAX_RULE_LENGTH})"
        raise RuleSyntaxError(message, None)
    return _Parser(text).rule()


def _describe(token: Token) -> str:
    match token.kind:
        case "name":
            return f'name "{token.text}"'
        case "string":
            return "string"
        case "end":
            return "end of rule"
        case _:
            return f'"{token.text}"'


def _unexpected(token: Token, expected: str) -> RuleSyntaxError:
    return RuleSyntaxError(f"unexpected {_describe(token)}; {expected}", token.column)


def _deeper(depth: int, other: int, operator: Token) -> int:
    """Depth of a new operator node over subtrees of the given depths; enforces ``MAX_DEPTH``."""
    result = 1 + max(depth, other)
    if result > MAX_DEPTH:
        message = f"rule is too complex: more than {MAX_DEPTH} nested operators"
        raise RuleSyntaxError(message, operator.column)
    return result


class _Parser:
    """One parse: the current token, the lexer behind it and the current nesting."""

    def __init__(self, text: str) -> None:
        self._lexer = RuleLexer(text)
        self._token = self._lexer.next_token()
        self._nesting = 0

    def _advance(self) -> Token:
        token = self._token
        self._token = self._lexer.next_token()
        return token

    def _enter(self, token: Token) -> None:
        self._nesting += 1
        if self._nesting > MAX_NESTING:
            message = f'rule is nested too deeply: more than {MAX_NESTING} levels of "(" and "!"'
            raise RuleSyntaxError(message, token.column)

    def rule(self) -> Node:
        if self._token.kind == "end":
            raise RuleSyntaxError("empty rule", None)
        node, _ = self._or()
        token = self._token
        if token.kind == ")":
            raise RuleSyntaxError('unexpected ")"; unbalanced parentheses', token.column)
        if token.kind != "end":
            raise _unexpected(token, 'expected "&&", "||" or end of rule')
        return node

    def _or(self) -> tuple[Node, int]:
        left, depth = self._and()
        while self._token.kind == "||":
            operator = self._advance()
            right, right_depth = self._and()
            left, depth = Or(left, right), _deeper(depth, right_depth, operator)
        return left, depth

    def _and(self) -> tuple[Node, int]:
        left, depth = self._unary()
        while self._token.kind == "&&":
            operator = self._advance()
            right, right_depth = self._unary()
            left, depth = And(left, right), _deeper(depth, right_depth, operator)
        return left, depth

    def _unary(self) -> tuple[Node, int]:
        token = self._token
        if token.kind != "!":
            return self._primary()
        self._enter(token)
        self._advance()
        operand, depth = self._unary()
        self._nesting -= 1
        return Not(operand, token.column), _deeper(depth, 0, token)

    def _primary(self) -> tuple[Node, int]:
        token = self._token
        if token.kind == "name":
            return self._call(), 0
        if token.kind != "(":
            raise _unexpected(token, "expected a matcher")
        self._enter(token)
        self._advance()
        node, depth = self._or()
        closing = self._token
        if closing.kind == "end":
            raise _unexpected(closing, 'expected ")" (unbalanced parentheses)')
        if closing.kind != ")":
            raise _unexpected(closing, 'expected "&&", "||" or ")"')
        self._advance()
        self._nesting -= 1
        return node, depth

    def _call(self) -> Call:
        name = self._advance()
        if self._token.kind != "(":
            raise _unexpected(self._token, f'expected "(" after {name.text}')
        self._advance()
        args: list[Token] = []
        expecting_argument = True
        while (token := self._token).kind != ")":
            if expecting_argument and token.kind == "string":
                args.append(token)
            elif not expecting_argument and token.kind == ",":
                pass
            elif expecting_argument:
                hint = " (quote it with backticks)" if token.kind == "name" else ' or ")"'
                raise _unexpected(token, f"expected a string argument{hint}")
            else:
                raise _unexpected(token, 'expected "," or ")"')
            expecting_argument = not expecting_argument
            self._advance()
        self._advance()
        arg_values = tuple(arg.text for arg in args)
        return Call(name.text, arg_values, name.column, tuple(arg.column for arg in args))


# -------------------------------------------------------------------------------- the renderer

_OR_LEVEL: Final = 1
_AND_LEVEL: Final = 2
_ATOM_LEVEL: Final = 3


def render_rule(node: Node) -> str:
    """Canonical rule text that ``parse_rule`` reads back as ``node`` (columns aside).

    Backtick strings where possible, interpreted strings with escapes otherwise; parentheses
    only where precedence or associativity needs them. Raises ``ValueError`` for a name that is
    not a NAME or an argument no rule string can express (a lone surrogate).
    """
    return _fold(node, _render_call, _render_not, _render_binary)[0]


def _render_call(call: Call) -> tuple[str, int]:
    if not NAME_RE.fullmatch(call.name):
        raise ValueError(f"{call.name!r} is not a matcher name")
    return f"{call.name}({', '.join(map(quote_string, call.args))})", _ATOM_LEVEL


def _render_not(_: Not, operand: tuple[str, int]) -> tuple[str, int]:
    text, level = operand
    return "!" + (text if level == _ATOM_LEVEL else f"({text})"), _ATOM_LEVEL


def _render_binary(
    node: And | Or, left: tuple[str, int], right: tuple[str, int]
) -> tuple[str, int]:
    level, operator = (_AND_LEVEL, " && ") if isinstance(node, And) else (_OR_LEVEL, " || ")
    # Left-associative: a same-level left operand needs no parentheses, a right one does.
    left_text = left[0] if left[1] >= level else f"({left[0]})"
    right_text = right[0] if right[1] > level else f"({right[0]})"
    return left_text + operator + right_text, level


# ------------------------------------------------------------------------------ argument checks


def check_calls(
    node: Node, arity: Mapping[str, tuple[int, int]], *, aliases: Mapping[str, str] = _NO_ALIASES
) -> Node:
    """Resolve and check every call; return the tree with canonical matcher names.

    ``arity`` maps each declared matcher name to its (minimum, maximum) argument count;
    ``aliases`` maps an alias's declared name to its target, a key of ``arity``. Each call's
    name must be one of the four spellings of a declared name or alias (§4.2); it is replaced by
    the target's declared name. Raises ``RuleSyntaxError`` at the call's column for an unknown
    name, a wrong argument count or an empty argument, reporting the first bad call in reading
    order.
    """
    declared = [*arity, *(alias for alias in aliases if alias not in arity)]
    lookup: dict[str, str] = {}
    for name in declared:
        for spelling in spellings(name):
            lookup.setdefault(spelling, name)

    def check(call: Call) -> Node:
        name = lookup.get(call.name)
        if name is None:
            raise RuleSyntaxError(unknown_matcher_message(call.name, declared), call.column)
        target = aliases.get(name, name)
        low, high = arity[target]
        if not low <= len(call.args) <= high:
            message = _arity_message(name, low, high, len(call.args))
            raise RuleSyntaxError(message, call.column)
        for position, arg in enumerate(call.args, start=1):
            if not arg:
                message = f"{name}() argument {position} must not be empty"
                raise RuleSyntaxError(message, call.column)
        return Call(target, call.args, call.column, call.arg_columns)

    return _fold(node, check, _rebuild_not, _rebuild_binary)


def _arity_message(name: str, low: int, high: int, count: int) -> str:
    if high >= MAX_RULE_LENGTH:
        expected = f"at least {_arguments(low)}"
    elif low == high:
        expected = _arguments(low)
    elif high == low + 1:
        expected = f"{low} or {_arguments(high)}"
    else:
        expected = f"{low} to {_arguments(high)}"
    return f"{name}() expects {expected}, got {count}"


def _arguments(count: int) -> str:
    if count == 0:
        return "no arguments"
    return "1 argument" if count == 1 else f"{count} arguments"

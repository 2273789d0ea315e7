"""python-hcl2 parse failures → one problem in the user's words (SPEC §2.3, §3.2).

Ring 0: pure; no I/O, no trio, sockets, TLS or clocks. When python-hcl2 cannot parse a file at
all it raises (lark's ``UnexpectedInput`` for syntax errors, ``VisitError``, ``RuntimeError``
and more); ``parse_failure`` turns that exception into problems: a syntax error with the line
and column read back from the source, what was found there and what was expected, and the
usual A3S slips (``;``, ``,`` between attributes, an unclosed string) explained.

Must not: raise, re-parse the text, or show lark's internal terminal names where a readable
word exists.
"""

from __future__ import annotations

from typing import Final

from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken, VisitError

from a3s_gateway.config.problems import Problem


def parse_failure(
    exc: Exception, text: str, filename: str, scan_problems: tuple[Problem, ...]
) -> tuple[Problem, ...]:
    """The problems reporting that python-hcl2 raised ``exc`` on ``text``.

    ``scan_problems`` are what ``hcl_scan`` found; they explain some failures better.
    """
    if isinstance(exc, UnexpectedInput):
        return (_syntax_problem(exc, text, filename),)
    if scan_problems:
        # python-hcl2 raises a bare RuntimeError for an attribute that repeats a block's name;
        # the scanner has already found that duplicate, with its position.
        return scan_problems
    if isinstance(exc, VisitError):
        detail = str(exc.orig_exc)
    elif isinstance(exc, RecursionError):
        detail = "values are nested too deeply"
    else:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    message = f"could not parse the file: {detail}"
    return (
        Problem(severity="error", file=filename, line=None, column=None, path="", message=message),
    )


_TERMINALS: Final = {
    "LBRACE": '"{"',
    "RBRACE": '"}"',
    "LSQB": '"["',
    "RSQB": '"]"',
    "LPAR": '"("',
    "RPAR": '")"',
    "EQ": '"="',
    "COLON": '":"',
    "COMMA": '","',
    "DOT": '"."',
    "QMARK": '"?"',
    "DBLQUOTE": "a string",
    "NAME": "a name",
    "INT_LITERAL": "a number",
    "FLOAT_LITERAL": "a number",
    "NL_OR_COMMENT": "a new line",
    "$END": "end of file",
}


def _syntax_problem(exc: UnexpectedInput, text: str, filename: str) -> Problem:
    lines = text.split("\n")
    line, column = exc.line, exc.column
    at_eof = isinstance(exc, UnexpectedToken) and exc.token.type == "$END"
    if at_eof or line < 1 or line > len(lines) or column > len(lines[line - 1]) + 1:
        # python-hcl2 appends a newline, and lark places "$END" oddly: the end is the end.
        line, column, at_eof = len(lines), len(lines[-1]) + 1, True
    found = "end of file" if at_eof else _found_at(exc, lines[line - 1], column)
    if found == '";"':
        message = (
            'syntax error: unexpected ";": HCL has no ";" separator; write one attribute per line'
        )
    elif found == '","' and _between_attributes(exc):
        message = (
            'syntax error: unexpected ",": attributes of a block are not separated by ","; '
            "write one attribute per line"
        )
    elif at_eof and _expects(exc, "DBLQUOTE") and not _expects(exc, "LBRACE"):
        message = "syntax error: unexpected end of file inside a string (missing closing '\"')"
    else:
        message = f"syntax error: unexpected {found}{_expected(exc)}"
    return Problem(
        severity="error", file=filename, line=line, column=column, path="", message=message
    )


def _found_at(exc: UnexpectedInput, line_text: str, column: int) -> str:
    """What the parser tripped over, read from the source (lark's token text is unhelpful)."""
    if isinstance(exc, UnexpectedToken) and exc.token.type != "STRING_CHARS":
        value = str(exc.token.value).strip()
        if value and "\n" not in value and len(value) <= 20:
            return _show(value)
    rest = line_text[column - 1 :].rstrip("\r")
    if not rest:
        return "end of line"
    if rest[0].isalnum() or rest[0] == "_":
        return _show(rest.split()[0][:20])
    return _show(rest[0])


def _show(found: str) -> str:
    return "'\"'" if found == '"' else f'"{found}"'


def _between_attributes(exc: UnexpectedInput) -> bool:
    """The parser had just finished an attribute of a block body (a "," there is A3S habit)."""
    return _expects(exc, "NL_OR_COMMENT") and not (
        _expects(exc, "COMMA") or _expects(exc, "DBLQUOTE")
    )


def _expects(exc: UnexpectedInput, terminal: str) -> bool:
    return isinstance(exc, UnexpectedToken) and terminal in exc.expected


def _expected(exc: UnexpectedInput) -> str:
    names: set[str] = set()
    if isinstance(exc, UnexpectedToken):
        names = set(exc.expected)
    elif isinstance(exc, UnexpectedCharacters):
        names = set(exc.allowed or ())
    if {"DBLQUOTE", "INT_LITERAL", "LSQB", "LBRACE"} <= names:
        return " (expected a value)"
    readable = sorted({_TERMINALS.get(name, name) for name in names})
    if not readable or len(readable) > 4 or any(name not in _TERMINALS for name in names):
        return ""
    return f" (expected {' or '.join(readable)})"

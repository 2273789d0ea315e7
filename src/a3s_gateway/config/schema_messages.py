"""msgspec validation messages rewritten in the user's words (SPEC §2.3).

Ring 0: pure string functions. "Expected `int` >= 1" becomes "must be at least 1", an invalid
enum value lists the accepted ones, a pattern is described in words. Must not: echo values of
fields that may hold secrets (msgspec's constraint messages carry no values; enum and tag
messages carry only the offending choice).
"""

from __future__ import annotations

import re
import types
from typing import Final, Literal, Union, get_args, get_origin

from a3s_gateway.config.annotations import strip_annotated
from a3s_gateway.config.values import describe_pattern

_TYPE_WORDS: Final = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "array": "a list",
    "object": "a block or object",
    "null": "null",
}


def translate(message: str, field_type: object) -> str:
    """msgspec's wording → the user's (SPEC §2.3: what is wrong and what is accepted)."""
    got = re.fullmatch(r"Expected `([^`]+)`, got `([^`]+)`", message)
    if got is not None:
        return f"expected {_words(got[1])}, got {_words(got[2])}"
    bound = re.fullmatch(r"Expected `([^`]+)` (>=|<=|>|<) (\S+)", message)
    if bound is not None:
        relation = {">=": "at least", "<=": "at most", ">": "greater than", "<": "less than"}
        return f"must be {relation[bound[2]]} {_number(bound[3])}"
    length = re.fullmatch(r"Expected `(str|array)` of length (>=|<=) (\d+)", message)
    if length is not None:
        if length[1] == "str" and length[2] == ">=" and length[3] == "1":
            return "must not be empty"
        noun = "character" if length[1] == "str" else "item"
        at = "at least" if length[2] == ">=" else "at most"
        plural = "" if length[3] == "1" else "s"
        return f"must have {at} {length[3]} {noun}{plural}"
    regex = re.fullmatch(r"Expected `str` matching regex (.*)", message, re.DOTALL)
    if regex is not None:
        described = describe_pattern(regex[1])
        return f"must be {described}" if described else f"must match {regex[1]}"
    enum = re.fullmatch(r"Invalid enum value (.*)", message)
    if enum is not None:
        choices = _literal_choices(field_type)
        value = enum[1].strip("'")
        return f'invalid value "{value}": expected one of {choices}'
    return message


def _words(spelled: str) -> str:
    return " or ".join(_TYPE_WORDS.get(part.strip(), part.strip()) for part in spelled.split("|"))


def _number(text: str) -> str:
    return text.removesuffix(".0")


def _literal_choices(tp: object) -> str:
    tp = strip_annotated(tp)
    if get_origin(tp) in (Union, types.UnionType):
        for member in get_args(tp):
            if get_origin(strip_annotated(member)) is Literal:
                tp = strip_annotated(member)
    if get_origin(tp) is Literal:
        return ", ".join(str(arg) for arg in get_args(tp))
    return "the documented values"

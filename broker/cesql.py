"""CloudEvents SQL (CESQL v1): compile an expression once, evaluate it per event.

`compile(text)` parses with lark (LALR) and builds a tree of frozen nodes; it raises
`CesqlParseError` and nothing else. `Expression.evaluate(attributes)` never raises: CESQL
is total, so every evaluation yields a value plus the errors met on the way (`Result`),
named with the TCK's vocabulary (`ErrorKind`).

The authority is the TCK in `shared/reference/cesql-tck/`; where it and the spec text
disagree, the TCK wins (see `_IMPLICIT_CASTS`). Semantics worth knowing:

- Error handling is fail-fast per operator (spec §4.1, which §1.2 asks filters to use):
  an operator or function whose operand evaluated with errors does not run; it yields
  the zero value of its own return type (`false`, `0`, `""`) and passes the errors on.
  So `missing * 5` is `0` and `1 / missing` is `0` with only `missingAttribute`
  (spec §3.2). A bare missing attribute, whose type is unknown, is `false`.
- A failed cast inside an operator is not fatal to it: the cast yields the target
  type's zero value plus a `cast` error and the operator runs (the TCK's `NOT 10` is
  `true` with a `cast` error).
- Integers are 32-bit. A literal outside the range is a parse error; an arithmetic
  result outside it is a `math` error with the zero value (no obvious value, §3.3),
  except `ABS(-2147483648)`, which the spec pins to 2147483647.
- Precedence follows spec §3.6, tightest first: function calls, NOT, unary minus,
  LIKE/IN (left to right), `* / %`, `+ -`, comparisons, then AND/OR/XOR all at one
  level, left to right (`a OR b AND c` is `(a OR b) AND c`, unlike SQL). NOT binds
  to a single operand: `NOT a = b` is `(NOT a) = b`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import Enum, StrEnum
from functools import lru_cache
from typing import Protocol

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

__all__ = ["CesqlParseError", "ErrorKind", "Expression", "Result", "Value", "compile"]

Value = bool | int | str

INT_MIN = -(2**31)
INT_MAX = 2**31 - 1
MAX_DEPTH = 200  # tree depth bound: evaluation recurses; no real filter comes close
CACHE_SIZE = 1024  # distinct filter expressions kept compiled


class CesqlParseError(ValueError):
    """The expression is not CESQL; the message says where."""


class ErrorKind(StrEnum):
    """The TCK's error vocabulary (its `error:` values)."""

    PARSE = "parse"
    MATH = "math"
    CAST = "cast"
    MISSING_FUNCTION = "missingFunction"
    FUNCTION_EVALUATION = "functionEvaluation"
    MISSING_ATTRIBUTE = "missingAttribute"
    GENERIC = "generic"


Errors = tuple[ErrorKind, ...]
Outcome = tuple[Value, Errors]
NO_ERRORS: Errors = ()


@dataclass(frozen=True)
class Result:
    """What an evaluation yields: a value, always, and the errors met (empty: none)."""

    value: Value
    errors: Errors = NO_ERRORS

    @property
    def passes(self) -> bool:
        """Whether an event passes this as a filter: `true` and no errors (spec §1.2)."""
        return self.value is True and not self.errors


# --- types and casts --------------------------------------------------------------


class Type(Enum):
    BOOLEAN = "Boolean"
    INTEGER = "Integer"
    STRING = "String"
    ANY = "Any"  # a parameter that takes its argument as it is (INT, BOOL, IS_INT, ...)

    @property
    def zero(self) -> Value:
        # ANY is only ever a parameter type, never a return type; false is the spec's
        # choice whenever a type is unknown (§3.2).
        return _ZERO.get(self, False)


_ZERO: dict[Type, Value] = {Type.BOOLEAN: False, Type.INTEGER: 0, Type.STRING: ""}


def type_of(value: Value) -> Type:
    # bool first: in Python a bool is also an int.
    if isinstance(value, bool):
        return Type.BOOLEAN
    return Type.INTEGER if isinstance(value, int) else Type.STRING


# Not int() alone: it also takes spaces, "_" and non-ASCII digits, and it raises on texts
# of thousands of digits rather than report an overflow.
_DECIMAL = re.compile(r"[+-]?0*([0-9]{1,10})")


def _string_to_integer(text: object) -> Outcome:
    if isinstance(text, str) and _DECIMAL.fullmatch(text):
        number = int(text)
        if INT_MIN <= number <= INT_MAX:
            return number, NO_ERRORS
    return 0, (ErrorKind.CAST,)


def _string_to_boolean(text: object) -> Outcome:
    lowered = str(text).lower()
    if lowered in ("true", "false"):
        return lowered == "true", NO_ERRORS
    return False, (ErrorKind.CAST,)


def _to_string(value: object) -> Outcome:
    return (str(value).lower() if isinstance(value, bool) else str(value)), NO_ERRORS


def _cast_failed(value: object) -> Outcome:
    return False, (ErrorKind.CAST,)


# Spec §3.7's table, used by the explicit casts INT(), BOOL() and STRING().
_CASTS: dict[tuple[Type, Type], Callable[[Value], Outcome]] = {
    (Type.INTEGER, Type.STRING): _to_string,
    (Type.INTEGER, Type.BOOLEAN): lambda number: (number != 0, NO_ERRORS),
    (Type.STRING, Type.INTEGER): _string_to_integer,
    (Type.STRING, Type.BOOLEAN): _string_to_boolean,
    (Type.BOOLEAN, Type.INTEGER): lambda flag: (int(flag), NO_ERRORS),
    (Type.BOOLEAN, Type.STRING): _to_string,
}

# The casts operators make on their own. The TCK (not_operator.yaml, "Invalid int cast")
# wants `NOT 10` to be `true` with a cast error, while spec §3.7 says Integer -> Boolean
# MUST be supported (which would make it `false` without error) and the TCK's own
# `BOOL(100)` is `true` without error. So an operator never reads an integer as a
# boolean; only BOOL() does.
_IMPLICIT_CASTS = {**_CASTS, (Type.INTEGER, Type.BOOLEAN): _cast_failed}


def cast(value: Value, target: Type, *, explicit: bool = False) -> Outcome:
    """`value` as `target`, or `target`'s zero value and a cast error."""
    source = type_of(value)
    if target in (source, Type.ANY):
        return value, NO_ERRORS
    return (_CASTS if explicit else _IMPLICIT_CASTS)[(source, target)](value)


def from_event(raw: object) -> Value | None:
    """An attribute as CESQL sees it; None when it is absent.

    Any value that is not one of CESQL's primitive types is a String (§3.2): a
    timestamp is its RFC 3339 text. An integer outside 32 bits is not an Integer.
    """
    if raw is None or isinstance(raw, bool | str):
        return raw
    if isinstance(raw, int):
        return raw if INT_MIN <= raw <= INT_MAX else str(raw)
    if isinstance(raw, datetime | date):
        return raw.isoformat()
    return str(raw)


def _int32(number: int) -> Outcome:
    if INT_MIN <= number <= INT_MAX:
        return number, NO_ERRORS
    return 0, (ErrorKind.MATH,)


# --- the tree ---------------------------------------------------------------------


Event = Mapping[str, object]


class Node(Protocol):
    def evaluate(self, event: Event) -> Outcome: ...


@dataclass(frozen=True)
class Literal:
    value: Value

    def evaluate(self, event: Event) -> Outcome:
        return self.value, NO_ERRORS


@dataclass(frozen=True)
class Attribute:
    name: str  # lower case: identifiers are case-insensitive and attribute names lower case

    def evaluate(self, event: Event) -> Outcome:
        value = from_event(event.get(self.name))
        if value is None:
            return False, (ErrorKind.MISSING_ATTRIBUTE,)
        return value, NO_ERRORS


@dataclass(frozen=True)
class Exists:
    name: str

    def evaluate(self, event: Event) -> Outcome:
        return from_event(event.get(self.name)) is not None, NO_ERRORS


@dataclass(frozen=True)
class UnaryOperator:
    operand: Type
    result: Type
    apply: Callable[[Value], Outcome]


UNARY: dict[str, UnaryOperator] = {
    "NOT": UnaryOperator(Type.BOOLEAN, Type.BOOLEAN, lambda flag: (not flag, NO_ERRORS)),
    "-": UnaryOperator(Type.INTEGER, Type.INTEGER, lambda number: _int32(-int(number))),
}


@dataclass(frozen=True)
class Unary:
    operator: UnaryOperator
    operand: Node

    def evaluate(self, event: Event) -> Outcome:
        value, errors = self.operand.evaluate(event)
        if errors:
            return self.operator.result.zero, errors
        value, cast_errors = cast(value, self.operator.operand)
        result, errors = self.operator.apply(value)
        return result, cast_errors + errors


def _divide(left: int, right: int) -> Outcome:
    if right == 0:
        return 0, (ErrorKind.MATH,)
    quotient = abs(left) // abs(right)  # truncated towards zero, exact for any size
    return _int32(quotient if (left < 0) == (right < 0) else -quotient)


def _modulo(left: int, right: int) -> Outcome:
    if right == 0:
        return 0, (ErrorKind.MATH,)
    remainder = abs(left) % abs(right)  # takes the dividend's sign
    return remainder if left >= 0 else -remainder, NO_ERRORS


@dataclass(frozen=True)
class BinaryOperator:
    operands: Type | None  # None: the left operand is cast to the right one's type (=, !=)
    result: Type
    apply: Callable[[Value, Value], Outcome]


def _integers(function: Callable[[int, int], Outcome]) -> Callable[[Value, Value], Outcome]:
    return lambda left, right: function(int(left), int(right))


def _compare(function: Callable[[int, int], bool]) -> BinaryOperator:
    return BinaryOperator(
        Type.INTEGER, Type.BOOLEAN, _integers(lambda a, b: (function(a, b), NO_ERRORS))
    )


BINARY: dict[str, BinaryOperator] = {
    "*": BinaryOperator(Type.INTEGER, Type.INTEGER, _integers(lambda a, b: _int32(a * b))),
    "/": BinaryOperator(Type.INTEGER, Type.INTEGER, _integers(_divide)),
    "%": BinaryOperator(Type.INTEGER, Type.INTEGER, _integers(_modulo)),
    "+": BinaryOperator(Type.INTEGER, Type.INTEGER, _integers(lambda a, b: _int32(a + b))),
    "-": BinaryOperator(Type.INTEGER, Type.INTEGER, _integers(lambda a, b: _int32(a - b))),
    "<": _compare(lambda a, b: a < b),
    "<=": _compare(lambda a, b: a <= b),
    ">": _compare(lambda a, b: a > b),
    ">=": _compare(lambda a, b: a >= b),
    "=": BinaryOperator(None, Type.BOOLEAN, lambda a, b: (a == b, NO_ERRORS)),
    "!=": BinaryOperator(None, Type.BOOLEAN, lambda a, b: (a != b, NO_ERRORS)),
    "<>": BinaryOperator(None, Type.BOOLEAN, lambda a, b: (a != b, NO_ERRORS)),
    "XOR": BinaryOperator(Type.BOOLEAN, Type.BOOLEAN, lambda a, b: (a != b, NO_ERRORS)),
}


@dataclass(frozen=True)
class Binary:
    operator: BinaryOperator
    left: Node
    right: Node

    def evaluate(self, event: Event) -> Outcome:
        left, errors = self.left.evaluate(event)
        if errors:
            return self.operator.result.zero, errors
        right, errors = self.right.evaluate(event)
        if errors:
            return self.operator.result.zero, errors
        # `=` is overloaded for every type: the right operand picks the overload (§3.7).
        target = self.operator.operands or type_of(right)
        left, left_errors = cast(left, target)
        right, right_errors = cast(right, target)
        result, errors = self.operator.apply(left, right)
        return result, left_errors + right_errors + errors


@dataclass(frozen=True)
class ShortCircuit:
    """AND and OR: the right operand is not evaluated once the left decides (§3.4.2)."""

    decisive: bool  # the left value that decides the result: false for AND, true for OR
    left: Node
    right: Node

    def evaluate(self, event: Event) -> Outcome:
        left, errors = self.left.evaluate(event)
        if errors:
            return False, errors
        left, cast_errors = cast(left, Type.BOOLEAN)
        if left is self.decisive:
            return left, cast_errors
        right, errors = self.right.evaluate(event)
        if errors:
            return False, cast_errors + errors
        right, right_errors = cast(right, Type.BOOLEAN)
        return right, cast_errors + right_errors


@dataclass(frozen=True)
class Like:
    operand: Node
    pattern: re.Pattern[str]
    negated: bool

    def evaluate(self, event: Event) -> Outcome:
        value, errors = self.operand.evaluate(event)
        if errors:
            return False, errors
        text, errors = cast(value, Type.STRING)
        return (self.pattern.fullmatch(str(text)) is not None) != self.negated, errors


_LIKE_TOKEN = re.compile(r"\\[%_]|[%_]|[^%_\\]+|\\")
_LIKE_WILDCARDS = {"%": ".*", "_": "."}
_LIKE_ESCAPED = {"\\%": "%", "\\_": "_"}


def like_pattern(pattern: str) -> re.Pattern[str]:
    """The regular expression of a LIKE pattern.

    `\\%` and `\\_` match a literal `%` and `_`; a backslash before anything else is a
    plain backslash, which the TCK's `'ab\\c' LIKE 'ab\\c'` relies on.
    """
    parts = (
        _LIKE_WILDCARDS.get(token) or re.escape(_LIKE_ESCAPED.get(token, token))
        for token in _LIKE_TOKEN.findall(pattern)
    )
    return re.compile("".join(parts), re.DOTALL)


@dataclass(frozen=True)
class In:
    operand: Node
    items: tuple[Node, ...]
    negated: bool

    def evaluate(self, event: Event) -> Outcome:
        value, errors = self.operand.evaluate(event)
        if errors:
            return False, errors
        target = type_of(value)  # the left operand picks the type of the set (§3.7)
        found = False
        cast_errors: Errors = NO_ERRORS
        for node in self.items:
            item, errors = node.evaluate(event)
            if errors:
                return False, cast_errors + errors
            item, errors = cast(item, target)
            cast_errors += errors
            found = found or item == value
        return found != self.negated, cast_errors


# --- functions --------------------------------------------------------------------


@dataclass(frozen=True)
class Function:
    parameters: tuple[Type, ...]
    variadic: Type | None  # the type of any further arguments; None: fixed arity
    result: Type
    apply: Callable[[Sequence[Value]], Outcome]

    def accepts(self, arity: int) -> bool:
        if self.variadic is None:
            return arity == len(self.parameters)
        return arity >= len(self.parameters)

    def parameter(self, index: int) -> Type:
        if index < len(self.parameters):
            return self.parameters[index]
        return self.variadic or Type.ANY


@dataclass(frozen=True)
class Call:
    function: Function
    arguments: tuple[Node, ...]

    def evaluate(self, event: Event) -> Outcome:
        values: list[Value] = []
        cast_errors: Errors = NO_ERRORS
        for index, node in enumerate(self.arguments):
            value, errors = node.evaluate(event)
            if errors:
                return self.function.result.zero, cast_errors + errors
            value, errors = cast(value, self.function.parameter(index))
            cast_errors += errors
            values.append(value)
        result, errors = self.function.apply(values)
        return result, cast_errors + errors


@dataclass(frozen=True)
class MissingFunction:
    """A call no built-in takes (unknown name or arity): `false`, as §3.5 says."""

    name: str
    arity: int

    def evaluate(self, event: Event) -> Outcome:
        return False, (ErrorKind.MISSING_FUNCTION,)


# Unicode's White_Space property; str.strip() would also strip the controls U+001C-U+001F,
# which §3.5.1 says TRIM keeps.
_WHITESPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000"
)


def _abs(number: int) -> Outcome:
    if number == INT_MIN:
        return INT_MAX, (ErrorKind.MATH,)  # the spec's pinned value
    return abs(number), NO_ERRORS


def _left(text: str, count: int) -> Outcome:
    if count < 0:
        return text, (ErrorKind.FUNCTION_EVALUATION,)
    return text[:count], NO_ERRORS


def _right(text: str, count: int) -> Outcome:
    if count < 0:
        return text, (ErrorKind.FUNCTION_EVALUATION,)
    return text[len(text) - min(count, len(text)) :], NO_ERRORS


def _substring(text: str, position: int, length: int | None = None) -> Outcome:
    if position > len(text) or position < -len(text) or (length is not None and length < 0):
        return "", (ErrorKind.FUNCTION_EVALUATION,)
    if position == 0:
        return "", NO_ERRORS
    start = position - 1 if position > 0 else len(text) + position
    end = len(text) if length is None else start + length
    return text[start:end], NO_ERRORS


def _can_cast(target: Type) -> Callable[[Sequence[Value]], Outcome]:
    return lambda values: (not cast(values[0], target, explicit=True)[1], NO_ERRORS)


_S, _I, _B, _A = Type.STRING, Type.INTEGER, Type.BOOLEAN, Type.ANY
FUNCTIONS: dict[str, tuple[Function, ...]] = {
    "ABS": (Function((_I,), None, _I, lambda v: _abs(int(v[0]))),),
    "LENGTH": (Function((_S,), None, _I, lambda v: (len(str(v[0])), NO_ERRORS)),),
    "CONCAT": (Function((), _S, _S, lambda v: ("".join(map(str, v)), NO_ERRORS)),),
    "CONCAT_WS": (Function((_S,), _S, _S, lambda v: (str(v[0]).join(map(str, v[1:])), NO_ERRORS)),),
    "LOWER": (Function((_S,), None, _S, lambda v: (str(v[0]).lower(), NO_ERRORS)),),
    "UPPER": (Function((_S,), None, _S, lambda v: (str(v[0]).upper(), NO_ERRORS)),),
    "TRIM": (Function((_S,), None, _S, lambda v: (str(v[0]).strip(_WHITESPACE), NO_ERRORS)),),
    "LEFT": (Function((_S, _I), None, _S, lambda v: _left(str(v[0]), int(v[1]))),),
    "RIGHT": (Function((_S, _I), None, _S, lambda v: _right(str(v[0]), int(v[1]))),),
    "SUBSTRING": (
        Function((_S, _I), None, _S, lambda v: _substring(str(v[0]), int(v[1]))),
        Function((_S, _I, _I), None, _S, lambda v: _substring(str(v[0]), int(v[1]), int(v[2]))),
    ),
    "INT": (Function((_A,), None, _I, lambda v: cast(v[0], _I, explicit=True)),),
    "BOOL": (Function((_A,), None, _B, lambda v: cast(v[0], _B, explicit=True)),),
    "STRING": (Function((_A,), None, _S, lambda v: cast(v[0], _S, explicit=True)),),
    # "Can x be cast to T" (as sdk-go's IS_INT/IS_BOOL); every value casts to a String.
    "IS_INT": (Function((_A,), None, _B, _can_cast(_I)),),
    "IS_BOOL": (Function((_A,), None, _B, _can_cast(_B)),),
    "IS_STRING": (Function((_A,), None, _B, _can_cast(_S)),),
}


def resolve(name: str, arguments: tuple[Node, ...]) -> Node:
    """The call of the built-in `name` that takes this many arguments, or a MissingFunction."""
    overloads = FUNCTIONS.get(name.upper(), ())
    function = next((f for f in overloads if f.accepts(len(arguments))), None)
    if function is None:
        return MissingFunction(name.upper(), len(arguments))
    return Call(function, arguments)


# --- parsing ----------------------------------------------------------------------

# Keywords are case-insensitive strings that lark checks only once NAME has matched, so
# `android` stays an identifier. LIKE and IN share a level (both are left-to-right suffix
# forms, so nothing changes): after `x NOT` the LALR parser need not yet choose.
_GRAMMAR = r"""
?start: expr
?expr: comparison
     | expr (AND | OR | XOR) comparison                 -> logical
?comparison: additive
     | comparison CMP_OP additive                       -> binary
?additive: multiplicative
     | additive (PLUS | MINUS) multiplicative           -> binary
?multiplicative: membership
     | multiplicative (STAR | SLASH | PERCENT) membership -> binary
?membership: unary
     | membership NOT? LIKE STRING                      -> like
     | membership NOT? IN "(" expr ("," expr)* ")"      -> in_
?unary: primary
     | NOT unary                                        -> unary
     | MINUS unary                                      -> unary
     | PLUS INT                                         -> integer
?primary: INT                                           -> integer
     | STRING                                           -> string
     | TRUE                                             -> true
     | FALSE                                            -> false
     | EXISTS NAME                                      -> exists
     | NAME                                             -> attribute
     | NAME "(" [expr ("," expr)*] ")"                  -> call
     | "(" expr ")"

AND: "AND"i
OR: "OR"i
XOR: "XOR"i
NOT: "NOT"i
LIKE: "LIKE"i
IN: "IN"i
EXISTS: "EXISTS"i
TRUE: "TRUE"i
FALSE: "FALSE"i
CMP_OP: "<=" | ">=" | "<>" | "!=" | "=" | "<" | ">"
PLUS: "+"
MINUS: "-"
STAR: "*"
SLASH: "/"
PERCENT: "%"
INT: /[0-9]+/
NAME: /[0-9]*[a-z_][a-z0-9_]*/i
STRING: /'(?:[^'\\]|\\[\s\S])*'|"(?:[^"\\]|\\[\s\S])*"/
%ignore /[ \t\r\n]+/
"""

_PARSER = Lark(_GRAMMAR, parser="lalr", maybe_placeholders=False)

_IDENTIFIER = re.compile(r"[a-z0-9]+")  # an attribute name (CloudEvents naming convention)
_FUNCTION_NAME = re.compile(r"[A-Z][A-Z_]*")
_STRING_ESCAPE = re.compile(r"\\([\s\S])")

Child = Tree[Token] | Token


def _string(token: Token) -> str:
    # Only the escaped delimiter is an escape (spec §2.2); any other backslash stays, so
    # that LIKE patterns keep their `\%` and `\_`.
    quote, body = token[0], token[1:-1]
    return _STRING_ESCAPE.sub(lambda m: m[1] if m[1] == quote else m[0], body)


def _identifier(token: Token) -> str:
    name = str(token).lower()
    if not _IDENTIFIER.fullmatch(name):
        raise CesqlParseError(
            f"{token!s} at column {token.column} is not an attribute name (a-z, 0-9)"
        )
    return name


@dataclass
class _Builder:
    """Turns lark's tree into nodes; one per compile, as it tracks one literal."""

    # The literal 2147483648 is valid only as the operand of a minus: -2147483648.
    unsigned_min: Literal | None = None

    def build(self, child: Child, depth: int = 0) -> Node:
        if depth > MAX_DEPTH:
            raise CesqlParseError(f"expression nests or chains over {MAX_DEPTH} operators deep")
        if isinstance(child, Token):  # unreachable: the grammar makes every operand a Tree
            raise CesqlParseError(f"unexpected {child!s} at column {child.column}")
        return _BUILDERS[str(child.data)](self, child.children, depth + 1)

    def nodes(self, children: Sequence[Child], depth: int) -> tuple[Node, ...]:
        return tuple(self.build(c, depth) for c in children if isinstance(c, Tree))

    def integer(self, children: list[Child], depth: int) -> Node:
        token = str(children[-1])
        if len(token.lstrip("0")) > len(str(INT_MAX)):  # before int(): it refuses huge texts
            raise CesqlParseError(f"{token} is not a 32-bit integer")
        number = int(token)
        if number > INT_MAX + 1 or (number == INT_MAX + 1 and self.unsigned_min is not None):
            raise CesqlParseError(f"{token} is not a 32-bit integer")
        literal = Literal(number)
        if number > INT_MAX:
            self.unsigned_min = literal
        return literal

    def unary(self, children: list[Child], depth: int) -> Node:
        operator, operand = str(children[0]).upper(), self.build(children[1], depth)
        if operator == "-" and operand is self.unsigned_min:
            self.unsigned_min = None
            return Literal(INT_MIN)
        return Unary(UNARY[operator], operand)

    def binary(self, children: list[Child], depth: int) -> Node:
        left, right = self.nodes(children, depth)
        return Binary(BINARY[str(children[1])], left, right)

    def logical(self, children: list[Child], depth: int) -> Node:
        left, right = self.nodes(children, depth)
        operator = str(children[1]).upper()
        if operator == "XOR":
            return Binary(BINARY["XOR"], left, right)
        return ShortCircuit(operator == "OR", left, right)

    def like(self, children: list[Child], depth: int) -> Node:
        negated = any(isinstance(c, Token) and c.type == "NOT" for c in children)
        pattern = children[-1]
        assert isinstance(pattern, Token)  # the grammar allows only a string literal here
        return Like(self.build(children[0], depth), like_pattern(_string(pattern)), negated)

    def in_(self, children: list[Child], depth: int) -> Node:
        negated = any(isinstance(c, Token) and c.type == "NOT" for c in children)
        operand, *items = self.nodes(children, depth)
        return In(operand, tuple(items), negated)

    def call(self, children: list[Child], depth: int) -> Node:
        name = str(children[0]).upper()
        if not _FUNCTION_NAME.fullmatch(name):
            raise CesqlParseError(f"{children[0]!s} is not a function name (letters and _)")
        return resolve(name, self.nodes(children[1:], depth))

    def attribute(self, children: list[Child], depth: int) -> Node:
        assert isinstance(children[0], Token)
        return Attribute(_identifier(children[0]))

    def exists(self, children: list[Child], depth: int) -> Node:
        assert isinstance(children[1], Token)
        return Exists(_identifier(children[1]))

    def string(self, children: list[Child], depth: int) -> Node:
        assert isinstance(children[0], Token)
        return Literal(_string(children[0]))

    def true(self, children: list[Child], depth: int) -> Node:
        return Literal(True)

    def false(self, children: list[Child], depth: int) -> Node:
        return Literal(False)


_BUILDERS: dict[str, Callable[[_Builder, list[Child], int], Node]] = {
    "integer": _Builder.integer,
    "unary": _Builder.unary,
    "binary": _Builder.binary,
    "logical": _Builder.logical,
    "like": _Builder.like,
    "in_": _Builder.in_,
    "call": _Builder.call,
    "attribute": _Builder.attribute,
    "exists": _Builder.exists,
    "string": _Builder.string,
    "true": _Builder.true,
    "false": _Builder.false,
}


def _describe(error: UnexpectedInput) -> str:
    if isinstance(error, UnexpectedEOF) or (
        isinstance(error, UnexpectedToken) and error.token.type == "$END"
    ):
        return "unexpected end of expression"
    if isinstance(error, UnexpectedToken):
        return f"unexpected {str(error.token)!r} at column {error.column}"
    if isinstance(error, UnexpectedCharacters):
        return f"unexpected character {error.char!r} at column {error.column}"
    return str(error)


@dataclass(frozen=True)
class Expression:
    """A compiled CESQL expression: reuse it, evaluation is pure."""

    text: str
    root: Node

    def evaluate(self, event: Mapping[str, object]) -> Result:
        """Evaluate against an event's attributes and extensions (name -> value)."""
        value, errors = self.root.evaluate(event)
        return Result(value, errors)

    def __str__(self) -> str:
        return self.text


@lru_cache(maxsize=CACHE_SIZE)  # the dispatcher compiles each Trigger's filter per event
def _compile(expression: str) -> Expression:
    try:
        tree = _PARSER.parse(expression)
    except UnexpectedInput as error:
        raise CesqlParseError(_describe(error)) from None
    builder = _Builder()
    root = builder.build(tree)
    if builder.unsigned_min is not None:
        raise CesqlParseError(f"{INT_MAX + 1} is not a 32-bit integer")
    return Expression(expression, root)


def compile(expression: str) -> Expression:
    """Parse a CESQL expression; `CesqlParseError` says why it is not one.

    Compiled expressions are cached by their text, so calling this per event is cheap.
    """
    return _compile(expression)

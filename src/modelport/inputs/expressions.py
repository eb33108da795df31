"""The expression language of adapters' ``derive`` steps, and the casts of ``cast`` steps.

Expressions are parsed with :mod:`ast` and compiled once into a tree of closures: no ``eval`` at
any time. See :mod:`modelport.inputs.adapters` for what the language allows and its limits.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable, Sequence
from typing import Any

Record = dict[str, Any]
_Eval = Callable[[Record], Any]

MAX_EXPRESSION_LENGTH = 500
MAX_EXPRESSION_DEPTH = 32
MAX_EXPONENT = 1000  # of a constant exponent
MAX_STRING_LENGTH = 100_000
MAX_INT_BITS = 4096


# -- values -------------------------------------------------------------------------------------


class Fail(Exception):
    """A value or expression cannot be computed for this record; the message says why."""


class Absent(Exception):
    """An expression reached a field that is missing or null."""


class Rejected(Exception):
    """An expression is not allowed; the message says what and where."""


# What computing an expression may raise for one record: our own failures, and Python's for
# e.g. sqrt(-1), exp(1000), or comparing deeply nested values sent in a record.
FAILURES = (Fail, ArithmeticError, ValueError, TypeError, RecursionError)

_NUMBER_TYPES = frozenset({int, float})


def _is_number(v: Any) -> bool:
    return type(v) in _NUMBER_TYPES or (isinstance(v, int | float) and not isinstance(v, bool))


def kind_of(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def reason_of(exc: Exception) -> str:
    if isinstance(exc, ZeroDivisionError):
        return "division by zero"
    if isinstance(exc, OverflowError):
        return "the result is too large"
    return str(exc) or type(exc).__name__


def _to_number(v: Any) -> float:
    if type(v) is float:
        x = v
    elif isinstance(v, bool):
        return 1.0 if v else 0.0
    elif isinstance(v, int | float):
        try:
            x = float(v)
        except OverflowError:
            raise Fail(f"{_show(v)} is too large") from None
    elif isinstance(v, str):
        try:
            x = float(v.strip())
        except ValueError:
            raise Fail(f"{_show(v)} is not a number") from None
    else:
        raise Fail(f"got {kind_of(v)}")
    if not math.isfinite(x):
        raise Fail(f"{_show(v)} is not a finite number")
    return x


def _to_integer(v: Any) -> int:
    if isinstance(v, int):
        return int(v)  # a bool becomes 0 or 1
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            pass
    x = _to_number(v)
    if not x.is_integer():
        raise Fail(f"{_show(v)} is not a whole number")
    return int(x)


def _to_string(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        try:
            return str(v)
        except ValueError:  # more digits than Python converts
            raise Fail("the number is too large") from None
    if isinstance(v, float):
        x = _to_number(v)
        return str(int(x)) if x.is_integer() and abs(x) < 2**53 else repr(x)
    raise Fail(f"got {kind_of(v)}")


_TRUE = frozenset({"true", "t", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "off", "0"})


def _to_boolean(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if _is_number(v) and v in (0, 1):
        return bool(v)
    if isinstance(v, str):
        word = v.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise Fail(f"{_show(v)} is not a boolean")


# Per cast: the conversion, and the type that needs none.
CASTS: dict[str, tuple[Callable[[Any], Any], type]] = {
    "number": (_to_number, float),
    "integer": (_to_integer, int),
    "string": (_to_string, str),
    "boolean": (_to_boolean, bool),
}


# -- operators and functions --------------------------------------------------------------------


def _numeric(symbol: str, op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        if _is_number(a) and _is_number(b):
            return op(a, b)
        raise Fail(f"{symbol!r} needs numbers, got {kind_of(a)} and {kind_of(b)}")

    return apply


def _add(a: Any, b: Any) -> Any:
    if _is_number(a) and _is_number(b):
        return a + b
    if isinstance(a, str) and isinstance(b, str):
        if len(a) + len(b) > MAX_STRING_LENGTH:
            raise Fail(f"the string would exceed {MAX_STRING_LENGTH} characters")
        return a + b
    raise Fail(f"'+' needs two numbers or two strings, got {kind_of(a)} and {kind_of(b)}")


def _mul(a: Any, b: Any) -> Any:
    if _is_number(a) and _is_number(b):
        if type(a) is int and type(b) is int and a.bit_length() + b.bit_length() > MAX_INT_BITS:
            raise Fail(f"the integer would exceed {MAX_INT_BITS} bits")
        return a * b
    text, times = (a, b) if isinstance(a, str) else (b, a)
    if isinstance(text, str) and isinstance(times, int) and not isinstance(times, bool):
        if len(text) * times > MAX_STRING_LENGTH:
            raise Fail(f"the string would exceed {MAX_STRING_LENGTH} characters")
        return text * times
    raise Fail(f"'*' needs numbers (or a string and an integer), got {kind_of(a)} and {kind_of(b)}")


def _pow(a: Any, b: Any) -> Any:
    if not (_is_number(a) and _is_number(b)):
        raise Fail(f"'**' needs numbers, got {kind_of(a)} and {kind_of(b)}")
    if isinstance(a, int) and isinstance(b, int) and b >= 0:
        if abs(a) > 1 and (b > MAX_INT_BITS or b * math.log2(abs(a)) > MAX_INT_BITS):
            raise Fail(f"the integer would exceed {MAX_INT_BITS} bits")
        return a**b
    return math.pow(a, b)  # floats: an error rather than a huge or complex result


def _ordering(symbol: str, op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(a: Any, b: Any) -> bool:
        if (_is_number(a) and _is_number(b)) or (isinstance(a, str) and isinstance(b, str)):
            return op(a, b)
        raise Fail(f"cannot compare {kind_of(a)} with {kind_of(b)} using {symbol!r}")

    return compare


def _number(name: str, v: Any) -> Any:
    if _is_number(v):
        return v
    raise Fail(f"{name}() needs a number, got {kind_of(v)}")


def _string(name: str, v: Any) -> str:
    if isinstance(v, str):
        return v
    raise Fail(f"{name}() needs a string, got {kind_of(v)}")


def _extreme(name: str, pick: Callable[[Sequence[Any]], Any]) -> Callable[..., Any]:
    def extreme(*args: Any) -> Any:
        if all(map(_is_number, args)) or all(isinstance(a, str) for a in args):
            return pick(args)
        kinds = ", ".join(sorted({kind_of(a) for a in args}))
        raise Fail(f"{name}() needs all numbers or all strings, got {kinds}")

    return extreme


def _round(x: Any, ndigits: Any = None) -> Any:
    x = _number("round", x)
    if ndigits is None:
        return round(x)
    if isinstance(ndigits, bool) or not isinstance(ndigits, int) or abs(ndigits) > 100:
        raise Fail("round() needs a whole number of digits between -100 and 100")
    return round(x, ndigits)


def _log(x: Any, base: Any = None) -> float:
    x = _number("log", x)
    return math.log(x) if base is None else math.log(x, _number("log", base))


def _len(v: Any) -> int:
    if isinstance(v, str | list | dict):
        return len(v)
    raise Fail(f"len() needs a string, array or object, got {kind_of(v)}")


def _truncated(v: Any) -> int:
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            pass
    return int(v) if isinstance(v, int) else int(_to_number(v))


def _converter(name: str, convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def call(v: Any) -> Any:
        try:
            return convert(v)
        except Fail as exc:
            raise Fail(f"{name}(): {exc}") from None

    return call


# name: (fewest arguments, most arguments or None, implementation); coalesce and if_ are lazy
FUNCTIONS: dict[str, tuple[int, int | None, Callable[..., Any] | None]] = {
    "abs": (1, 1, lambda x: abs(_number("abs", x))),
    "ceil": (1, 1, lambda x: math.ceil(_number("ceil", x))),
    "coalesce": (1, None, None),
    "exp": (1, 1, lambda x: math.exp(_number("exp", x))),
    "float": (1, 1, _converter("float", _to_number)),
    "floor": (1, 1, lambda x: math.floor(_number("floor", x))),
    "if_": (3, 3, None),
    "int": (1, 1, _converter("int", _truncated)),
    "len": (1, 1, _len),
    "log": (1, 2, _log),
    "lower": (1, 1, lambda s: _string("lower", s).lower()),
    "max": (2, None, _extreme("max", max)),
    "min": (2, None, _extreme("min", min)),
    "round": (1, 2, _round),
    "sqrt": (1, 1, lambda x: math.sqrt(_number("sqrt", x))),
    "str": (1, 1, _converter("str", _to_string)),
    "strip": (1, 1, lambda s: _string("strip", s).strip()),
    "upper": (1, 1, lambda s: _string("upper", s).upper()),
}

_CONSTANT_NAMES = {"true": True, "false": False, "null": None}

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: _add,
    ast.Sub: _numeric("-", operator.sub),
    ast.Mult: _mul,
    ast.Div: _numeric("/", operator.truediv),
    ast.FloorDiv: _numeric("//", operator.floordiv),
    ast.Mod: _numeric("%", operator.mod),
    ast.Pow: _pow,
}

_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: _ordering("<", operator.lt),
    ast.LtE: _ordering("<=", operator.le),
    ast.Gt: _ordering(">", operator.gt),
    ast.GtE: _ordering(">=", operator.ge),
}

_SYMBOLS: dict[type[ast.AST], str] = {
    ast.MatMult: "@",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.BitAnd: "&",
    ast.Invert: "~",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.In: "in",
    ast.NotIn: "not in",
}

_REFUSED: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access",
    ast.Subscript: "subscripts",
    ast.Slice: "slices",
    ast.Lambda: "lambda",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.JoinedStr: "f-strings",
    ast.FormattedValue: "f-strings",
    ast.NamedExpr: "assignment expressions (:=)",
    ast.Starred: "starred arguments",
    ast.List: "lists",
    ast.Tuple: "tuples",
    ast.Set: "sets",
    ast.Dict: "objects",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
}


# -- expressions --------------------------------------------------------------------------------


def compile_expression(text: str) -> tuple[Callable[[Record], Any], frozenset[str]]:
    """Compile an expression into a function of a record, and the fields it refers to.

    The function raises internal signals for an absent field or a failure; use it through a
    ``derive`` step, which turns them into "left as it was" and row problems.
    """
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise Rejected(f"{len(text)} characters exceed the limit of {MAX_EXPRESSION_LENGTH}")
    source = text.strip()
    if not source:
        raise Rejected("the expression is empty")
    shift = len(text) - len(text.lstrip())
    # Python warns (to stderr, on every parse) about these rather than rejecting them.
    if "\\" in source:
        raise Rejected("backslashes are not allowed")
    glued = _GLUED_NUMBER.search(_STRINGS.sub("''", source))
    if glued:
        raise Rejected(f"a number runs into a word: put a space after {glued.group(1)!r}")
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        where = _position(exc.lineno or 1, (exc.offset or 1) - 1, shift)
        raise Rejected(f"not a valid expression: {exc.msg} ({where})") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise Rejected(f"not a valid expression: {exc}") from None
    compiler = _Compiler(shift)
    fn, _ = compiler.compile(tree.body, 1)
    return fn, frozenset(compiler.fields)


_STRINGS = re.compile(r"'[^']*'|\"[^\"]*\"")
# A number directly followed by a keyword: Python reads e.g. `1if` and only warns.
_GLUED_NUMBER = re.compile(r"((?<![\w.])\d[\w.]*?|\.\d[\w.]*?)(?:and|or|if|else|in|is|not|for)")


def _position(line: int, offset: int, shift: int) -> str:
    if line == 1:
        return f"at column {offset + 1 + shift}"
    return f"at line {line}, column {offset + 1}"


def _constant(value: Any) -> _Eval:
    def constant(record: Record) -> Any:
        return value

    return constant


def _field(name: str) -> _Eval:
    def get(record: Record) -> Any:
        value = record.get(name)
        if value is None:
            raise Absent
        return value

    return get


class _Compiler:
    """Turns a checked AST into nested closures, folding the parts without fields."""

    def __init__(self, shift: int) -> None:
        self.shift = shift
        self.fields: set[str] = set()

    def reject(self, node: ast.AST, what: str, hint: str = "") -> Rejected:
        line, col = getattr(node, "lineno", 1), getattr(node, "col_offset", 0)
        return Rejected(f"{what} ({_position(line, col, self.shift)}){hint}")

    def compile(self, node: ast.expr, depth: int) -> tuple[_Eval, bool]:
        """The closure computing ``node``, and whether it is a constant."""
        if depth > MAX_EXPRESSION_DEPTH:
            raise self.reject(node, f"nested too deeply (at most {MAX_EXPRESSION_DEPTH} levels)")
        if isinstance(node, ast.Constant):
            value = node.value
            if value is not None and not isinstance(value, str | int | float):
                raise self.reject(node, f"{type(value).__name__} constants are not allowed")
            if isinstance(value, float) and not math.isfinite(value):
                raise self.reject(node, "the number is too large")
            return _constant(value), True
        if isinstance(node, ast.Name):
            if node.id in _CONSTANT_NAMES:
                return _constant(_CONSTANT_NAMES[node.id]), True
            self.fields.add(node.id)
            return _field(node.id), False
        if isinstance(node, ast.UnaryOp):
            return self.unary(node, depth)
        if isinstance(node, ast.BinOp):
            return self.binary(node, depth)
        if isinstance(node, ast.BoolOp):
            return self.boolean(node, depth)
        if isinstance(node, ast.Compare):
            return self.compare(node, depth)
        if isinstance(node, ast.IfExp):
            parts = [self.compile(n, depth + 1) for n in (node.test, node.body, node.orelse)]
            return self.fold(node, _choice(*(f for f, _ in parts)), parts)
        if isinstance(node, ast.Call):
            return self.call(node, depth)
        what = _REFUSED.get(type(node), type(node).__name__)
        raise self.reject(node, f"not allowed: {what}")

    def fold(
        self, node: ast.expr, fn: _Eval, parts: list[tuple[_Eval, bool]]
    ) -> tuple[_Eval, bool]:
        """Compute a node once if all its parts are constants; a failure rejects the node."""
        if not all(const for _, const in parts):
            return fn, False
        try:
            value = fn({})
        except Absent:  # e.g. coalesce(null): the field is never written
            return fn, False
        except FAILURES as exc:
            raise self.reject(node, f"{ast.unparse(node)} fails: {reason_of(exc)}") from None
        return _constant(value), True

    def unary(self, node: ast.UnaryOp, depth: int) -> tuple[_Eval, bool]:
        operand, const = self.compile(node.operand, depth + 1)
        if isinstance(node.op, ast.Not):

            def negation(r: Record) -> bool:
                return not operand(r)

            return self.fold(node, negation, [(operand, const)])
        if isinstance(node.op, ast.USub | ast.UAdd):
            sign = -1 if isinstance(node.op, ast.USub) else 1
            symbol = "-" if sign < 0 else "+"

            def signed(r: Record) -> Any:
                value = operand(r)
                if _is_number(value):
                    return -value if sign < 0 else +value
                raise Fail(f"unary {symbol!r} needs a number, got {kind_of(value)}")

            return self.fold(node, signed, [(operand, const)])
        raise self.reject(node, f"the operator {_SYMBOLS.get(type(node.op), '?')!r} is not allowed")

    def binary(self, node: ast.BinOp, depth: int) -> tuple[_Eval, bool]:
        if type(node.op) not in _BINARY:
            symbol = _SYMBOLS.get(type(node.op), type(node.op).__name__)
            raise self.reject(node, f"the operator {symbol!r} is not allowed")
        op = _BINARY[type(node.op)]
        left, lconst = self.compile(node.left, depth + 1)
        right, rconst = self.compile(node.right, depth + 1)
        if isinstance(node.op, ast.Pow) and rconst:
            exponent = right({})
            if _is_number(exponent) and abs(exponent) > MAX_EXPONENT:
                raise self.reject(node, f"the exponent {exponent} is above {MAX_EXPONENT}")
        binop = _binop(node.op, op, left, right({}) if rconst else _NOT_CONSTANT, right)
        return self.fold(node, binop, [(left, lconst), (right, rconst)])

    def boolean(self, node: ast.BoolOp, depth: int) -> tuple[_Eval, bool]:
        parts = [self.compile(n, depth + 1) for n in node.values]
        fns = [f for f, _ in parts]
        stop_when = not isinstance(node.op, ast.And)  # `or` stops at a true value

        def chain(r: Record) -> Any:
            value = None
            for fn in fns:
                value = fn(r)
                if bool(value) is stop_when:
                    return value
            return value

        return self.fold(node, chain, parts)

    def compare(self, node: ast.Compare, depth: int) -> tuple[_Eval, bool]:
        ops: list[Callable[[Any, Any], bool]] = []
        for cmp in node.ops:
            if type(cmp) not in _COMPARE:
                symbol = _SYMBOLS.get(type(cmp), type(cmp).__name__)
                raise self.reject(node, f"the comparison {symbol!r} is not allowed")
            ops.append(_COMPARE[type(cmp)])
        parts = [self.compile(n, depth + 1) for n in (node.left, *node.comparators)]
        fns = [f for f, _ in parts]
        if len(ops) == 1:
            op, left, right = ops[0], fns[0], fns[1]

            def compare_one(r: Record) -> bool:
                return op(left(r), right(r))

            return self.fold(node, compare_one, parts)

        steps = list(zip(ops, fns[1:], strict=True))

        def compare_chain(r: Record) -> bool:
            a = fns[0](r)
            for op, fn in steps:
                b = fn(r)
                if not op(a, b):
                    return False
                a = b
            return True

        return self.fold(node, compare_chain, parts)

    def call(self, node: ast.Call, depth: int) -> tuple[_Eval, bool]:
        if not isinstance(node.func, ast.Name):
            what = _REFUSED.get(type(node.func))
            raise self.reject(
                node.func, f"not allowed: {what}" if what else "only named functions can be called"
            )
        name = node.func.id
        if name not in FUNCTIONS:
            allowed = f"; the functions are {', '.join(sorted(FUNCTIONS))}"
            raise self.reject(node, f"unknown function {name!r}", allowed)
        if node.keywords:
            raise self.reject(node, f"{name}(): keyword arguments are not allowed")
        least, most, impl = FUNCTIONS[name]
        n = len(node.args)
        if n < least or (most is not None and n > most):
            count = f"{least}" if least == most else f"{least} to {most}" if most else f"{least}+"
            raise self.reject(node, f"{name}() takes {count} arguments, got {n}")
        parts = [self.compile(a, depth + 1) for a in node.args]
        fns = [f for f, _ in parts]
        if name == "coalesce":
            return self.fold(node, _coalesce(fns), parts)
        if name == "if_":
            return self.fold(node, _choice(*fns), parts)
        assert impl is not None
        return self.fold(node, _applied(impl, fns), parts)


# Unchecked operators for two numbers (int or float), where the result cannot grow unbounded.
_PLAIN: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_NOT_CONSTANT = object()


def _binop(
    kind: ast.operator, checked: Callable[[Any, Any], Any], left: _Eval, b: Any, right: _Eval
) -> _Eval:
    """A binary operation; numbers skip the checks where that is safe (the per-request path)."""
    numbers = _NUMBER_TYPES
    plain = _PLAIN.get(type(kind))
    if plain is None and isinstance(kind, ast.Mult) and type(b) is float:
        plain = operator.mul  # a float factor: nothing grows without bound
    if plain is None:

        def binop(r: Record) -> Any:
            return checked(left(r), right(r))

    elif b is not _NOT_CONSTANT:

        def binop(r: Record) -> Any:
            a = left(r)
            if type(a) in numbers and type(b) in numbers:
                return plain(a, b)
            return checked(a, b)

    else:

        def binop(r: Record) -> Any:
            a = left(r)
            c = right(r)
            if type(a) in numbers and type(c) in numbers:
                return plain(a, c)
            return checked(a, c)

    return binop


def _choice(test: _Eval, then: _Eval, otherwise: _Eval) -> _Eval:
    def choose(r: Record) -> Any:
        return then(r) if test(r) else otherwise(r)

    return choose


def _coalesce(fns: list[_Eval]) -> _Eval:
    def coalesce(r: Record) -> Any:
        for fn in fns:
            try:
                value = fn(r)
            except Absent:
                continue
            if value is not None:
                return value
        raise Absent

    return coalesce


def _applied(impl: Callable[..., Any], fns: list[_Eval]) -> _Eval:
    if len(fns) == 1:
        (arg,) = fns

        def call_one(r: Record) -> Any:
            return impl(arg(r))

        return call_one

    def call(r: Record) -> Any:
        return impl(*[fn(r) for fn in fns])

    return call

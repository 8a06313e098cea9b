"""The two compilers of the expression language: DuckDB SQL and vectorised Arrow compute.

Both take a *checked* tree from :func:`clickloop.features.expr.check` and give the
same answers (a hypothesis test runs random expressions through both): SQL null
logic, ``num()`` reading only plain decimal numbers, division by zero as null,
``if()`` with a null condition as null, ``LIKE`` with ``\\`` as the escape.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

from clickloop.features.expr import (
    NUMERIC_RE,
    Binary,
    Col,
    Func,
    InList,
    IsNull,
    Like,
    Lit,
    Node,
    Type,
    Unary,
)

# -- DuckDB SQL -----------------------------------------------------------------------------


def sql_string(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


_SQL_TYPES: Final = {"string": "VARCHAR", "number": "DOUBLE", "bool": "BOOLEAN",
                     "timestamp": "TIMESTAMPTZ", "null": "VARCHAR"}  # fmt: skip


def to_sql(node: Node, column: Callable[[str], str]) -> str:
    """DuckDB SQL for a checked expression; ``column(ref)`` spells a column reference.

    The connection must use ``SET TimeZone = 'UTC'`` (``hour`` and ``dow`` read UTC).
    """
    if isinstance(node, Lit):
        return _sql_lit(node)
    if isinstance(node, Col):
        return column(node.ref)
    if isinstance(node, Unary):
        inner = to_sql(node.arg, column)
        return f"(NOT {inner})" if node.op == "not" else f"(- {inner})"
    if isinstance(node, Binary):
        a, b = to_sql(node.left, column), to_sql(node.right, column)
        if node.op == "/":
            return f"(CASE WHEN {b} = 0 THEN NULL ELSE {a} / {b} END)"
        op = {"and": "AND", "or": "OR"}.get(node.op, node.op)
        return f"({a} {op} {b})"
    if isinstance(node, InList):
        vals = ", ".join(_sql_lit(v) for v in node.values)
        return f"({to_sql(node.arg, column)} {'NOT ' if node.negate else ''}IN ({vals}))"
    if isinstance(node, IsNull):
        return f"({to_sql(node.arg, column)} IS {'NOT ' if node.negate else ''}NULL)"
    if isinstance(node, Like):
        neg = "NOT " if node.negate else ""
        return f"({to_sql(node.arg, column)} {neg}LIKE {sql_string(node.pattern)} ESCAPE '\\')"
    if isinstance(node, Func):
        return _sql_func(node, [to_sql(a, column) for a in node.args])
    raise TypeError(node)


def _sql_lit(node: Lit) -> str:
    v = node.value
    if v is None:
        return f"CAST(NULL AS {_SQL_TYPES[node.type]})"
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, float):
        return f"CAST({v!r} AS DOUBLE)"
    if isinstance(v, datetime):
        return f"TIMESTAMPTZ {sql_string(v.isoformat())}"
    return sql_string(str(v))


def _sql_func(node: Func, a: list[str]) -> str:
    name = node.name
    if name == "num":
        if node.args[0].type == "bool":
            return f"(CASE WHEN {a[0]} THEN 1.0 WHEN NOT {a[0]} THEN 0.0 END)"
        cast = f"TRY_CAST({a[0]} AS DOUBLE)"
        return (
            f"(CASE WHEN regexp_full_match({a[0]}, {sql_string(NUMERIC_RE)}) "
            f"AND isfinite({cast}) THEN {cast} END)"
        )
    if name in ("lower", "upper", "abs", "contains", "starts_with", "ends_with", "coalesce"):
        return f"{name}({', '.join(a)})"
    if name == "length":
        return f"CAST(length({a[0]}) AS DOUBLE)"
    if name == "hour":
        return f"CAST(hour({a[0]}) AS DOUBLE)"
    if name == "dow":
        return f"CAST(isodow({a[0]}) AS DOUBLE)"
    if name == "if":
        return f"(CASE WHEN {a[0]} THEN {a[1]} WHEN NOT {a[0]} THEN {a[2]} END)"
    raise TypeError(name)


# -- Arrow ------------------------------------------------------------------------------------

_ARROW_TYPES: Final = {"string": pa.string(), "number": pa.float64(), "bool": pa.bool_(),
                       "timestamp": pa.timestamp("us", tz="UTC"), "null": pa.null()}  # fmt: skip
_CMP: Final = {"=": "equal", "!=": "not_equal", "<": "less", "<=": "less_equal",
               ">": "greater", ">=": "greater_equal"}  # fmt: skip


def arrow_type(t: Type) -> pa.DataType:
    return _ARROW_TYPES[t]


def evaluate(node: Node, column: Callable[[str], pa.Array], length: int) -> pa.Array:
    """Evaluate a checked expression over Arrow arrays (``column(ref)`` supplies each column)."""
    out = _eval(node, column)
    if isinstance(out, pa.Scalar):
        return pa.repeat(out, length)
    if isinstance(out, pa.ChunkedArray):
        return out.combine_chunks()
    return out


def _eval(node: Node, column: Callable[[str], pa.Array]) -> Any:
    if isinstance(node, Lit):
        return pa.scalar(node.value, type=_ARROW_TYPES[node.type])
    if isinstance(node, Col):
        return column(node.ref)
    if isinstance(node, Unary):
        arg = _eval(node.arg, column)
        return pc.invert(arg) if node.op == "not" else pc.negate(arg)
    if isinstance(node, Binary):
        a, b = _eval(node.left, column), _eval(node.right, column)
        if node.op == "and":
            return pc.and_kleene(a, b)
        if node.op == "or":
            return pc.or_kleene(a, b)
        if node.op in _CMP:
            return pc.call_function(_CMP[node.op], [a, b])
        if node.op == "/":
            zero = pc.equal(b, pa.scalar(0.0))
            return pc.if_else(zero, pa.scalar(None, pa.float64()), pc.divide(a, b))
        fn = {"+": "add", "-": "subtract", "*": "multiply"}[node.op]
        return pc.call_function(fn, [a, b])
    if isinstance(node, InList):
        arg = _eval(node.arg, column)
        vset = pa.array([v.value for v in node.values], _ARROW_TYPES[node.values[0].type])
        found = pc.is_in(arg, value_set=vset)
        if node.negate:
            found = pc.invert(found)
        return pc.if_else(pc.is_null(arg), pa.scalar(None, pa.bool_()), found)
    if isinstance(node, IsNull):
        arg = _eval(node.arg, column)
        return pc.is_valid(arg) if node.negate else pc.is_null(arg)
    if isinstance(node, Like):
        arg = _eval(node.arg, column)
        if node.arg.type == "null":
            return pa.scalar(None, pa.bool_())
        m = pc.match_like(arg, node.pattern)
        return pc.invert(m) if node.negate else m
    if isinstance(node, Func):
        return _arrow_func(node, [_eval(a, column) for a in node.args])
    raise TypeError(node)


def _arrow_func(node: Func, a: list[Any]) -> Any:
    name = node.name
    if name == "num":
        x = a[0]
        if node.args[0].type == "bool":
            return pc.if_else(x, 1.0, 0.0)
        ok = pc.match_substring_regex(x, NUMERIC_RE)
        safe = pc.if_else(ok, x, pa.scalar("0"))
        val = pc.cast(safe, pa.float64())
        good = pc.and_kleene(ok, pc.is_finite(val))
        return pc.if_else(good, val, pa.scalar(None, pa.float64()))
    if name == "lower":
        return pc.utf8_lower(a[0])
    if name == "upper":
        return pc.utf8_upper(a[0])
    if name == "length":
        return pc.cast(pc.utf8_length(a[0]), pa.float64())
    if name == "abs":
        return pc.abs(a[0])
    if name in ("contains", "starts_with", "ends_with"):
        pattern = a[1].as_py()
        fn = {"contains": pc.match_substring, "starts_with": pc.starts_with,
              "ends_with": pc.ends_with}[name]  # fmt: skip
        return fn(a[0], pattern=pattern)
    if name == "hour":
        return pc.cast(pc.hour(a[0]), pa.float64())
    if name == "dow":
        return pc.cast(pc.day_of_week(a[0], count_from_zero=False, week_start=1), pa.float64())
    if name == "if":
        return pc.if_else(a[0], a[1], a[2])
    return pc.coalesce(*a)

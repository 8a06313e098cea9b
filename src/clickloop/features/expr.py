"""The small expression language of feature definitions (``where`` filters and ``derive`` columns).

One parser and type checker here; two compilers with the same semantics in
:mod:`clickloop.features.translate`: ``to_sql`` for the batch engine (DuckDB)
and ``evaluate`` for the streaming engine (vectorised Arrow compute).

Grammar (SQL-like, keywords case-insensitive)::

    type = 'page_view' AND props.price > 10 AND url.category IN ('books', 'games')
    NOT (referrer IS NULL) OR lower(props.device) LIKE 'mob%'
    num(props.price) * 0.9          if(props.device = 'mobile', 1, 0)

* columns: canonical fields (``type``, ``user_id``, ``url``, ``ts``, …), ``props.NAME``
  (``props."odd-name"`` for other keys), ``url.FIELD`` (URL knowledge), derived names;
* literals: ``'text'`` (``''`` escapes a quote), numbers, ``true``, ``false``, ``null``;
* operators: ``= != <> < <= > >= + - * /``, ``AND OR NOT``, ``IN (…)``, ``NOT IN``,
  ``IS [NOT] NULL``, ``[NOT] LIKE 'pat%'`` (``\\`` escapes), ``BETWEEN a AND b``;
* functions: ``num lower upper length coalesce if contains starts_with ends_with
  abs hour dow`` (``dow``: ISO day of week, Monday = 1).

Types are ``string``, ``number`` (float64), ``bool`` and ``timestamp``. Property
values are strings; comparing one with a number, or doing arithmetic on it, reads
it as a number with :func:`num` — a value that is not a plain decimal number
(``12.5``, ``-3``, ``1e3``) reads as null, never as an error. SQL null logic
applies everywhere: a comparison with null is null, and a filter keeps only rows
where the predicate is true. Division by zero is null.

>>> node = check(parse("type = 'page_view' AND props.price > 10"), EVENT_COLUMNS)
>>> sorted(columns(node)), node.type
(['props.price', 'type'], 'bool')
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from clickloop.errors import ConfigError

Type = Literal["string", "number", "bool", "timestamp", "null"]

EVENT_COLUMNS: Final[dict[str, Type]] = {
    "event_id": "string",
    "ts": "timestamp",
    "received_at": "timestamp",
    "type": "string",
    "user_id": "string",
    "session_id": "string",
    "url": "string",
    "referrer": "string",
}
NUMERIC_RE: Final = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"


class ExpressionError(ConfigError):
    """An expression does not parse or does not type-check (says where and why)."""


# -- syntax tree ------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    type: Type = field(default="null", compare=False, kw_only=True)


@dataclass(frozen=True)
class Lit(Node):
    value: Any


@dataclass(frozen=True)
class Col(Node):
    ref: str


@dataclass(frozen=True)
class Unary(Node):
    op: Literal["not", "neg"]
    arg: Node


@dataclass(frozen=True)
class Binary(Node):
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class InList(Node):
    arg: Node
    values: tuple[Lit, ...]
    negate: bool = False


@dataclass(frozen=True)
class IsNull(Node):
    arg: Node
    negate: bool = False


@dataclass(frozen=True)
class Like(Node):
    arg: Node
    pattern: str
    negate: bool = False


@dataclass(frozen=True)
class Func(Node):
    name: str
    args: tuple[Node, ...]


def columns(node: Node) -> set[str]:
    """Every column reference in an expression."""
    if isinstance(node, Col):
        return {node.ref}
    out: set[str] = set()
    for child in _children(node):
        out |= columns(child)
    return out


def conjuncts(node: Node) -> list[Node]:
    """The top-level ``AND`` terms of a predicate (``a AND (b AND c)`` → ``[a, b, c]``)."""
    if isinstance(node, Binary) and node.op == "and":
        return conjuncts(node.left) + conjuncts(node.right)
    return [node]


def conjoin(nodes: list[Node]) -> Node | None:
    """``AND`` of typed predicates (None for none)."""
    if not nodes:
        return None
    out = nodes[0]
    for n in nodes[1:]:
        out = Binary("and", out, n, type="bool")
    return out


def _children(node: Node) -> tuple[Node, ...]:
    if isinstance(node, Unary):
        return (node.arg,)
    if isinstance(node, Binary):
        return (node.left, node.right)
    if isinstance(node, InList | IsNull | Like):
        return (node.arg,)
    if isinstance(node, Func):
        return node.args
    return ()


def canonical(node: Node) -> str:
    """A stable spelling of an expression (used in definition versions)."""
    if isinstance(node, Lit):
        return repr(node.value)
    if isinstance(node, Col):
        return node.ref
    if isinstance(node, Unary):
        return f"{node.op}({canonical(node.arg)})"
    if isinstance(node, Binary):
        return f"({canonical(node.left)} {node.op} {canonical(node.right)})"
    if isinstance(node, InList):
        vals = ",".join(repr(v.value) for v in node.values)
        return f"{'not_in' if node.negate else 'in'}({canonical(node.arg)},[{vals}])"
    if isinstance(node, IsNull):
        return f"{'not_null' if node.negate else 'is_null'}({canonical(node.arg)})"
    if isinstance(node, Like):
        return f"{'not_like' if node.negate else 'like'}({canonical(node.arg)},{node.pattern!r})"
    if isinstance(node, Func):
        return f"{node.name}({','.join(canonical(a) for a in node.args)})"
    raise TypeError(node)


# -- parser -----------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<num>(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)
    | (?P<str>'(?:[^']|'')*')
    | (?P<qid>"(?:[^"]|"")+")
    | (?P<id>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op><=|>=|<>|!=|==|[=<>+\-*/(),.])
    )""",
    re.X,
)
_KEYWORDS = {"and", "or", "not", "in", "is", "null", "like", "between", "true", "false"}


@dataclass
class _Tok:
    kind: str
    text: str
    pos: int


def _tokenize(src: str) -> list[_Tok]:
    out: list[_Tok] = []
    i = 0
    while i < len(src):
        if src[i:].strip() == "":
            break
        m = _TOKEN.match(src, i)
        if not m or m.end() == i:
            j = i + len(src[i:]) - len(src[i:].lstrip())
            raise _error(src, j, f"unexpected character {src[j]!r}")
        kind = m.lastgroup or "op"
        text = m.group(kind)
        start = m.start(kind)
        if kind == "id" and text.lower() in _KEYWORDS:
            kind, text = "kw", text.lower()
        out.append(_Tok(kind, text, start))
        i = m.end()
    out.append(_Tok("end", "", len(src)))
    return out


def _error(src: str, pos: int, message: str) -> ExpressionError:
    caret = f"\n    {src}\n    {' ' * pos}^"
    return ExpressionError(f"{message} at position {pos}{caret}")


class _Parser:
    def __init__(self, src: str) -> None:
        self.src = src
        self.toks = _tokenize(src)
        self.i = 0

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def accept(self, kind: str, text: str | None = None) -> bool:
        t = self.tok
        if t.kind == kind and (text is None or t.text == text):
            self.i += 1
            return True
        return False

    def expect(self, kind: str, text: str | None = None, what: str = "") -> _Tok:
        t = self.tok
        if t.kind != kind or (text is not None and t.text != text):
            found = "the end" if t.kind == "end" else repr(t.text)
            raise _error(self.src, t.pos, f"expected {what or text or kind}, found {found}")
        return self.take()

    def parse(self) -> Node:
        if self.tok.kind == "end":
            raise _error(self.src, 0, "empty expression")
        node = self.or_()
        if self.tok.kind != "end":
            raise _error(self.src, self.tok.pos, f"unexpected {self.tok.text!r}")
        return node

    def or_(self) -> Node:
        node = self.and_()
        while self.accept("kw", "or"):
            node = Binary("or", node, self.and_())
        return node

    def and_(self) -> Node:
        node = self.not_()
        while self.accept("kw", "and"):
            node = Binary("and", node, self.not_())
        return node

    def not_(self) -> Node:
        if self.accept("kw", "not"):
            return Unary("not", self.not_())
        return self.comparison()

    def comparison(self) -> Node:
        left = self.additive()
        t = self.tok
        if t.kind == "op" and t.text in ("=", "==", "!=", "<>", "<", "<=", ">", ">="):
            self.take()
            op = {"==": "=", "<>": "!="}.get(t.text, t.text)
            return Binary(op, left, self.additive())
        if self.accept("kw", "is"):
            negate = self.accept("kw", "not")
            self.expect("kw", "null", "NULL")
            return IsNull(left, negate)
        negate = self.accept("kw", "not")
        if self.accept("kw", "in"):
            return InList(left, self.literal_list(), negate)
        if self.accept("kw", "like"):
            pat = self.expect("str", what="a quoted pattern after LIKE")
            return Like(left, pat.text[1:-1].replace("''", "'"), negate)
        if self.accept("kw", "between"):
            lo = self.additive()
            self.expect("kw", "and", "AND")
            hi = self.additive()
            node: Node = Binary("and", Binary(">=", left, lo), Binary("<=", left, hi))
            return Unary("not", node) if negate else node
        if negate:
            raise _error(self.src, self.tok.pos, "expected IN, LIKE or BETWEEN after NOT")
        return left

    def literal_list(self) -> tuple[Lit, ...]:
        self.expect("op", "(")
        values = [self.literal()]
        while self.accept("op", ","):
            values.append(self.literal())
        self.expect("op", ")")
        return tuple(values)

    def literal(self) -> Lit:
        t = self.tok
        neg = False
        if t.kind == "op" and t.text == "-":
            self.take()
            neg, t = True, self.tok
        node = self.primary()
        if not isinstance(node, Lit) or node.value is None:
            raise _error(self.src, t.pos, "IN (…) takes literal values (no null, no columns)")
        if neg:
            if not isinstance(node.value, float):
                raise _error(self.src, t.pos, "only numbers can be negated")
            return Lit(-node.value)
        return node

    def additive(self) -> Node:
        node = self.multiplicative()
        while self.tok.kind == "op" and self.tok.text in ("+", "-"):
            op = self.take().text
            node = Binary(op, node, self.multiplicative())
        return node

    def multiplicative(self) -> Node:
        node = self.unary()
        while self.tok.kind == "op" and self.tok.text in ("*", "/"):
            op = self.take().text
            node = Binary(op, node, self.unary())
        return node

    def unary(self) -> Node:
        if self.accept("op", "-"):
            return Unary("neg", self.unary())
        if self.accept("op", "+"):
            return self.unary()
        return self.primary()

    def primary(self) -> Node:
        t = self.take()
        if t.kind == "num":
            return Lit(float(t.text))
        if t.kind == "str":
            return Lit(t.text[1:-1].replace("''", "'"))
        if t.kind == "kw" and t.text in ("true", "false"):
            return Lit(t.text == "true")
        if t.kind == "kw" and t.text == "null":
            return Lit(None)
        if t.kind == "op" and t.text == "(":
            node = self.or_()
            self.expect("op", ")", "')'")
            return node
        if t.kind == "id":
            if self.accept("op", "("):
                args: list[Node] = []
                if not self.accept("op", ")"):
                    args.append(self.or_())
                    while self.accept("op", ","):
                        args.append(self.or_())
                    self.expect("op", ")", "')'")
                return Func(t.text.lower(), tuple(args))
            if self.accept("op", "."):
                sub = self.take()
                if sub.kind == "qid":
                    name = sub.text[1:-1].replace('""', '"')
                elif sub.kind in ("id", "kw"):
                    name = sub.text
                else:
                    raise _error(self.src, sub.pos, f"expected a name after '{t.text}.'")
                return Col(f"{t.text}.{name}")
            return Col(t.text)
        found = "the end" if t.kind == "end" else repr(t.text)
        raise _error(self.src, t.pos, f"expected a value, column or '(', found {found}")


def parse(src: str) -> Node:
    """Parse an expression (syntax only; :func:`check` resolves columns and types).

    >>> parse("type = 'click'")
    Binary(op='=', left=Col(ref='type'), right=Lit(value='click'))
    """
    if not isinstance(src, str):
        raise ExpressionError(f"an expression must be text, got {type(src).__name__}")
    return _Parser(src).parse()


# -- type checking ------------------------------------------------------------------------

_FUNCS: Final[dict[str, tuple[int, int]]] = {  # name → (min args, max args)
    "num": (1, 1), "lower": (1, 1), "upper": (1, 1), "length": (1, 1), "coalesce": (2, 8),
    "if": (3, 3), "contains": (2, 2), "starts_with": (2, 2), "ends_with": (2, 2),
    "abs": (1, 1), "hour": (1, 1), "dow": (1, 1),
}  # fmt: skip


def column_type(ref: str, env: Mapping[str, Type]) -> Type:
    """The type of a column reference, or an error naming the closest valid column."""
    if ref in env:
        return env[ref]
    if ref.startswith("props.") and len(ref) > 6:
        return "string"
    known = sorted(env)
    close = difflib.get_close_matches(ref, [*known, "props.NAME"], n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    shown = ", ".join(known[:30]) + (", …" if len(known) > 30 else "")
    raise ExpressionError(f"unknown column {ref!r}; {hint}(known: {shown}, props.NAME)")


def check(node: Node, env: Mapping[str, Type], *, src: str = "") -> Node:
    """Resolve columns and types; insert the implicit ``num()`` casts. Returns a typed tree."""
    try:
        return _check(node, env)
    except ExpressionError as exc:
        if src:
            raise ExpressionError(f"{exc.message} in {src!r}", hint=exc.hint) from None
        raise


def _num(node: Node) -> Node:
    if node.type == "number":
        return node
    if node.type in ("string", "bool"):
        return Func("num", (node,), type="number")
    if node.type == "null":
        return Lit(None, type="number")
    raise ExpressionError(f"{canonical(node)} is a {node.type}, not a number")


def _unify(a: Node, b: Node, what: str) -> tuple[Node, Node]:
    """Make two operands comparable (string vs number → number; literal vs timestamp)."""
    ta, tb = a.type, b.type
    if ta == tb or "null" in (ta, tb):
        return a, b
    if {ta, tb} == {"string", "number"}:
        return _num(a), _num(b)
    if ta == "timestamp" and isinstance(b, Lit) and tb == "string":
        return a, Lit(_ts_literal(b.value), type="timestamp")
    if tb == "timestamp" and isinstance(a, Lit) and ta == "string":
        return Lit(_ts_literal(a.value), type="timestamp"), b
    raise ExpressionError(f"cannot {what} a {ta} with a {tb}: {canonical(a)}, {canonical(b)}")


def _ts_literal(text: str) -> datetime:
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ExpressionError(f"{text!r} is not an ISO-8601 time") from None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _bool(node: Node, what: str) -> Node:
    if node.type in ("bool", "null"):
        return node
    raise ExpressionError(f"{what} needs a true/false value, got a {node.type}: {canonical(node)}")


def _check(node: Node, env: Mapping[str, Type]) -> Node:
    if isinstance(node, Lit):
        v = node.value
        t: Type = (
            "null" if v is None
            else "bool" if isinstance(v, bool)
            else "number" if isinstance(v, float)
            else "timestamp" if isinstance(v, datetime)
            else "string"
        )  # fmt: skip
        return Lit(v, type=t)
    if isinstance(node, Col):
        return Col(node.ref, type=column_type(node.ref, env))
    if isinstance(node, Unary):
        arg = _check(node.arg, env)
        if node.op == "not":
            return Unary("not", _bool(arg, "NOT"), type="bool")
        return Unary("neg", _num(arg), type="number")
    if isinstance(node, Binary):
        left, right = _check(node.left, env), _check(node.right, env)
        if node.op in ("and", "or"):
            return Binary(node.op, _bool(left, node.op.upper()), _bool(right, node.op.upper()),
                          type="bool")  # fmt: skip
        if node.op in ("+", "-", "*", "/"):
            return Binary(node.op, _num(left), _num(right), type="number")
        left, right = _unify(left, right, "compare")
        if "bool" in (left.type, right.type) and node.op not in ("=", "!="):
            raise ExpressionError(f"true/false values only compare with = and !=: {node.op}")
        return Binary(node.op, left, right, type="bool")
    if isinstance(node, InList):
        arg = _check(node.arg, env)
        values = tuple(_check(v, env) for v in node.values)
        kinds = {v.type for v in values}
        if len(kinds) != 1:
            raise ExpressionError("IN (…) values must all be text, or all numbers")
        kind = kinds.pop()
        if arg.type == "string" and kind == "number":
            arg = _num(arg)
        elif arg.type not in (kind, "null"):
            raise ExpressionError(f"cannot look a {arg.type} up in a list of {kind} values")
        return InList(arg, values, node.negate, type="bool")  # type: ignore[arg-type]
    if isinstance(node, IsNull):
        return IsNull(_check(node.arg, env), node.negate, type="bool")
    if isinstance(node, Like):
        arg = _check(node.arg, env)
        if arg.type not in ("string", "null"):
            raise ExpressionError(f"LIKE needs text, got a {arg.type}: {canonical(arg)}")
        return Like(arg, node.pattern, node.negate, type="bool")
    if isinstance(node, Func):
        return _check_func(node, env)
    raise TypeError(node)


def _check_func(node: Func, env: Mapping[str, Type]) -> Node:
    if node.name not in _FUNCS:
        close = difflib.get_close_matches(node.name, list(_FUNCS), n=1)
        hint = f"; did you mean {close[0]}()?" if close else ""
        raise ExpressionError(
            f"unknown function {node.name}(){hint} (known: {', '.join(sorted(_FUNCS))})"
        )
    lo, hi = _FUNCS[node.name]
    if not lo <= len(node.args) <= hi:
        want = str(lo) if lo == hi else f"{lo} to {hi}"
        raise ExpressionError(f"{node.name}() takes {want} arguments, got {len(node.args)}")
    args = tuple(_check(a, env) for a in node.args)
    name = node.name
    if name == "num":
        return _num(args[0]) if args[0].type != "number" else args[0]
    if name in ("lower", "upper", "length"):
        if args[0].type not in ("string", "null"):
            raise ExpressionError(f"{name}() needs text, got a {args[0].type}")
        return Func(name, args, type="number" if name == "length" else "string")
    if name in ("contains", "starts_with", "ends_with"):
        if args[0].type not in ("string", "null") or not (
            isinstance(args[1], Lit) and args[1].type == "string"
        ):
            raise ExpressionError(f"{name}(text, 'literal') needs text and a quoted literal")
        return Func(name, args, type="bool")
    if name == "abs":
        return Func(name, (_num(args[0]),), type="number")
    if name in ("hour", "dow"):
        if args[0].type != "timestamp":
            raise ExpressionError(f"{name}() needs a timestamp (ts or received_at)")
        return Func(name, args, type="number")
    if name == "if":
        cond = _bool(args[0], "if()")
        a, b = _unify(args[1], args[2], "mix")
        return Func(name, (cond, a, b), type=a.type if a.type != "null" else b.type)
    # coalesce
    typed = [a for a in args if a.type != "null"]
    kinds = {a.type for a in typed}
    if len(kinds) > 1:
        if kinds == {"string", "number"}:
            args = tuple(_num(a) for a in args)
            kinds = {"number"}
        else:
            raise ExpressionError(f"coalesce() arguments mix types: {', '.join(sorted(kinds))}")
    out: Type = kinds.pop() if kinds else "null"
    args = tuple(Lit(None, type=out) if a.type == "null" else a for a in args)
    return Func(name, args, type=out)

"""Templates: declared rules and learned templates compiled into one matchable form.

A template belongs to a host and describes a family of URLs. Its path is written in
WHATWG URL Pattern syntax (``/items/:category/:item_id``); it may name query
parameters whose values are fields too. Templates whose path is a sequence of whole
segments (a literal or a ``:name``) — every learned template and most declared rules —
are matched by the fast segment matcher; anything richer (regular-expression groups,
modifiers, wildcards, a ``search`` pattern) is matched by the ``urlpattern`` package.

Matching order: declared rules first, in the order they are written; then learned
templates, most specific first (a literal beats a variable at the first position
where two templates differ), like a web router.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from clickloop.errors import ConfigError
from clickloop.urls.parse import decode_component, decode_segment, normalize_path

Source = Literal["declared", "learned"]
FieldType = Literal["str", "int", "category"]

_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SPECIAL: Final = frozenset(":*(){}?+\\")
_VARIABLE: Final = re.compile(r":([A-Za-z_][A-Za-z0-9_]*)")
WEB_SCHEMES: Final = frozenset({"http", "https"})


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """How one field's raw value becomes a column value."""

    name: str
    kind: str = "text"
    type: FieldType = "str"
    dictionary: str | None = None


@dataclass(frozen=True, slots=True)
class QueryField:
    param: str  # decoded parameter name as it appears in URLs
    field: str  # output field name


@dataclass(frozen=True)
class Template:
    """One compiled template (declared or learned)."""

    name: str
    source: Source
    pattern: str  # path pattern (URL Pattern syntax) for learned; full pattern for declared
    host: str | None  # exact normalised host, or None when ``host_test`` decides
    slots: tuple[str | None, ...] | None  # literal (canonical) or None=variable; None=complex
    slot_fields: tuple[str | None, ...] = ()
    query: tuple[QueryField, ...] = ()
    fields: dict[str, FieldSpec] = field(default_factory=dict)
    host_test: Callable[[str], bool] | None = None
    scheme_test: Callable[[str], bool] | None = None
    urlpattern: Any = None  # urlpattern.URLPattern for complex templates
    order: int = 0

    @property
    def simple(self) -> bool:
        return self.slots is not None

    @property
    def shape(self) -> str:
        """The path shape with variable names erased (``/items/:/:``), for identity."""
        if self.slots is None:
            return self.pattern
        return shape_of(self.slots)

    def output_fields(self) -> list[str]:
        """Every field this template fills, in pattern order, then query fields."""
        if self.slots is not None:
            names = [n for n in self.slot_fields if n]
        else:
            names = list(dict.fromkeys(_VARIABLE.findall(self.pattern)))
        return names + [q.field for q in self.query if q.field not in names]

    def matches_host(self, host: str) -> bool:
        if self.host is not None:
            return host == self.host
        return self.host_test is not None and self.host_test(host)

    def match_path(self, segments: Sequence[str]) -> bool:
        """Whether a simple template's slots match these canonical segments."""
        slots = self.slots
        if slots is None or len(slots) != len(segments):
            return False
        return all(s is None or s == seg for s, seg in zip(slots, segments, strict=True))

    def values(
        self, segments: Sequence[str], param: Callable[[str], str | None]
    ) -> dict[str, str | None]:
        """Raw (decoded) values of a simple template's fields for matching segments."""
        out: dict[str, str | None] = {}
        for name, seg in zip(self.slot_fields, segments, strict=True):
            if name is not None:
                out[name] = decode_segment(seg)
        for q in self.query:
            out[q.field] = param(q.param)
        return out


def shape_of(slots: Sequence[str | None]) -> str:
    return "/" + "/".join(":" if s is None else s for s in slots)


# -- path patterns -----------------------------------------------------------------------


def parse_path_pattern(pattern: str) -> tuple[tuple[str | None, ...], tuple[str | None, ...]]:
    """``/items/:cat/:id`` → slots ``("items", None, None)`` and names ``(None, "cat", "id")``.

    Raises ``ValueError`` when the pattern is not a sequence of whole segments (then it
    is matched by the ``urlpattern`` package instead).
    """
    if not pattern.startswith("/"):
        raise ValueError("a path pattern starts with '/'")
    if pattern == "/":
        return (), ()
    slots: list[str | None] = []
    names: list[str | None] = []
    for raw in pattern[1:].split("/"):
        if raw.startswith(":") and _NAME.match(raw[1:]):
            slots.append(None)
            names.append(raw[1:])
            continue
        text = _unescape(raw)
        if not text:
            raise ValueError("empty segment")
        slots.append(normalize_path("/" + text)[1:] or text)
        names.append(None)
    return tuple(slots), tuple(names)


def _unescape(segment: str) -> str:
    out = []
    it = iter(segment)
    for ch in it:
        if ch == "\\":
            nxt = next(it, None)
            if nxt is None:
                raise ValueError("dangling backslash")
            out.append(nxt)
        elif ch in _SPECIAL:
            raise ValueError(f"special character {ch!r}")
        else:
            out.append(ch)
    return "".join(out)


def escape_literal(segment: str) -> str:
    """A canonical segment written as a URL Pattern literal (special characters escaped)."""
    return "".join("\\" + c if c in _SPECIAL else c for c in segment)


def build_path_pattern(slots: Sequence[str | None], names: Sequence[str | None]) -> str:
    if not slots:
        return "/"
    return "/" + "/".join(
        f":{n}" if s is None else escape_literal(s) for s, n in zip(slots, names, strict=True)
    )


def specificity(slots: Sequence[str | None]) -> tuple[int, ...]:
    """Sort key: literal (0) before variable (1) at the first differing position."""
    return tuple(0 if s is not None else 1 for s in slots)


# -- declared rules ------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _urlpattern() -> Any:
    from urlpattern import URLPattern  # a core dependency; imported on first use (it is a C module)

    return URLPattern


def compile_rule(
    index: int,
    pattern: str,
    *,
    name: str | None,
    fields: dict[str, FieldSpec],
    query: Sequence[str],
    where: str,
) -> Template:
    """Compile one declared rule (``urls.rules[index]``) or raise :class:`ConfigError`."""
    url_pattern = _urlpattern()
    try:
        up = url_pattern(pattern)
    except Exception as exc:  # the package raises TypeError/ValueError with its own text
        raise ConfigError(
            f"{where}: urls.rules[{index}].pattern {pattern!r} is not a valid URL Pattern: {exc}",
            hint="write e.g. https://shop.example.com/items/:category/:item_id",
        ) from None
    if up.hostname in ("", "*"):
        raise ConfigError(
            f"{where}: urls.rules[{index}].pattern {pattern!r} names no host",
            hint="rules are per host: write the full URL, e.g. https://shop.example.com/…",
        )
    comps = {
        "protocol": up.protocol,
        "hostname": up.hostname,
        "port": up.port,
        "pathname": up.pathname,
        "search": up.search,
        "hash": up.hash,
    }
    proto = up.protocol
    if proto in WEB_SCHEMES:  # a page is the same page on http and https
        comps["protocol"] = "http{s}?"
    path_vars: list[str] = []
    slots: tuple[str | None, ...] | None
    try:
        slots, slot_names = parse_path_pattern(up.pathname)
        path_vars = [n for n in slot_names if n]
    except ValueError:
        slots, slot_names = None, ()
    simple_host = not any(c in _SPECIAL for c in up.hostname)
    if up.search not in ("*", "") or up.port not in ("", "*") or up.hash not in ("*", ""):
        slots, slot_names = None, ()
    for q in query:
        if q in path_vars:
            raise ConfigError(
                f"{where}: urls.rules[{index}]: {q!r} is both a path variable and a query field"
            )
    scheme_test: Callable[[str], bool] | None = None
    if proto != "*":
        scheme_test = _component_test(url_pattern, "protocol", comps["protocol"])
    host = up.hostname.lower().rstrip(".") if simple_host else None
    host_test = None if simple_host else _component_test(url_pattern, "hostname", up.hostname)
    complex_up = None if slots is not None else url_pattern(comps)
    if slots is None:
        path_vars = list(
            dict.fromkeys(_VARIABLE.findall(f"{up.hostname} {up.pathname} {up.search}"))
        )
    unknown = sorted(set(fields) - set(path_vars) - set(query))
    if unknown:
        raise ConfigError(
            f"{where}: urls.rules[{index}].fields: {unknown} are neither variables of "
            f"{pattern!r} nor listed under query",
            hint="field names must match a :variable of the pattern or a query parameter",
        )
    declared = dict(fields)
    for f in [*path_vars, *query]:
        declared.setdefault(f, FieldSpec(f))
    return Template(
        name=name or _rule_name(up.pathname, index),
        source="declared",
        pattern=pattern,
        host=host,
        slots=slots,
        slot_fields=slot_names,
        query=tuple(QueryField(q, q) for q in query),
        fields=declared,
        host_test=host_test,
        scheme_test=scheme_test,
        urlpattern=complex_up,
        order=index,
    )


def _component_test(url_pattern: Any, component: str, pattern: str) -> Callable[[str], bool]:
    compiled = url_pattern({component: pattern})

    @functools.lru_cache(maxsize=4096)
    def test(value: str) -> bool:
        return bool(compiled.test({component: value}))

    return test


def _rule_name(pathname: str, index: int) -> str:
    if pathname == "/":
        return "home"
    literals = [s for s in pathname.split("/") if s and _NAME.match(s)]
    return "_".join(s.lower() for s in literals[:3]) or f"rule_{index}"


def exec_complex(t: Template, url: str) -> dict[str, str | None] | None:
    """Run a complex template's URLPattern on a normalised URL; field values or None."""
    res = t.urlpattern.exec(url)
    if not res:
        return None
    out: dict[str, str | None] = {}
    for comp in ("hostname", "pathname", "search"):
        for key, value in (res.get(comp, {}).get("groups") or {}).items():
            if key.isdigit():
                continue  # anonymous wildcard groups
            if value is None:
                out[key] = None
            elif comp == "search":
                out[key] = decode_component(value)
            elif comp == "pathname":
                out[key] = decode_segment(value)
            else:
                out[key] = value
    return out

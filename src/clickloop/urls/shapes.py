"""What a value looks like, what kind of field a set of values is, and what to call it.

Shapes describe one value; kinds describe a field (all the values seen in one
place of one template):

=========  ===========================================================
kind       meaning
=========  ===========================================================
category   a small closed set of codes or names (``1`` → clothes, ``sport``)
id         a high-cardinality identifier (``1234567``, ``dQw4w9WgXcQ``, a UUID)
slug       words naming one thing (``blue-cotton-shirt``, ``acme-goods``)
page       a pagination number (after a literal ``page``, or ``?page=``)
search     free text typed by a user (``?q=red+shirt``)
file       a file name (``index.html``, ``logo.gif``)
text       anything else
=========  ===========================================================

>>> shape("1234567"), shape("blue-cotton-shirt"), shape("logo.gif"), shape("clothes")
('id', 'slug', 'file', 'word')
>>> infer_kind({"1": 90, "2": 70, "3": 40}, max_category=64)
'category'
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Final, Literal

Kind = Literal["category", "id", "slug", "page", "search", "file", "text"]
KINDS: Final[tuple[str, ...]] = ("category", "id", "slug", "page", "search", "file", "text")
Shape = Literal["empty", "num", "id", "file", "slug", "word", "text"]

_NUM: Final = re.compile(r"^[0-9]+$")
_UUID: Final = re.compile(r"^[0-9a-fA-F]{8}-?(?:[0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")
_HEX: Final = re.compile(r"^(?=.*[0-9])[0-9a-fA-F]{8,}$")
_TOKEN: Final = re.compile(r"^(?=.*[0-9])(?=.*[A-Za-z])[A-Za-z0-9_\-]{6,}$")
_FILE: Final = re.compile(r"^[^/]+\.[A-Za-z][A-Za-z0-9]{0,4}$")
_WORD: Final = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
_PARTS: Final = re.compile(r"[-_]+")
_ALPHA2: Final = re.compile(r"^[A-Za-z]{2,}$")

PAGE_WORDS: Final = frozenset({"page", "pages", "p", "pg", "seite", "pagina", "strona", "sida"})
PAGE_PARAMS: Final = frozenset({"page", "p", "pg", "pagenum", "page_number", "pageno", "paged"})
SEARCH_PARAMS: Final = frozenset(
    {"q", "query", "search", "s", "k", "kw", "keyword", "keywords", "term", "terms", "text",
     "searchterm", "search_query", "search_term", "qs", "wd", "text_query"}
)  # fmt: skip
CATEGORY_WORDS: Final = frozenset(
    {"c", "cat", "cats", "category", "categories", "dept", "depts", "department",
     "departments", "section", "sections", "topic", "topics", "genre", "genres", "t",
     "collection", "collections", "shop", "browse", "aisle", "kategorie", "categorie"}
)  # fmt: skip
MONTHS: Final = frozenset(
    {"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
     "january", "february", "march", "april", "june", "july", "august", "september",
     "october", "november", "december"}
)  # fmt: skip
RESERVED: Final = frozenset({"host", "domain", "template", "path", "url", "scheme"})


@functools.lru_cache(maxsize=1 << 17)
def shape(value: str) -> Shape:
    """The shape of one (decoded) value: ``num``, ``id``, ``file``, ``slug``, ``word``, ``text``."""
    if not value:
        return "empty"
    if _NUM.match(value):
        return "id" if looks_like_number_id(value) else "num"
    if _FILE.match(value) and not _UUID.match(value):
        return "file"
    if _UUID.match(value) or _HEX.match(value):
        return "id"
    if _TOKEN.match(value):
        return "slug" if _is_slug(value) else "id"
    if _is_slug(value):
        return "slug"
    if _WORD.match(value):
        return "word"
    return "text"


def _is_slug(value: str) -> bool:
    parts = [p for p in _PARTS.split(value) if p]
    return (
        len(parts) >= 2
        and sum(1 for p in parts if _ALPHA2.match(p)) >= 2
        and (all(p.isalnum() for p in parts))
    )


def looks_like_number_id(value: str) -> bool:
    """Digits long enough to be an identifier (years 1900–2099 are not)."""
    if len(value) >= 5:
        return True
    return len(value) == 4 and not (1900 <= int(value) <= 2099)


def looks_like_id(value: str) -> bool:
    """True for values no person would keep as a constant in a template."""
    return shape(value) == "id"


def infer_kind(
    counts: Mapping[str, int],
    *,
    max_category: int = 64,
    context: str | None = None,
    param: str | None = None,
) -> Kind:
    """The kind of a field from its values and their counts.

    ``context`` is the literal path segment just before the field (``page`` in
    ``/news/page/:n``); ``param`` the query parameter name when it is one.
    """
    values = [v for v in counts if v]
    if not values:
        return "text"
    n = len(values)
    shapes = [shape(v) for v in values]
    numeric = sum(1 for v in values if _NUM.match(v)) / n
    if numeric >= 0.95 and (
        (context is not None and context.lower() in PAGE_WORDS)
        or (param is not None and param.lower() in PAGE_PARAMS)
    ):
        return "page"
    spaced = sum(1 for v in values if " " in v.strip()) / n
    if param is not None and (
        param.lower() in SEARCH_PARAMS or (spaced >= 0.2 and n > max_category)
    ):
        return "search"

    def share(s: str) -> float:
        return sum(1 for x in shapes if x == s) / n

    if share("id") >= 0.5:
        return "id"
    if numeric >= 0.95:
        return "category" if n <= max_category and max(len(v) for v in values) <= 4 else "id"
    if share("file") >= 0.5:
        return "file"
    if share("slug") >= 0.5:
        return "slug"
    if n <= max_category and share("text") < 0.5:
        return "category"
    if share("word") + share("slug") >= 0.5:
        return "slug"
    return "text"


# -- names ------------------------------------------------------------------------------

_NON_NAME: Final = re.compile(r"[^a-z0-9]+")


def sanitize(name: str, default: str = "field") -> str:
    """A valid field name (``^[a-z][a-z0-9_]*$``, at most 48 characters) from any text."""
    out = _NON_NAME.sub("_", name.lower()).strip("_")[:48].strip("_")
    if not out:
        return default
    if not out[0].isalpha():
        out = f"{default}_{out}"[:48]
    return out


def singular(word: str) -> str:
    """``items`` → ``item``, ``categories`` → ``category`` (English, good enough for names)."""
    w = word.lower()
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


def special_name(values: Iterable[str]) -> str | None:
    """``year`` or ``month`` when every value says so; else ``None``."""
    vals = [v for v in values if v]
    if not vals:
        return None
    if all(_NUM.match(v) and len(v) == 4 and 1900 <= int(v) <= 2099 for v in vals):
        return "year"
    if all(v.lower() in MONTHS for v in vals):
        return "month"
    return None


def path_field_name(
    kind: str,
    position: int,
    before: list[str | None],
    values: Iterable[str],
) -> str:
    """A meaningful name for the path variable at ``position``.

    ``before`` holds the template's earlier segments, literals as text and variables
    as ``None``: the nearest literal gives the context (``/items/:x`` → ``item_…``).
    """
    prev = before[-1] if before else None
    nearest = next((s for s in reversed(before) if s is not None), None)
    if kind == "page":
        return "page"
    special = special_name(values)
    if special and kind == "category":
        return special
    if kind == "category":
        if prev is not None:
            return "category" if prev.lower() in CATEGORY_WORDS else _ctx(prev, "category")
        return "section" if position == 0 else "category"
    if kind == "id":
        return _ctx(nearest, "id") if nearest is not None else "id"
    if kind in ("slug", "text"):
        if prev is not None and _WORD.match(prev) and prev.lower() not in CATEGORY_WORDS:
            name = sanitize(singular(prev))
            return name if name not in RESERVED else f"{name}_{kind}"
        return _ctx(nearest, kind) if nearest is not None else kind
    return kind  # file


def _ctx(literal: str, suffix: str) -> str:
    base = sanitize(singular(literal), default="")
    return f"{base}_{suffix}" if base and _WORD.match(literal) else suffix


def query_field_name(param: str, kind: str) -> str:
    """The field name for a query parameter: ``q`` → ``search``, ``pg`` → ``page``."""
    low = param.lower()
    if kind == "search" and low in SEARCH_PARAMS:
        return "search"
    if kind == "page" and low in PAGE_PARAMS:
        return "page"
    name = sanitize(param, default="param")
    return name if name not in RESERVED else f"{name}_param"


def unique_names(names: list[str]) -> list[str]:
    """Suffix repeats with ``_2``, ``_3``… so every name in a template is distinct."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        if n in seen:
            seen[n] += 1
            candidate = f"{n}_{seen[n]}"
            while candidate in seen:
                seen[n] += 1
                candidate = f"{n}_{seen[n]}"
            seen[candidate] = 1
            out.append(candidate)
        else:
            seen[n] = 1
            out.append(n)
    return out

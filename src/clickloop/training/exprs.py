"""Event filters and column references as users write them in ``clickloop.yaml``.

A filter is a SQL boolean expression over the canonical event columns (DuckDB
dialect) where ``props.NAME`` reads a property::

    >>> to_sql("type = 'impression' AND props.position <= '3'")
    "type = 'impression' AND props['position'] <= '3'"

String literals are left alone, so ``url LIKE '%props.x%'`` keeps its text.
"""

from __future__ import annotations

import re
from typing import Final

from clickloop.events.schema import FIELDS

_TOKEN: Final = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\bprops\.([A-Za-z_][\w\-]*)")
_NAME: Final = re.compile(r"^[A-Za-z_]\w*$")


def to_sql(expression: str) -> str:
    """Translate ``props.x`` references into DuckDB map lookups (outside string literals)."""

    def sub(m: re.Match[str]) -> str:
        if m.group(1) is None:
            return m.group(0)
        return f"props['{m.group(1)}']"

    return _TOKEN.sub(sub, expression)


def column_sql(ref: str) -> str:
    """SQL for a column reference: a canonical field or ``props.NAME``.

    >>> column_sql("props.item_id"), column_sql("user_id")
    ("props['item_id']", 'user_id')
    """
    if ref.startswith("props."):
        name = ref.removeprefix("props.")
        if not name or "'" in name:
            raise ValueError(f"{ref!r} is not a property reference")
        return f"props['{name}']"
    if ref not in FIELDS:
        raise ValueError(
            f"{ref!r} is not an event column: use one of {', '.join(FIELDS)} or props.NAME"
        )
    return ref


def column_name(ref: str) -> str:
    """A safe output column name for a reference: ``props.item_id`` → ``item_id``."""
    name = ref.removeprefix("props.").replace("-", "_")
    if not _NAME.match(name):
        raise ValueError(f"{ref!r} cannot be used as a column name")
    return name

"""Map an arbitrary table's columns into the canonical event.

A source declares how its columns become canonical fields::

    columns:
      event_id: id                              # rename
      ts: {from: time, format: epoch_ms}        # rename + timestamp format
      type: {const: page_view}                  # constant field
      user_id: uid
      url: page
    props: rest                                 # unmapped columns go into props
    timezone: Europe/Paris                      # for times written without a zone

Canonical columns already present under their own names need no mapping.

>>> import pyarrow as pa
>>> m = Mapping.model_validate({"columns": {"event_id": "id", "type": {"const": "click"}}})
>>> mapped = m.apply(pa.table({"id": ["e1"], "user_id": ["u"], "ip": ["10.0.0.1"]}))
>>> mapped.column_names
['event_id', 'ts', 'received_at', 'type', 'user_id', 'session_id', 'url', 'referrer', 'props']
>>> mapped.column("props").to_pylist()
[[('ip', '10.0.0.1')]]
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from clickloop.errors import InvalidInputError
from clickloop.events.props import normalize_props, props_from_columns
from clickloop.events.schema import FIELDS, PROPS_TYPE, FieldName
from clickloop.events.timestamps import check_format
from clickloop.events.validate import Validated, validate


def _shorthand(value: Any) -> Any:
    return {"from": value} if isinstance(value, str) else value


class ColumnSpec(BaseModel):
    """Where one canonical field comes from: a source column, or a constant."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: str | None = Field(default=None, alias="from", description="source column name")
    const: str | int | float | bool | None = Field(default=None, description="constant value")
    format: str | None = Field(default=None, description="timestamp format (ts, received_at)")

    @model_validator(mode="after")
    def _one_source(self) -> ColumnSpec:
        if (self.from_ is None) == (self.const is None):
            raise ValueError("give exactly one of 'from' (a column name) or 'const' (a value)")
        if self.format is not None:
            check_format(self.format)
        return self


class Mapping(BaseModel):
    """How a source's records become canonical events (renames, constants, formats)."""

    model_config = ConfigDict(extra="forbid")

    columns: dict[FieldName, Annotated[ColumnSpec, BeforeValidator(_shorthand)]] = Field(
        default_factory=dict
    )
    props: Literal["rest", "none"] | list[str] = "rest"
    ts_format: str = "auto"
    timezone: str = "UTC"

    @field_validator("ts_format")
    @classmethod
    def _known_format(cls, v: str) -> str:
        return check_format(v)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown time zone {v!r}; use an IANA name like 'Europe/Paris'"
            ) from exc
        return v

    def format_of(self, name: str) -> str:
        spec = self.columns.get(name)  # type: ignore[call-overload]
        return spec.format if spec and spec.format else self.ts_format

    def apply(self, table: pa.Table, *, where: str = "input") -> pa.Table:
        """Return a table with exactly the canonical column names (types still raw)."""
        n = table.num_rows
        used: set[str] = set()
        out: dict[str, pa.Array | pa.ChunkedArray] = {}
        for name in FIELDS:
            spec = self.columns.get(name)  # type: ignore[call-overload]
            if spec is not None and spec.from_ is not None:
                if spec.from_ not in table.column_names:
                    raise InvalidInputError(
                        f"{where}: column {spec.from_!r} (mapped to {name}) is not in the data",
                        hint=f"columns present: {', '.join(table.column_names) or 'none'}",
                    )
                out[name] = table.column(spec.from_)
                used.add(spec.from_)
            elif spec is not None:
                out[name] = pa.array(np.repeat(np.asarray([spec.const], dtype=object), n))
            elif name in table.column_names:
                out[name] = table.column(name)
                used.add(name)
            else:
                out[name] = pa.nulls(n)
        extra: list[str] = []
        if self.props == "rest":
            extra = [c for c in table.column_names if c not in used and c not in FIELDS]
        elif isinstance(self.props, list):
            missing = [c for c in self.props if c not in table.column_names]
            if missing:
                raise InvalidInputError(
                    f"{where}: props columns {missing} are not in the data",
                    hint=f"columns present: {', '.join(table.column_names)}",
                )
            extra = list(self.props)
        if extra:
            base, bad = normalize_props(out["props"])
            folded = props_from_columns(table, extra)
            merged = merge_maps(base, folded)
            # keep the original (unparseable) props where they were bad, so the
            # validator still reports bad_props for those rows
            out["props"] = merged if not bad.any() else _keep_bad(out["props"], merged, bad)
        return pa.table({name: out[name] for name in FIELDS})

    def validate_table(
        self,
        table: pa.Table,
        *,
        received_at: Any = None,
        max_future: timedelta = timedelta(hours=1),
        where: str = "input",
    ) -> Validated:
        """Map then validate: canonical events plus a reason for every reject."""
        return validate(
            self.apply(table, where=where),
            ts_format=self.format_of("ts"),
            received_at_format=self.format_of("received_at"),
            timezone=self.timezone,
            received_at=received_at,
            max_future=max_future,
        )


def _keep_bad(
    original: pa.Array | pa.ChunkedArray, merged: pa.MapArray, bad: np.ndarray
) -> pa.Array:
    # A bad props value cannot be merged; hand the validator a non-map marker for
    # those rows by returning JSON text where the merge succeeded.
    from clickloop.events.props import to_text

    as_text = to_text(merged)
    raw = original.combine_chunks() if isinstance(original, pa.ChunkedArray) else original
    raw_text = to_text(raw) if not pa.types.is_string(raw.type) else raw
    return pa.array(
        [
            r if b else m
            for r, m, b in zip(raw_text.to_pylist(), as_text.to_pylist(), bad, strict=True)
        ],
        pa.string(),
    )


def merge_maps(a: pa.MapArray, b: pa.MapArray) -> pa.MapArray:
    """Row-wise concatenation of two ``map<string,string>`` arrays (nulls count as empty)."""
    la, lb = _lengths(a), _lengths(b)
    offsets = np.zeros(len(a) + 1, np.int32)
    np.cumsum(la + lb, out=offsets[1:])
    out_start = offsets[:-1].astype(np.int64)
    src = np.empty(int(offsets[-1]), np.int64)
    src[_positions(out_start, la)] = np.arange(la.sum())
    src[_positions(out_start + la, lb)] = la.sum() + np.arange(lb.sum())
    entries = pa.concat_arrays([_entries(a), _entries(b)]).take(pa.array(src))
    return pa.MapArray.from_arrays(
        pa.array(offsets), entries.field(0), entries.field(1), type=PROPS_TYPE
    )


_ENTRIES = pa.list_(pa.struct([("key", pa.string()), ("value", pa.string())]))


def _entries(m: pa.MapArray) -> pa.StructArray:
    """The key/value entries of the rows of ``m`` (slice-aware; null rows have none)."""
    return m.cast(_ENTRIES).flatten()


def _lengths(m: pa.MapArray) -> np.ndarray:
    lengths = np.diff(np.asarray(m.offsets.to_numpy(zero_copy_only=False), dtype=np.int64))
    if m.null_count:
        lengths[np.asarray(m.is_null().to_numpy(zero_copy_only=False))] = 0  # _entries skips them
    return lengths


def _positions(row_start: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Output positions of each row's entries, given where each row's block starts."""
    firsts = np.cumsum(lengths) - lengths
    return np.repeat(row_start - firsts, lengths) + np.arange(lengths.sum())

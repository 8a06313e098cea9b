"""From an Arrow table of features to the matrix an estimator fits — stored, not re-coded.

The :class:`Preprocessor` learns, on the training slice only, what each column
is (numeric, numeric text, categorical, or a lookup of a request value in a
list/map feature) and its statistics (vocabularies, means). It is saved as
JSON inside the model artifact, so scoring applies exactly the same
transformation: no feature code is re-implemented by the prediction service.

Two encodings: ``native`` (numbers as they are, categories as integer codes, for
LightGBM) and ``onehot`` (imputed, standardised numbers with missing flags and
one-hot categories, for linear and other scikit-learn models).

>>> pre = Preprocessor.fit(table, ["ctx__position", "item__category"], encoding="native")
>>> X = pre.transform(table)                    # float32, one column per output name
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from clickloop.errors import InvalidInputError

Kind = Literal["numeric", "text_numeric", "categorical", "cross_list", "cross_map", "cross_equal"]
Encoding = Literal["native", "onehot"]
MAX_VOCAB = 250
MIN_COUNT = 10


@dataclass
class ColumnSpec:
    name: str
    kind: Kind
    inputs: list[str] = field(default_factory=list)  # source columns (crosses: feature, key)
    vocab: list[str] = field(default_factory=list)
    mean: float = 0.0
    std: float = 1.0
    missing: bool = False


def unsupported_reason(dtype: pa.DataType) -> str | None:
    """Why a column of this type cannot be used directly (None when it can)."""
    if pa.types.is_timestamp(dtype) or pa.types.is_date(dtype):
        return "unsupported_type: absolute times do not generalise; use a since_last feature"
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype) or pa.types.is_map(dtype):
        return "unsupported_type: a list/map feature is used through models.<name>.crosses"
    if pa.types.is_struct(dtype) or pa.types.is_binary(dtype) or pa.types.is_null(dtype):
        return f"unsupported_type: {dtype}"
    return None


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t)


def _as_text(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return arr.cast(pa.string())


def _numeric(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_duration(arr.type):
        arr = pc.divide(pc.cast(arr.cast(pa.duration("us")), pa.int64()), 1e6)
    return np.asarray(arr.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False))


def _text_to_float(arr: pa.Array) -> np.ndarray:
    # unparseable text becomes missing, never an error at scoring time
    s = _as_text(arr)
    ok = pc.match_substring_regex(s, r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")
    clean = pc.if_else(pc.fill_null(ok, False), s, pa.scalar(None, pa.string()))
    return np.asarray(clean.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False))


@dataclass
class Preprocessor:
    columns: list[ColumnSpec]
    encoding: Encoding = "native"

    # -- learning -------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        table: pa.Table,
        names: list[str],
        *,
        encoding: Encoding = "native",
        crosses: list[tuple[str, str, str]] | None = None,
    ) -> Preprocessor:
        """Learn the columns ``names`` (and ``crosses``: name, feature, key) from ``table``."""
        specs = []
        for name in names:
            col = table.column(name)
            reason = unsupported_reason(col.type)
            if reason:
                raise InvalidInputError(f"feature {name!r}: {reason}")
            specs.append(_learn(name, col))
        for name, feat, key in crosses or []:
            t = table.column(feat).type
            kind: Kind = (
                "cross_map"
                if pa.types.is_map(t)
                else "cross_list"
                if pa.types.is_list(t) or pa.types.is_large_list(t)
                else "cross_equal"
            )
            spec = ColumnSpec(name, kind, [feat, key])
            specs.append(_stats(spec, _cross(table, spec)))
        return cls(specs, encoding)

    # -- applying --------------------------------------------------------------------

    @property
    def inputs(self) -> list[str]:
        """Columns a table must hold to be transformed."""
        seen: dict[str, None] = {}
        for s in self.columns:
            for c in s.inputs or [s.name]:
                seen[c] = None
        return list(seen)

    @property
    def output_names(self) -> list[str]:
        if self.encoding == "native":
            return [s.name for s in self.columns]
        out = []
        for s in self.columns:
            if s.kind == "categorical":
                out += [f"{s.name}={v}" for v in s.vocab] + [f"{s.name}=(other)"]
            else:
                out.append(s.name)
                if s.missing:
                    out.append(f"{s.name}=(missing)")
        return out

    @property
    def categorical(self) -> list[int]:
        """Output positions of categorical columns (native encoding)."""
        if self.encoding != "native":
            return []
        return [i for i, s in enumerate(self.columns) if s.kind == "categorical"]

    def transform(self, table: pa.Table) -> np.ndarray:
        missing = [c for c in self.inputs if c not in table.column_names]
        if missing:
            raise InvalidInputError(
                f"the input lacks {len(missing)} feature column(s): {', '.join(missing[:10])}",
                hint="score a table holding the model's features (model.features lists them)",
            )
        parts: list[np.ndarray] = []
        for s in self.columns:
            v = _values(table, s)
            if self.encoding == "native":
                parts.append(v.reshape(-1, 1))
            elif s.kind == "categorical":
                onehot = np.zeros((len(v), len(s.vocab) + 1), np.float32)
                ok = ~np.isnan(v)
                onehot[np.nonzero(ok)[0], v[ok].astype(np.int64)] = 1.0
                parts.append(onehot)
            else:
                nan = np.isnan(v)
                z = (np.where(nan, s.mean, v) - s.mean) / s.std
                parts.append(z.reshape(-1, 1))
                if s.missing:
                    parts.append(nan.astype(np.float32).reshape(-1, 1))
        if not parts:
            return np.zeros((table.num_rows, 0), np.float32)
        return np.hstack(parts).astype(np.float32, copy=False)

    def to_dict(self) -> dict[str, Any]:
        return {"encoding": self.encoding, "columns": [asdict(s) for s in self.columns]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessor:
        return cls([ColumnSpec(**c) for c in d["columns"]], d["encoding"])

    def subset(self, names: list[str]) -> Preprocessor:
        keep = set(names)
        return Preprocessor([s for s in self.columns if s.name in keep], self.encoding)


def _learn(name: str, col: pa.ChunkedArray) -> ColumnSpec:
    t = col.type
    if _is_text(t):
        text = _as_text(col)
        nonnull = pc.drop_null(text)
        if len(nonnull):
            parsed = _text_to_float(nonnull)
            if np.mean(~np.isnan(parsed)) >= 0.99:
                spec = ColumnSpec(name, "text_numeric")
                return _stats(spec, _text_to_float(text))
        counts = pc.value_counts(nonnull)
        vals = counts.field("values").to_pylist()
        cnts = counts.field("counts").to_numpy()
        order = sorted(range(len(vals)), key=lambda i: (-cnts[i], vals[i]))
        vocab = [vals[i] for i in order if cnts[i] >= MIN_COUNT][:MAX_VOCAB]
        if not vocab and vals:  # tiny data: keep the most frequent values anyway
            vocab = [vals[i] for i in order][:MAX_VOCAB]
        return ColumnSpec(name, "categorical", vocab=vocab, missing=text.null_count > 0)
    return _stats(ColumnSpec(name, "numeric"), _numeric(col))


def _stats(spec: ColumnSpec, v: np.ndarray) -> ColumnSpec:
    finite = v[~np.isnan(v)]
    spec.missing = bool(len(finite) < len(v))
    if len(finite):
        spec.mean = float(finite.mean())
        sd = float(finite.std())
        spec.std = sd if sd > 1e-12 else 1.0
    return spec


def _values(table: pa.Table, s: ColumnSpec) -> np.ndarray:
    """One float column: numbers, parsed text, category codes (NaN = missing)."""
    if s.kind in ("cross_list", "cross_map", "cross_equal"):
        return _cross(table, s)
    col = table.column(s.name)
    if s.kind == "numeric":
        if _is_text(col.type):
            return _text_to_float(col.combine_chunks())
        return _numeric(col)
    if s.kind == "text_numeric":
        if _is_text(col.type):
            return _text_to_float(col.combine_chunks())
        return _numeric(col)
    text = _as_text(col) if not pa.types.is_null(col.type) else pa.nulls(len(col), pa.string())
    idx = pc.index_in(text, value_set=pa.array(s.vocab, pa.string()))
    codes = np.array(idx.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False))
    other = np.isnan(codes) & np.asarray(text.is_valid().to_numpy(zero_copy_only=False))
    codes[other] = len(s.vocab)
    return codes


def _cross(table: pa.Table, s: ColumnSpec) -> np.ndarray:
    """Lookup of a request value (``key``) in an entity's list or map feature.

    List (top-k): 1-based rank of the key in the list, 0 when absent.
    Map (histogram): the value under the key, 0 when absent. NaN when the
    feature itself is missing (the entity has no history).
    Scalar (e.g. the page's category against the item's): 1 when equal, 0 when
    not, NaN when either is missing.
    """
    feat_name, key_name = s.inputs
    if s.kind == "cross_equal":
        a, b = _as_text(table.column(feat_name)), _as_text(table.column(key_name))
        eq = pc.equal(a, b).cast(pa.float64()).fill_null(np.nan)
        return np.asarray(eq.to_numpy(zero_copy_only=False), dtype=np.float64)
    feat = pa.concat_arrays(table.column(feat_name).chunks)  # fresh buffers, offset 0
    key = _as_text(table.column(key_name))
    n = len(feat)
    out = np.full(n, np.nan)
    valid = np.asarray(feat.is_valid().to_numpy(zero_copy_only=False))
    out[valid] = 0.0
    if n == 0:
        return out
    if s.kind == "cross_map":
        keys, values = feat.keys, pc.cast(feat.items, pa.float64())
        # the same offsets as a list of keys: list kernels do not accept maps
        feat = pa.ListArray.from_arrays(feat.offsets, keys, mask=feat.is_null())
    else:
        keys, values = feat.flatten(), None
    parents = np.asarray(pc.list_parent_indices(feat).to_numpy(zero_copy_only=False))
    if len(parents) == 0:
        return out
    lengths = np.asarray(pc.list_value_length(feat).fill_null(0).to_numpy(zero_copy_only=False))
    starts = np.cumsum(lengths) - lengths
    pos = np.arange(len(parents)) - starts[parents]
    want = key.take(pa.array(parents))
    hit = np.asarray(
        pc.fill_null(pc.equal(_as_text(keys), want), False).to_numpy(zero_copy_only=False)
    )
    rows = parents[hit]
    if s.kind == "cross_map":
        assert values is not None
        vals = np.asarray(values.fill_null(0).to_numpy(zero_copy_only=False))[hit]
        out[rows] = vals
    else:
        # the first (best-ranked) hit wins: iterate from the end so earlier positions overwrite
        ranks = (pos[hit] + 1).astype(np.float64)
        out[rows[::-1]] = ranks[::-1]
    return out

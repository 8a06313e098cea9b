"""JSON text of whole Arrow arrays, computed with Arrow kernels (no Python object per value).

The online store keeps variable-length features (strings, top-k lists, histograms)
as JSON. Spelling them with ``orjson`` needs ``to_pylist`` first — one Python
object per value, most of the cost of a materialisation. These kernels build the
same JSON column-wise; :func:`json_text` returns ``None`` for a type it does not
handle, and the caller falls back to orjson. A property test checks that
``orjson.loads`` of every value equals the orjson path, value for value.

Spelling rules, identical to orjson's: ``null``, ``true``/``false``, integers as
digits, floats in shortest round-trip form with a ``.0`` when integral and
``null`` for NaN/±inf, strings with ``"`` ``\\`` and control characters escaped,
lists ``[…]``, structs and string-keyed maps ``{…}``.

>>> json_text(pa.array([["a", "b"], None])).to_pylist()
['["a","b"]', 'null']
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_CONTROL: Final = {
    **{chr(c): f"\\u{c:04x}" for c in range(32)},
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}
_INTEGRAL: Final = r"^-?[0-9]+$"


def _join(*parts: pa.Array | str) -> pa.Array:
    """Element-wise concatenation (null if any array part is null)."""
    return pc.binary_join_element_wise(*parts, "")


def _enclose(arr: pa.Array, left: str, right: str) -> pa.Array:
    """``left + value + right`` for every value of a string array (nulls stay null).

    Built on the buffers with numpy: a kernel call per element costs ~100 ns here,
    this costs a few ns (it runs for every string and list feature value).
    """
    arr = arr.cast(pa.string())
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset : arr.offset + n + 1]
    data = arr.buffers()[2]
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.empty(0, np.uint8)
    body = raw[offsets[0] : offsets[-1]]
    new = (offsets - offsets[0]).astype(np.int64) + 2 * np.arange(n + 1, dtype=np.int64)
    if new[-1] >= 2**31:
        return _join(left, arr, right)  # beyond 32-bit offsets: let Arrow handle it
    out = np.empty(int(new[-1]), dtype=np.uint8)
    fill = np.ones(len(out), dtype=bool)
    fill[new[:-1]] = False
    fill[new[1:] - 1] = False
    out[new[:-1]] = ord(left)
    out[new[1:] - 1] = ord(right)
    out[fill] = body
    enclosed = pa.Array.from_buffers(
        pa.string(), n, [None, pa.py_buffer(new.astype(np.int32)), pa.py_buffer(out)]
    )
    if arr.null_count:
        enclosed = pc.if_else(arr.is_valid(), enclosed, pa.scalar(None, pa.string()))
    return enclosed


def _string(arr: pa.Array) -> pa.Array:
    # Most feature strings need no escaping: look at the raw UTF-8 bytes once (numpy,
    # a few ms per million values) and run only the replacements that are needed.
    data = arr.buffers()[2]
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.empty(0, np.uint8)
    s = arr
    if (raw == 0x5C).any():  # backslash first: the escapes below add backslashes
        s = pc.replace_substring(s, "\\", "\\\\")
    if (raw == 0x22).any():
        s = pc.replace_substring(s, '"', '\\"')
    if (raw < 0x20).any():
        for ch, esc in _CONTROL.items():
            s = pc.replace_substring(s, ch, esc)
    return _enclose(s, '"', '"')


def _float(arr: pa.Array) -> pa.Array:
    arr = arr.cast(pa.float64())  # float32 spelt as the float64 Python sees, like orjson
    s = pc.cast(arr, pa.string())
    s = pc.if_else(pc.match_substring_regex(s, _INTEGRAL), _join(s, ".0"), s)
    return pc.if_else(pc.is_finite(arr), s, pa.scalar(None, pa.string()))


def _children(arr: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(offsets rebased to 0, the child values they index) of a list or map array."""
    offsets = arr.offsets
    first, last = offsets[0].as_py(), offsets[-1].as_py()
    child = arr.values.slice(first, last - first)
    return pc.subtract(offsets, first), child


def _wrap(texts: pa.Array, offsets: pa.Array, valid_of: pa.Array, opening: str, closing: str
          ) -> pa.Array:  # fmt: skip
    lists = pa.ListArray.from_arrays(offsets.cast(pa.int32()), texts, mask=valid_of.is_null())
    return _enclose(pc.binary_join(lists, ","), opening, closing)


def _text(arr: pa.Array) -> pa.Array | None:
    """JSON per value, null where the value is null; None if the type is not handled."""
    t = arr.type
    if pa.types.is_dictionary(t):
        return _text(arr.cast(t.value_type))
    if pa.types.is_null(t):
        return pa.nulls(len(arr), pa.string())
    if pa.types.is_boolean(t):
        return pc.if_else(arr, "true", "false")
    if pa.types.is_integer(t):
        return pc.cast(arr, pa.string())
    if pa.types.is_floating(t):
        return _float(arr)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return _string(arr.cast(pa.string()))
    if pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _text(arr.cast(pa.list_(t.value_type)))
    if pa.types.is_map(t):
        if not pa.types.is_string(t.key_type):
            return None
        offsets, _ = _children(arr)
        first = arr.offsets[0].as_py()
        n = len(offsets) and offsets[-1].as_py()
        keys = _text(arr.keys.slice(first, n))
        items = _text(arr.items.slice(first, n))
        if keys is None or items is None:
            return None
        pairs = _join(keys, ":", items.fill_null("null"))
        return _wrap(pairs, offsets, arr, "{", "}")
    if pa.types.is_list(t):
        offsets, child = _children(arr)
        inner = _text(child)
        if inner is None:
            return None
        return _wrap(inner.fill_null("null"), offsets, arr, "[", "]")
    if pa.types.is_struct(t):
        if t.num_fields == 0:
            return None
        parts: list[pa.Array | str] = []
        for i, child in enumerate(arr.flatten()):
            inner = _text(child)
            if inner is None:
                return None
            name = _text(pa.array([t.field(i).name]))
            assert name is not None
            parts += ["," if i else "", name[0].as_py() + ":", inner.fill_null("null")]
        out = _join("{", *parts, "}")
        return pc.if_else(arr.is_valid(), out, pa.scalar(None, pa.string()))
    return None


def json_text(values: pa.Array | pa.ChunkedArray) -> pa.Array | None:
    """The JSON spelling of every value (``null`` for nulls), or ``None`` if unsupported.

    >>> json_text(pa.array([1.0, float("nan"), None])).to_pylist()
    ['1.0', 'null', 'null']
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    out = _text(values)
    return None if out is None else out.fill_null("null")

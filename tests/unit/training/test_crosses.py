"""Crosses: a request value looked up in a top-k list or a histogram, or compared to a scalar."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from clickloop.training.preprocess import Preprocessor

TABLE = pa.table(
    {
        "top": pa.array([["a", "b"], ["b"], None, [], ["c", "a"]], pa.list_(pa.string())),
        "hist": pa.array(
            [[("a", 3), ("b", 1)], [("b", 2)], None, [], [("a", 5)]],
            pa.map_(pa.string(), pa.int64()),
        ),
        "page": pa.array(["a", "a", None, "x", "c"]),
        "key": pa.array(["a", "a", "a", "a", None]),
    }
)


def _out(kind_feature: str) -> list[float]:
    pre = Preprocessor.fit(TABLE, [], crosses=[("x", kind_feature, "key")])
    return pre.transform(TABLE)[:, 0].tolist()


def test_a_list_gives_the_rank_a_map_the_count_a_scalar_equality():
    nan = float("nan")
    assert np.allclose(_out("top"), [1, 0, nan, 0, 0], equal_nan=True)
    assert np.allclose(_out("hist"), [3, 0, nan, 0, 0], equal_nan=True)
    # a missing side is unknown, not "different"
    assert np.allclose(_out("page"), [1, 1, nan, 0, nan], equal_nan=True)

"""Features: one declarative definition, computed in batch and in streaming with the same values.

Public API (everything else is internal):

``training_set(project, examples, feature_sets, *, entity="user_id", ts="ts") -> pa.Table``
    Point-in-time correct features for a table of examples: exactly one output
    row per input row, in input order — the input columns plus every feature of
    the named sets, each computed only from events strictly *before* the row's
    ``ts``. An entity without history gets 0 for counts and sums and the
    declared ``default`` (or null) for everything else; no row is ever dropped.
    ``entity`` names the examples' key column (or maps set name → column).

``feature_names(project, feature_sets) -> list[str]``
    The columns ``training_set`` adds, in order (no data is read).

``backfill(project, sets, *, start, end, every)``
    Snapshots of feature values into the offline store (Parquet in the lake,
    ``features/<set>/version=<v>/dt=…``; see :mod:`clickloop.features.offline`).

``materialize(project, sets, *, as_of=None, compute=False)``
    The newest offline snapshot into the online store (event-time ordered: never
    overwrites a newer value the stream wrote).

``FeatureStream(sets)`` / ``StreamRunner(project, sets)``
    The streaming engine without I/O, and on the bus with the online store and a
    crash-safe checkpoint (``clickloop features stream``).

``define(name, **spec) -> FeatureSet`` / ``load_sets(project, names)``
    Definitions in Python, or compiled from ``clickloop.yaml``.

``age_features(project, sets) -> list[str]``
    Features that grow with time between events (``since_last``): an online value
    was computed at its row's ``_event_ts``; add ``now - _event_ts`` at request time.

Feature names are ``<set>__<op>[_<column>][_<window>]`` — e.g.
``user_activity__count_1h``, ``user_activity__top_k_category_7d``,
``user_activity__since_last`` (lifetime aggregations have no window suffix).
Value types: counts are int64; sums, means, min, max and ``since_last`` (seconds)
float64; ``first``/``last`` keep the column's type; ``top_k`` is a list of
strings (most frequent first); ``histogram`` a map string → count.

>>> from clickloop.features import training_set, feature_names
>>> t = training_set(project, examples, ["user_activity", "user_clicks"])   # doctest: +SKIP
>>> t.num_rows == examples.num_rows
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clickloop.features.batch import (
    BackfillResult,
    as_of_values,
    backfill,
    feature_names,
    snapshot_times,
    training_set,
)
from clickloop.features.definition import Feature, FeatureSet, define, hop_for, load_sets
from clickloop.features.materialize import materialize
from clickloop.features.runner import StreamRunner
from clickloop.features.stream import FeatureStream


def age_features(project: Any, feature_sets: Sequence[str | FeatureSet]) -> list[str]:
    """Names of features whose value grows with time since the row was written (since_last).

    >>> age_features(project, ["user_activity"])                  # doctest: +SKIP
    ['user_activity__since_last']
    """
    return [f.name for fs in load_sets(project, feature_sets) for f in fs.features
            if f.op == "since_last"]  # fmt: skip


__all__ = [
    "BackfillResult", "Feature", "FeatureSet", "FeatureStream", "StreamRunner", "age_features",
    "as_of_values", "backfill", "define", "feature_names", "hop_for", "load_sets", "materialize",
    "snapshot_times", "training_set",
]  # fmt: skip

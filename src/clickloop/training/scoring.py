"""Scoring tables of examples with a registered model: features joined point-in-time.

Used by batch scoring (``clickloop predict batch``), by training to score the
champion on the challenger's test slice, and by promotion to re-compare.

>>> scores = score_examples(project, model, examples)     # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from clickloop.training import metrics as mt
from clickloop.training.examples import LABEL
from clickloop.training.join import FeatureFn, entity_features

if TYPE_CHECKING:
    from clickloop.project import Project
    from clickloop.training.model import ScoringModel


def model_inputs(
    project: Project,
    model: ScoringModel,
    examples: pa.Table,
    *,
    feature_fn: FeatureFn | None = None,
) -> pa.Table:
    """The model's input columns for every example: feature sets, then request columns."""
    feats = entity_features(
        project,
        model.feature_sets,
        model.entity,
        examples,
        feature_fn=feature_fn,
        where=f"model {model.ref}",
    )
    req = model.request_columns(examples)
    table = examples
    for part in (feats, req):
        for name in part.column_names:
            if name in table.column_names:
                table = table.drop([name])
            table = table.append_column(name, part.column(name))
    return table


def score_examples(
    project: Project,
    model: ScoringModel,
    examples: pa.Table,
    *,
    feature_fn: FeatureFn | None = None,
) -> np.ndarray:
    """Calibrated scores of ``model`` for ``examples`` (entity, ``ts``, url, props…)."""
    return model.predict_proba(model_inputs(project, model, examples, feature_fn=feature_fn))


def evaluation(
    y: np.ndarray,
    p: np.ndarray,
    threshold: float,
    slices: dict[str, np.ndarray],
    *,
    reference: np.ndarray | None = None,
    min_examples: int = 1,
) -> dict[str, Any]:
    """Test metrics, curves and per-slice metrics of one model's scores."""
    return {
        "test": mt.binary_metrics(y, p, threshold),
        "curves": mt.curves(y, p),
        "slices": {
            c: mt.slice_metrics(y, p, v, min_examples=min_examples, reference=reference)
            for c, v in slices.items()
        },
    }


def labels(table: pa.Table) -> np.ndarray:
    return np.asarray(table.column(LABEL).to_numpy(zero_copy_only=False), dtype=np.int8)

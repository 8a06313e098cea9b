"""Training: examples and labels, sampling, feature selection, models, evaluation reports.

>>> from clickloop.training import train
>>> result = train(project, "ctr", promote=True)                  # doctest: +SKIP
>>> result.summary()["test"]["roc_auc"], result.report_html

Lower layers are importable on their own: :func:`build_examples` (examples
and labels from events), :func:`learn` (fit and evaluate a prepared table),
:func:`score_examples` (point-in-time scoring with a loaded model).
"""

from clickloop.training.examples import Examples, build_examples
from clickloop.training.learn import Dataset, Learned, learn
from clickloop.training.model import ScoringModel
from clickloop.training.promotion import promote
from clickloop.training.scoring import score_examples
from clickloop.training.selection import LeakageError
from clickloop.training.trainer import TrainResult, train

__all__ = [
    "Dataset",
    "Examples",
    "LeakageError",
    "Learned",
    "ScoringModel",
    "TrainResult",
    "build_examples",
    "learn",
    "promote",
    "score_examples",
    "train",
]

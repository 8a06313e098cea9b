"""Training: examples and labels, sampling, feature selection, models, evaluation reports.

>>> from clickloop.training import train
>>> result = train(project, "ctr", promote=True)                  # doctest: +SKIP
>>> result.summary()["test"]["roc_auc"], result.report_html

Lower layers are importable on their own: :func:`build_examples` (examples
and labels from events), :func:`learn` (fit and evaluate a prepared table),
:func:`score_examples` (point-in-time scoring with a loaded model).
"""

import os

# LightGBM and scikit-learn parallelise with OpenMP, whose idle threads spin by default:
# on a shared host (CI, a laptop running other work) spinning threads starve each other and
# a 2-thread fit can run 5× slower than a 1-thread one. Sleeping idle threads avoid that at
# no cost on a dedicated machine. Set before the OpenMP runtime loads; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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

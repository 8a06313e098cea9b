"""Turning raw model scores into probabilities that hold on unsampled traffic.

Step one is always the prior correction for negative downsampling or class
weights (:func:`clickloop.training.sampling.prior_correct`). Optionally a
Platt (logistic on the logit) or isotonic map is then fitted on the
validation slice — never the test slice — which is unsampled.

Everything is stored as plain numbers, so a model artifact needs no pickles
to calibrate::

    >>> c = Calibrator(rate=0.1, method="prior")
    >>> float(c.transform(np.array([0.5]))[0])
    0.0909...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from clickloop.training.sampling import prior_correct

Method = Literal["prior", "platt", "isotonic"]
EPS = 1e-7


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p / (1 - p))


@dataclass
class Calibrator:
    rate: float = 1.0
    method: Method = "prior"
    a: float = 1.0
    b: float = 0.0
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)

    def fit(self, raw: np.ndarray, labels: np.ndarray) -> Calibrator:
        """Fit the optional second step on (raw validation scores, labels)."""
        p = prior_correct(raw, self.rate)
        if self.method == "platt":
            from sklearn.linear_model import LogisticRegression

            lr = LogisticRegression(C=1e6, max_iter=1000)
            lr.fit(_logit(p).reshape(-1, 1), labels)
            self.a, self.b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
        elif self.method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(y_min=EPS, y_max=1 - EPS, out_of_bounds="clip")
            iso.fit(p, labels)
            self.x = [float(v) for v in iso.X_thresholds_]
            self.y = [float(v) for v in iso.y_thresholds_]
        return self

    def transform(self, raw: np.ndarray) -> np.ndarray:
        p = prior_correct(np.asarray(raw, dtype=np.float64), self.rate)
        if self.method == "platt":
            z = self.a * _logit(p) + self.b
            return 1.0 / (1.0 + np.exp(-z))
        if self.method == "isotonic" and self.x:
            return np.interp(p, self.x, self.y)
        return p

    def to_dict(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "method": self.method,
            "a": self.a,
            "b": self.b,
            "x": self.x,
            "y": self.y,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibrator:
        return cls(**d)

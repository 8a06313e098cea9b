# ruff: noqa: N803  (X is the conventional name of a feature matrix)
"""Estimators: LightGBM (default), logistic regression (baseline), or any scikit-learn
compatible classifier named by import path; fitting with early stopping and saving
in the library's own format.

>>> est = make_estimator(AlgorithmConfig(type="logistic"), seed=0)
>>> est.encoding
'onehot'
>>> est.fit(X, y, X_valid=Xv, y_valid=yv).predict(Xv)       # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clickloop.config.ml import AlgorithmConfig
from clickloop.errors import ConfigError

log = logging.getLogger(__name__)

LIGHTGBM_DEFAULTS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.08,
    "num_leaves": 31,
    "min_data_in_leaf": 100,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "max_bin": 127,
    "num_boost_round": 600,
    "early_stopping_rounds": 40,
}
LOGISTIC_DEFAULTS: dict[str, Any] = {"C": 1.0, "max_iter": 2000}
_ROUNDS_KEYS = ("num_boost_round", "n_estimators", "num_iterations", "num_rounds")


@dataclass
class Estimator:
    """One configured learner; ``fit`` returns self, learned state ends in ``_``."""

    kind: str  # "lightgbm", "logistic" or the import path
    params: dict[str, Any]
    seed: int
    threads: int = 0
    model_: Any = None
    best_iteration_: int | None = None
    history_: dict[str, Any] = field(default_factory=dict)

    @property
    def num_threads(self) -> int:
        """LightGBM threads: ``params.num_threads`` if set, else the caller's (0 = all cores)."""
        return int(self.params.get("num_threads", self.threads))

    @property
    def encoding(self) -> str:
        return "native" if self.kind == "lightgbm" else "onehot"

    def with_params(self, **params: Any) -> Estimator:
        return Estimator(self.kind, {**self.params, **params}, self.seed, self.threads)

    # -- fitting ------------------------------------------------------------------------

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        weights: np.ndarray | None = None,
        X_valid: np.ndarray | None = None,
        y_valid: np.ndarray | None = None,
        categorical: list[int] | None = None,
        names: list[str] | None = None,
        rounds: int | None = None,
    ) -> Estimator:
        if self.kind == "lightgbm":
            return self._fit_lightgbm(
                X, y, weights, X_valid, y_valid, categorical or [], names, rounds
            )
        est = self._sklearn()
        kwargs: dict[str, Any] = {}
        if weights is not None:
            if "sample_weight" not in inspect.signature(est.fit).parameters:
                raise ConfigError(
                    f"{self.kind} does not accept sample weights",
                    hint="use sampling.negatives instead of sampling.class_weight",
                )
            kwargs["sample_weight"] = weights
        est.fit(X, y, **kwargs)
        self.model_ = est
        return self

    def _fit_lightgbm(
        self,
        X: np.ndarray,
        y: np.ndarray,
        weights: np.ndarray | None,
        X_valid: np.ndarray | None,
        y_valid: np.ndarray | None,
        categorical: list[int],
        names: list[str] | None,
        rounds: int | None,
    ) -> Estimator:
        import lightgbm as lgb

        params = {**LIGHTGBM_DEFAULTS, **self.params}
        n_rounds = rounds or int(params.pop("num_boost_round", 600))
        for k in _ROUNDS_KEYS:
            params.pop(k, None)
        stop = int(params.pop("early_stopping_rounds", 40))
        params.update(
            verbosity=-1,
            seed=self.seed,
            deterministic=True,
            force_col_wise=True,
            num_threads=int(self.params.get("num_threads", self.threads)),
            metric="auc",
        )
        names = names or [f"f{i}" for i in range(X.shape[1])]
        safe = [_lgb_name(n) for n in names]
        train = lgb.Dataset(
            X,
            y,
            weight=weights,
            feature_name=safe,
            categorical_feature=categorical,
            free_raw_data=True,
            params={"max_bin": params.get("max_bin", 255)},
        )
        callbacks: list[Any] = []
        valid_sets = []
        if X_valid is not None and y_valid is not None and rounds is None:
            valid_sets = [lgb.Dataset(X_valid, y_valid, reference=train)]
            callbacks.append(lgb.early_stopping(stop, verbose=False))
        record: dict[str, Any] = {}
        if valid_sets:
            callbacks.append(lgb.record_evaluation(record))
        booster = lgb.train(
            params, train, num_boost_round=n_rounds, valid_sets=valid_sets, callbacks=callbacks
        )
        self.best_iteration_ = booster.best_iteration or booster.current_iteration()
        self.model_ = booster
        self.history_ = {"valid_auc": record.get("valid_0", {}).get("auc", [])}
        return self

    def _sklearn(self) -> Any:
        if self.kind == "logistic":
            from sklearn.linear_model import LogisticRegression

            return LogisticRegression(
                **{**LOGISTIC_DEFAULTS, **self.params}, random_state=self.seed
            )
        cls = load_class(self.kind)
        est = cls(**self.params)
        if (
            hasattr(est, "get_params")
            and "random_state" in est.get_params()
            and "random_state" not in self.params
        ):
            est.set_params(random_state=self.seed)
        if not hasattr(est, "predict_proba") and not hasattr(est, "decision_function"):
            raise ConfigError(f"{self.kind} has neither predict_proba nor decision_function")
        return est

    # -- using ----------------------------------------------------------------------------

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Probability of the positive class on the training (possibly sampled) scale."""
        if self.model_ is None:
            raise RuntimeError("the estimator is not fitted")
        if self.kind == "lightgbm":
            return np.asarray(self.model_.predict(X, num_iteration=self.best_iteration_))
        if hasattr(self.model_, "predict_proba"):
            return np.asarray(self.model_.predict_proba(X)[:, 1])
        z = np.asarray(self.model_.decision_function(X), dtype=np.float64)
        return 1.0 / (1.0 + np.exp(-z))

    def importances(self) -> np.ndarray | None:
        """Gain (trees) or |coefficient| (linear) per output column, or None."""
        m = self.model_
        if self.kind == "lightgbm":
            return np.asarray(m.feature_importance("gain", iteration=self.best_iteration_))
        if hasattr(m, "feature_importances_"):
            return np.asarray(m.feature_importances_, dtype=np.float64)
        if hasattr(m, "coef_"):
            return np.abs(np.asarray(m.coef_, dtype=np.float64)).ravel()
        return None

    def save(self, directory: Path) -> str:
        """Write the model in its library's own format; return the file name."""
        if self.kind == "lightgbm":
            self.model_.save_model(str(directory / "model.txt"), num_iteration=self.best_iteration_)
            return "model.txt"
        import joblib

        joblib.dump(self.model_, directory / "model.joblib", compress=3)
        return "model.joblib"

    @classmethod
    def load(cls, kind: str, path: Path, params: dict[str, Any]) -> Estimator:
        est = cls(kind, params, seed=0)
        if kind == "lightgbm":
            import lightgbm as lgb

            est.model_ = lgb.Booster(model_file=str(path))
            est.best_iteration_ = est.model_.current_iteration()
        else:
            import joblib

            est.model_ = joblib.load(path)
        return est

    def library_versions(self) -> dict[str, str]:
        out = {}
        for mod in ("lightgbm", "sklearn", "numpy", "pyarrow"):
            try:
                out[mod] = importlib.import_module(mod).__version__
            except ImportError:  # pragma: no cover - all are dependencies
                continue
        if self.kind not in ("lightgbm", "logistic"):
            root = self.kind.replace(":", ".").split(".")[0]
            with contextlib.suppress(ImportError):
                out[root] = str(getattr(importlib.import_module(root), "__version__", "?"))
        return out


def _lgb_name(name: str) -> str:
    # LightGBM rejects some JSON special characters in feature names
    return "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in name)


def load_class(path: str) -> Any:
    """``module:Class`` or ``module.Class`` → the class, with a clear error."""
    module, _, name = path.rpartition(":") if ":" in path else path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"algorithm.type {path!r}: cannot import {name!r} from {module!r} ({exc})",
            hint="use lightgbm, logistic, or module:Class of an installed estimator",
        ) from None


def make_estimator(cfg: AlgorithmConfig, *, seed: int, threads: int = 0) -> Estimator:
    """The configured estimator (unfitted); import paths are checked now."""
    if cfg.type not in ("lightgbm", "logistic"):
        load_class(cfg.type)
    return Estimator(cfg.type, dict(cfg.params), seed, threads)

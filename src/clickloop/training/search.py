"""Hyperparameter search on the validation slice (never the test slice).

optuna's TPE sampler when optuna is installed (the ``tune`` extra), plain
seeded random search otherwise; both draw from the same space and return the
same record of trials.

>>> best, trials = search(objective, SearchConfig(trials=10), "lightgbm", seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from clickloop.config.ml import RangeSpec, SearchConfig
from clickloop.errors import ConfigError, require

log = logging.getLogger(__name__)

DEFAULT_SPACES: dict[str, dict[str, RangeSpec | list[Any]]] = {
    "lightgbm": {
        "num_leaves": RangeSpec(low=15, high=255, log=True, integer=True),
        "learning_rate": RangeSpec(low=0.02, high=0.2, log=True),
        "min_data_in_leaf": RangeSpec(low=20, high=1000, log=True, integer=True),
        "feature_fraction": RangeSpec(low=0.5, high=1.0),
        "lambda_l2": RangeSpec(low=1e-3, high=30.0, log=True),
    },
    "logistic": {"C": RangeSpec(low=1e-3, high=100.0, log=True)},
}

Objective = Callable[[dict[str, Any]], float]


def space_for(cfg: SearchConfig, algorithm: str) -> dict[str, RangeSpec | list[Any]]:
    space = cfg.space or DEFAULT_SPACES.get(algorithm, {})
    if not space:
        raise ConfigError(
            f"algorithm.search needs a space for {algorithm}",
            hint="e.g. search: {space: {max_depth: {low: 2, high: 10, integer: true}}}",
        )
    return space


def _draw(rng: np.random.Generator, spec: RangeSpec | list[Any]) -> Any:
    if isinstance(spec, list):
        return spec[int(rng.integers(len(spec)))]
    if spec.log:
        v = math.exp(rng.uniform(math.log(spec.low), math.log(spec.high)))
    else:
        v = rng.uniform(spec.low, spec.high)
    return round(v) if spec.integer else v


def search(
    objective: Objective,
    cfg: SearchConfig,
    algorithm: str,
    *,
    seed: int,
    higher_is_better: bool,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run the search; return the best parameters and every trial (params, score, seconds)."""
    space = space_for(cfg, algorithm)
    method = cfg.method
    if method == "auto":
        try:
            require("optuna", "tune", feature="optuna search")
            method = "optuna"
        except ImportError:
            method = "random"
    deadline = time.monotonic() + cfg.timeout.total_seconds() if cfg.timeout else math.inf
    trials: list[dict[str, Any]] = []

    def run(params: dict[str, Any]) -> float:
        t0 = time.perf_counter()
        score = float(objective(params))
        trials.append(
            {"params": params, "score": score, "seconds": round(time.perf_counter() - t0, 3)}
        )
        log.info("search trial %d: %s → %.5f", len(trials), params, score)
        return score

    if method == "optuna":
        optuna = require("optuna", "tune", feature="optuna search")
        optuna.logging.set_verbosity(optuna.logging.WARNING)

        def suggest(trial: Any) -> float:
            params = {}
            for name, spec in space.items():
                if isinstance(spec, list):
                    params[name] = trial.suggest_categorical(name, spec)
                elif spec.integer:
                    params[name] = trial.suggest_int(
                        name, int(spec.low), int(spec.high), log=spec.log
                    )
                else:
                    params[name] = trial.suggest_float(name, spec.low, spec.high, log=spec.log)
            return run(params)

        study = optuna.create_study(
            direction="maximize" if higher_is_better else "minimize",
            sampler=optuna.samplers.TPESampler(seed=seed),
        )
        timeout = None if math.isinf(deadline) else max(deadline - time.monotonic(), 0.001)
        study.optimize(suggest, n_trials=cfg.trials, timeout=timeout)
    else:
        rng = np.random.default_rng([seed, 0x5EA7C4])
        for _ in range(cfg.trials):
            if time.monotonic() > deadline:
                break
            run({name: _draw(rng, spec) for name, spec in space.items()})
    pick = max if higher_is_better else min
    best = pick(trials, key=lambda t: t["score"])
    for t in trials:
        t["best"] = t is best
    return dict(best["params"]), trials

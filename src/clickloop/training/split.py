"""Time-based splits with a gap, and purged time-blocked folds.

Production is non-stationary, so the test slice is the *latest* share of the
examples and the model never sees anything from it. A gap of at least the
label horizon separates the slices: a training example's label is observed up
to ``within`` after it, which could otherwise peek into the test period.

>>> s = time_split(ts_us, SplitConfig(test=0.2, validation=0.1), within=timedelta(minutes=30))
>>> len(s.train) + len(s.valid) + len(s.test) + s.dropped_gap == len(ts_us)   # doctest: +SKIP
True

With ``by: kfold`` the part before the test slice is cut into ``folds``
contiguous blocks; each block is validated by a model trained on the other
blocks minus the gap on both sides (purging and embargo), so every
development example gets an out-of-fold score for threshold, calibration and
search, and the test slice stays untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from clickloop.config.ml import SplitConfig
from clickloop.errors import InvalidInputError

MIN_ROWS = 20


@dataclass
class Split:
    """Row positions of each slice (into the time-ordered examples)."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    folds: list[tuple[np.ndarray, np.ndarray]]
    gap: timedelta
    kind: str
    dropped_gap: int
    bounds: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "by": self.kind,
            "train": len(self.train),
            "validation": len(self.valid),
            "test": len(self.test),
            "folds": len(self.folds),
            "gap": str(self.gap),
            "left_out_in_gaps": self.dropped_gap,
            **self.bounds,
        }


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat().replace("+00:00", "Z")


def time_split(ts_us: np.ndarray, cfg: SplitConfig, *, within: timedelta) -> Split:
    """Split time-ordered examples (``ts_us``: int64 microseconds, ascending)."""
    n = len(ts_us)
    if n and np.any(np.diff(ts_us) < 0):
        raise ValueError("examples must be in time order")
    gap = max(cfg.gap, within)
    gap_us = int(gap / timedelta(microseconds=1))
    if cfg.test + (0 if cfg.by == "kfold" else cfg.validation) >= 0.9:
        raise InvalidInputError("split.test and split.validation leave under 10% for training")
    if n < 5 * MIN_ROWS:
        raise InvalidInputError(
            f"only {n} examples: too few to split into training, validation and test",
            hint="widen the model's time range or check its examples filter",
        )
    idx = np.arange(n)
    test_start = ts_us[min(n - 1, int(np.floor(n * (1 - cfg.test))))]
    test = idx[ts_us >= test_start]
    dev_mask = ts_us < test_start - gap_us
    bounds = {"test_start": _iso(int(test_start))}
    if cfg.by == "kfold":
        dev = idx[dev_mask]
        folds = _purged_folds(ts_us, dev, cfg.folds, gap_us)
        train, valid = dev, dev
        dropped = n - len(dev) - len(test)
    else:
        cut = int(np.floor(n * (1 - cfg.test - cfg.validation)))
        valid_start = ts_us[cut]
        valid = idx[dev_mask & (ts_us >= valid_start)]
        train = idx[ts_us < valid_start - gap_us]
        folds = [(train, valid)]
        dropped = n - len(train) - len(valid) - len(test)
        bounds["validation_start"] = _iso(int(valid_start))
    for name, part in (("training", train), ("validation", valid), ("test", test)):
        if len(part) < MIN_ROWS:
            raise InvalidInputError(
                f"the {name} slice has {len(part)} examples after leaving a {gap} gap",
                hint="use more data, a smaller gap, or other split.test / split.validation shares",
            )
    return Split(train, valid, test, folds, gap, cfg.by, dropped, bounds)


def _purged_folds(
    ts_us: np.ndarray, dev: np.ndarray, k: int, gap_us: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    blocks = np.array_split(dev, k)
    folds = []
    for block in blocks:
        lo, hi = ts_us[block[0]], ts_us[block[-1]]
        t = ts_us[dev]
        keep = (t < lo - gap_us) | (t > hi + gap_us)
        train = dev[keep]
        if len(train) < MIN_ROWS or len(block) < MIN_ROWS:
            raise InvalidInputError(
                f"a fold has too few examples ({len(train)} to train, {len(block)} to validate)",
                hint="use fewer split.folds or more data",
            )
        folds.append((train, block))
    return folds


def time_blocks(index: np.ndarray, k: int) -> list[np.ndarray]:
    """``index`` cut into ``k`` contiguous blocks (for stability checks)."""
    return [b for b in np.array_split(index, k) if len(b)]

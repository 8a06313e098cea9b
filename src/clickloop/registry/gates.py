"""Promotion gates: what a challenger must show against the champion on the same holdout.

>>> result = evaluate_gates(candidate, champion, GatesConfig(metric="roc_auc", min_gain=0.002))
>>> result.passed, [c["check"] for c in result.checks]             # doctest: +SKIP
(True, ['roc_auc gain ≥ 0.002', ...])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clickloop.config.ml import GatesConfig

HIGHER_IS_BETTER = {
    "roc_auc": True,
    "pr_auc": True,
    "log_loss": False,
    "brier": False,
    "ece": False,
    "f1": True,
    "accuracy": True,
    "precision": True,
    "recall": True,
}


@dataclass
class GateResult:
    passed: bool
    checks: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": self.checks}

    def failures(self) -> list[str]:
        return [c["detail"] for c in self.checks if not c["passed"]]


def _gain(metric: str, cand: float, champ: float) -> float:
    return cand - champ if HIGHER_IS_BETTER.get(metric, True) else champ - cand


def evaluate_gates(
    candidate: dict[str, Any],
    champion: dict[str, Any],
    cfg: GatesConfig,
    *,
    candidate_slices: dict[str, list[dict[str, Any]]] | None = None,
    champion_slices: dict[str, list[dict[str, Any]]] | None = None,
) -> GateResult:
    """Compare metric dicts measured on the same test slice; slices as ``{column: rows}``."""
    checks = []
    wanted = {cfg.metric: cfg.min_gain, **cfg.margins}
    for metric, margin in wanted.items():
        a, b = candidate.get(metric), champion.get(metric)
        if a is None or b is None:
            checks.append(
                {
                    "check": f"{metric} measured",
                    "passed": False,
                    "detail": f"{metric} is missing for the "
                    f"{'candidate' if a is None else 'champion'}",
                }
            )
            continue
        gain = _gain(metric, float(a), float(b))
        ok = gain >= margin
        checks.append(
            {
                "check": f"{metric} gain ≥ {margin:g}",
                "metric": metric,
                "candidate": a,
                "champion": b,
                "gain": gain,
                "required": margin,
                "passed": ok,
                "detail": f"{metric}: {a:.5f} vs champion {b:.5f} (gain {gain:+.5f}, "
                f"required ≥ {margin:+g})",
            }
        )
    if cfg.max_slice_regression is not None and candidate_slices and champion_slices:
        metric = "roc_auc" if cfg.metric in ("roc_auc", "pr_auc") else "log_loss"
        for column, rows in candidate_slices.items():
            ref = {r["value"]: r for r in champion_slices.get(column, [])}
            for r in rows:
                other = ref.get(r["value"])
                if (
                    other is None
                    or r["examples"] < cfg.min_slice_examples
                    or r.get(metric) is None
                    or other.get(metric) is None
                ):
                    continue
                gain = _gain(metric, float(r[metric]), float(other[metric]))
                ok = gain >= -cfg.max_slice_regression
                checks.append(
                    {
                        "check": f"slice {column}={r['value']} regression ≤ "
                        f"{cfg.max_slice_regression:g}",
                        "metric": metric,
                        "slice": f"{column}={r['value']}",
                        "candidate": r[metric],
                        "champion": other[metric],
                        "gain": gain,
                        "passed": ok,
                        "required": -cfg.max_slice_regression,
                        "detail": f"slice {column}={r['value']} ({r['examples']} examples): "
                        f"{metric} {r[metric]:.5f} vs {other[metric]:.5f} ({gain:+.5f})",
                    }
                )
    return GateResult(all(c["passed"] for c in checks), checks)

"""Configuration of what the loop computes: URL knowledge, features, models, experiments, pipelines.

These sections are *definitions* (what a feature or a model is); where things
are stored and computed lives in :mod:`clickloop.config.infra`.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from clickloop.config.base import Section
from clickloop.units import Duration, format_duration, parse_duration

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: use lowercase letters, digits and '_', "
            "starting with a letter"
        )
    return value


Name = Annotated[str, AfterValidator(_name)]


def _window(value: Any) -> str:
    if isinstance(value, str) and value.strip().lower() == "lifetime":
        return "lifetime"
    td = parse_duration(value)
    if td <= timedelta(0):
        raise ValueError("a window must be positive")
    return format_duration(td)


Window = Annotated[str, BeforeValidator(_window)]
"""A window spelled as a duration (``10m``, ``1h``, ``7d``) or ``lifetime``; kept normalised."""


def _percent(value: Any) -> Any:
    if isinstance(value, str) and value.strip().endswith("%"):
        return float(value.strip()[:-1]) / 100
    return value


Fraction = Annotated[float, BeforeValidator(_percent), Field(gt=0, lt=1)]

# -- urls ------------------------------------------------------------------------------


class UrlFieldConfig(Section):
    type: Literal["str", "int", "category"] = "str"
    dictionary: str | None = Field(None, description="name of a dictionary under urls.dictionaries")


class UrlRuleConfig(Section):
    """A declared URL template in WHATWG URL Pattern syntax."""

    pattern: str = Field(..., description="e.g. https://shop.example.com/items/:category/:item_id")
    name: str | None = None
    fields: dict[str, UrlFieldConfig] = Field(default_factory=dict)
    query: list[str] = Field(default_factory=list, description="query parameters that matter")


class UrlLearnConfig(Section):
    min_urls_per_host: int = Field(200, ge=1)
    max_category_values: int = Field(64, ge=2, description="more distinct values → id or slug")
    sample: int = Field(1_000_000, ge=1000, description="URLs sampled from the lake per run")


class UrlsConfig(Section):
    knowledge: str = Field("urls/knowledge.yaml", description="the reviewed knowledge base file")
    rules: list[UrlRuleConfig] = Field(default_factory=list)
    dictionaries: dict[str, dict[str, str]] = Field(default_factory=dict)
    tracking_params: list[str] = Field(
        default_factory=list, description="extra tracking parameters beyond utm_*, gclid, fbclid…"
    )
    learn: UrlLearnConfig = Field(default_factory=UrlLearnConfig)

    @field_validator("dictionaries", mode="before")
    @classmethod
    def _string_keys(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {
                name: {str(k): str(x) for k, x in d.items()} if isinstance(d, dict) else d
                for name, d in v.items()
            }
        return v

    @model_validator(mode="after")
    def _dictionaries_exist(self) -> UrlsConfig:
        for i, rule in enumerate(self.rules):
            for fname, f in rule.fields.items():
                if f.dictionary and f.dictionary not in self.dictionaries:
                    raise ValueError(
                        f"rules[{i}].fields.{fname}.dictionary: no dictionary named "
                        f"{f.dictionary!r} (defined: {', '.join(self.dictionaries) or 'none'})"
                    )
        return self


# -- features --------------------------------------------------------------------------

AggregateOp = Literal[
    "count", "sum", "mean", "min", "max", "first", "last",
    "distinct_count", "approx_distinct_count", "top_k", "histogram", "since_last",
]  # fmt: skip


class AggregateConfig(Section):
    op: AggregateOp
    column: str | None = Field(None, description="input column (derived, canonical or props.x)")
    windows: list[Window] = Field(default_factory=lambda: ["lifetime"])
    k: int = Field(5, ge=1, le=1000, description="top_k / histogram size")
    default: float | None = Field(None, description="value when an entity has no history")
    name: str | None = Field(None, description="override the derived feature name")

    @model_validator(mode="after")
    def _column_needed(self) -> AggregateConfig:
        if self.op not in ("count", "since_last") and not self.column:
            raise ValueError(f"op {self.op!r} needs a 'column'")
        return self


class FeatureSetConfig(Section):
    entity: str | list[str] = Field(..., description="entity key column(s), e.g. user_id")
    where: str | None = Field(None, description="event filter, e.g. type = 'page_view'")
    derive: dict[str, str] = Field(
        default_factory=dict, description="row columns: name → expression (url.category, props.x)"
    )
    aggregate: list[AggregateConfig] = Field(default_factory=list)
    ttl: Duration | None = Field(None, description="online values expire after this")
    allowed_lateness: Duration = Field(timedelta(hours=1))
    description: str = ""


# -- models ----------------------------------------------------------------------------


class LabelConfig(Section):
    """What makes an example positive: a matching outcome event within a horizon.

    ``match`` lists the keys the outcome shares with the example (``user_id``,
    ``props.item_id``, …). An example younger than ``within`` at the end of the
    data cannot be labelled yet and is excluded.
    """

    event: str = Field(..., description="filter for the outcome events, e.g. type = 'click'")
    match: list[str] = Field(default_factory=lambda: ["user_id"], min_length=1)
    within: Duration = Field(..., description="horizon after the example, e.g. 30m")
    name: str = Field("label", description="name of the label column in reports")
    attribution: Literal["last", "all"] = Field(
        "last",
        description="an outcome labels only the latest matching example before it (last), "
        "or every matching example within the horizon (all)",
    )

    @field_validator("within")
    @classmethod
    def _positive(cls, v: timedelta) -> timedelta:
        if v <= timedelta(0):
            raise ValueError("the label horizon must be positive")
        return v


class SplitConfig(Section):
    """Time-based split with a gap; ``kfold`` adds purged time-blocked folds on the dev part."""

    by: Literal["time", "kfold"] = "time"
    test: Fraction = 0.2
    validation: Fraction = 0.1
    gap: Duration = Field(
        timedelta(hours=1),
        description="examples this close before the test (or validation) start are left out; "
        "never less than the label horizon",
    )
    folds: int = Field(5, ge=2, le=20)


class SamplingConfig(Section):
    """How the *training* slice is sampled (validation and test are never sampled)."""

    negatives: float | None = Field(
        None, gt=0, le=1, description="keep this share of negatives; scores are prior-corrected"
    )
    max_examples: int | None = Field(
        None, ge=100, description="downsample training to this many rows (stratified if set)"
    )
    stratify: list[str] = Field(
        default_factory=list, description="columns whose mix max_examples preserves (and label)"
    )
    max_per_entity: int | None = Field(None, ge=1, description="cap examples per entity")
    class_weight: Literal["balanced"] | dict[int, float] | None = Field(
        None, description="weight classes instead of sampling (prior-corrected the same way)"
    )

    @model_validator(mode="after")
    def _one_way(self) -> SamplingConfig:
        if self.negatives is not None and self.class_weight is not None:
            raise ValueError("use either negatives (downsampling) or class_weight, not both")
        cw = self.class_weight
        if isinstance(cw, dict) and (set(cw) != {0, 1} or min(cw.values()) <= 0):
            raise ValueError("class_weight needs positive weights for classes 0 and 1")
        return self


class SelectionConfig(Section):
    """Feature selection: filters, embedded methods, stability, and the leakage alarm."""

    enabled: bool = True
    max_features: int | None = Field(None, ge=1)
    max_missing: float = Field(0.95, ge=0, le=1)
    min_variance: float = Field(0.0, ge=0)
    min_mutual_info: float = Field(0.0, ge=0, description="drop features below (0: report only)")
    max_correlation: float = Field(0.98, gt=0, le=1)
    l1: bool | None = Field(
        None, description="drop features an L1 logistic model zeroes (default: linear models only)"
    )
    l1_c: float = Field(0.05, gt=0, description="inverse L1 strength")
    importance: bool = Field(True, description="gain importance with a permutation check")
    min_permutation_gain: float = Field(
        0.0002, description="drop features whose permutation AUC gain is at most this"
    )
    stability_folds: int = Field(3, ge=1, le=10)
    min_stability: float = Field(0.5, ge=0, le=1, description="share of folds that must keep it")
    sample: int = Field(100_000, ge=1000, description="rows used for selection statistics")
    leakage_auc: float = Field(0.99, gt=0.5, le=1)
    allow_leaky: list[str] = Field(
        default_factory=list, description="features acknowledged as predictive on their own"
    )


class RangeSpec(Section):
    """A numeric search range: ``{low: 0.01, high: 0.3, log: true}``."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> RangeSpec:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class SearchConfig(Section):
    """Hyperparameter search on the validation slice (optuna when installed, else random)."""

    trials: int = Field(20, ge=1)
    space: dict[str, RangeSpec | list[Any]] = Field(
        default_factory=dict, description="param → range or list of choices; default per algorithm"
    )
    metric: Literal["roc_auc", "pr_auc", "log_loss"] = "roc_auc"
    method: Literal["auto", "optuna", "random"] = "auto"
    timeout: Duration | None = Field(None, description="stop searching after this long")


class AlgorithmConfig(Section):
    type: str = Field("lightgbm", description="lightgbm, logistic, or module:Class of an estimator")
    params: dict[str, Any] = Field(default_factory=dict)
    search: SearchConfig | None = None
    calibration: Literal["prior", "platt", "isotonic"] = Field(
        "prior", description="prior correction only, or also fit Platt/isotonic on validation"
    )

    @field_validator("type")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in ("lightgbm", "logistic") and not re.match(r"^[\w.]+[:.][A-Za-z_]\w*$", v):
            raise ValueError(
                f"{v!r} is not an algorithm: use lightgbm, logistic, or an import path such "
                "as sklearn.ensemble:HistGradientBoostingClassifier"
            )
        return v


class GatesConfig(Section):
    """What a challenger must show, on the same test slice, to replace the champion."""

    metric: Literal["roc_auc", "pr_auc", "log_loss", "brier"] = "roc_auc"
    min_gain: float = Field(0.0, description="required improvement of metric over the champion")
    margins: dict[str, float] = Field(
        default_factory=dict, description="other metrics' required gains (log_loss: 0 → no worse)"
    )
    max_slice_regression: float | None = Field(
        None, ge=0, description="no slice's metric may fall by more than this"
    )
    min_slice_examples: int = Field(200, ge=1, description="smaller slices are not gated")


class CrossConfig(Section):
    """Look a request value up in a list/map feature (rank, count), or compare it with a scalar."""

    feature: str = Field(..., description="a list (top_k), map (histogram) or scalar feature")
    key: str = Field(..., description="a request-time column, e.g. item__category")
    name: str | None = None


class ModelConfig(Section):
    examples: str = Field(..., description="filter for example events, e.g. type = 'impression'")
    label: LabelConfig
    entity: str = Field("user_id", description="entity key for feature sets and per-entity caps")
    features: list[str] = Field(
        default_factory=list, description="feature sets, and request.url for URL fields"
    )
    context: list[str] = Field(
        default_factory=list,
        description="request-time columns of the example event used as features (props.position)",
    )
    crosses: list[CrossConfig] = Field(default_factory=list)
    start: str | None = Field(None, description="first example time (ISO date or datetime)")
    end: str | None = Field(None, description="examples strictly before this time")
    split: SplitConfig = Field(default_factory=SplitConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    gates: GatesConfig = Field(default_factory=GatesConfig)
    slices: list[str] = Field(
        default_factory=lambda: ["host", "item__category", "user_kind"],
        description="columns reported slice by slice (missing ones are skipped)",
    )
    threshold: Literal["f1", "youden"] | float = "f1"
    seed: int = 0
    description: str = ""

    @field_validator("start", "end")
    @classmethod
    def _iso(cls, v: str | None) -> str | None:
        if v is not None:
            from datetime import datetime

            try:
                datetime.fromisoformat(v.replace("Z", "+00:00"))
            except ValueError as exc:
                raise ValueError(f"{v!r} is not an ISO date or datetime") from exc
        return v

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, v: Any) -> Any:
        if isinstance(v, float) and not 0 < v < 1:
            raise ValueError("a fixed threshold must be between 0 and 1")
        return v


# -- experiments -----------------------------------------------------------------------


class VariantConfig(Section):
    model: str = Field(..., description="model reference, e.g. ctr@champion or ctr:3")


class NamespaceConfig(Section):
    name: str
    range: tuple[float, float] = (0.0, 1.0)

    @model_validator(mode="after")
    def _ordered(self) -> NamespaceConfig:
        lo, hi = self.range
        if not 0 <= lo < hi <= 1:
            raise ValueError("range must be [lo, hi] with 0 ≤ lo < hi ≤ 1")
        return self


class MetricsConfig(Section):
    primary: str
    guardrails: list[str] = Field(default_factory=list)


class ExperimentConfig(Section):
    unit: str = "user_id"
    namespace: NamespaceConfig | None = None
    variants: dict[str, VariantConfig]
    weights: list[float] | None = None
    metrics: MetricsConfig
    alpha: float = Field(0.05, gt=0, lt=1)

    @model_validator(mode="after")
    def _weights_match(self) -> ExperimentConfig:
        if self.weights is not None:
            if len(self.weights) != len(self.variants):
                raise ValueError(
                    f"weights has {len(self.weights)} entries for {len(self.variants)} variants"
                )
            if abs(sum(self.weights) - 1) > 1e-9:
                raise ValueError(f"weights must sum to 1, not {sum(self.weights)}")
        return self


# -- pipelines -------------------------------------------------------------------------


class AlertsConfig(Section):
    slack_webhook: SecretStr | None = None


class PipelineConfig(Section):
    schedule: str | None = Field(None, description="cron expression, e.g. '0 3 * * *'")
    steps: list[str]
    retries: int = Field(0, ge=0)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)


__all__ = [
    "AggregateConfig", "AlgorithmConfig", "CrossConfig", "Duration", "ExperimentConfig",
    "FeatureSetConfig", "GatesConfig", "LabelConfig", "ModelConfig", "Name", "PipelineConfig",
    "RangeSpec", "SamplingConfig", "SearchConfig", "SelectionConfig", "SplitConfig",
    "UrlRuleConfig", "UrlsConfig", "Window",
]  # fmt: skip

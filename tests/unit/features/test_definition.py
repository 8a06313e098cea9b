"""Feature definitions: names, hops, versions, and errors that say where."""

from __future__ import annotations

import pytest

from clickloop.config import ProjectConfig
from clickloop.config.template import PROJECT_YAML
from clickloop.errors import ConfigError
from clickloop.features import define, hop_for
from clickloop.features.definition import compile_set

H = 3_600_000_000


def test_names_are_derived_systematically() -> None:
    fs = define("user_activity", entity="user_id", where="type = 'page_view'",
                derive={"category": "url.category"},
                aggregate=[{"op": "count", "windows": ["1h", "7d", "lifetime"]},
                           {"op": "distinct_count", "column": "url.item_id", "windows": ["1d"]},
                           {"op": "top_k", "column": "category", "windows": ["7d"]},
                           {"op": "sum", "column": "props.price", "windows": ["30d"]},
                           {"op": "since_last"},
                           {"op": "count", "name": "views", "windows": ["10m"]}])  # fmt: skip
    assert fs.names == [
        "user_activity__count_1h", "user_activity__count_7d", "user_activity__count",
        "user_activity__distinct_count_url_item_id_1d", "user_activity__top_k_category_7d",
        "user_activity__sum_props_price_30d", "user_activity__since_last",
        "user_activity__views_10m",
    ]  # fmt: skip
    assert fs.url_fields == {"category", "item_id"}


@pytest.mark.parametrize(("window", "hop"), [
    ("10m", "1m"), ("1h", "5m"), ("1d", "1h"), ("7d", "1h"), ("30d", "1d"), ("90m", "5m"),
    ("15s", "1s"), ("2s", "100ms"),
])  # fmt: skip
def test_hops_divide_windows_at_least_ten_times(window: str, hop: str) -> None:
    from clickloop.units import parse_duration

    w = int(parse_duration(window).total_seconds() * 1e6)
    assert hop_for(w) == int(parse_duration(hop).total_seconds() * 1e6)
    assert w % hop_for(w) == 0 and w // hop_for(w) >= 10


def test_version_changes_with_the_definition_only() -> None:
    base = {"entity": "user_id", "where": "type = 'click'",
            "aggregate": [{"op": "count", "windows": ["1d"]}]}  # fmt: skip
    v = define("c", **base).version
    assert define("c", **base, description="other words").version == v
    assert define("c", **base, ttl="2d").version == v
    assert define("c", **{**base, "where": "type  =  'click'"}).version == v  # same meaning
    assert define("c", **{**base, "where": "type = 'view'"}).version != v
    assert define("c", **{**base, "aggregate": [{"op": "count", "windows": ["2d"]}]}).version != v
    assert define("c", **base, url_version="k1").version == v  # reads no URL field
    url = {**base, "derive": {"h": "url.host"},
           "aggregate": [{"op": "distinct_count", "column": "h"}]}  # fmt: skip
    assert (
        define("c", **url, url_version="k1").version != define("c", **url, url_version="k2").version
    )


@pytest.mark.parametrize(("spec", "message"), [
    ({"entity": "user_id", "where": "tpye = 'x'", "aggregate": [{"op": "count"}]},
     "features.s.where: unknown column 'tpye'; did you mean 'type'"),
    ({"entity": "user_id", "where": "props.price", "aggregate": [{"op": "count"}]},
     "a filter must be true/false"),
    ({"entity": "user_id", "aggregate": []}, "needs at least one aggregation"),
    ({"entity": "user_id", "aggregate": [{"op": "count"}, {"op": "count"}]},
     "two aggregations produce the feature 's__count'"),
    ({"entity": "user_id", "aggregate": [{"op": "top_k", "column": "ts"}]},
     "top_k of a timestamp"),
    ({"entity": "user_id", "aggregate": [{"op": "sum", "column": "props.x + 1"}]},
     "is an expression; name a column"),
    ({"entity": "user_id", "derive": {"type": "url.host"}, "aggregate": [{"op": "count"}]},
     "cannot name a derived column"),
    ({"entity": "ts", "aggregate": [{"op": "count"}]}, "not a text column"),
    ({"entity": "user_id", "aggregate": [{"op": "sum"}]}, "needs a 'column'"),
    ({"entity": "user_id", "aggregate": [{"op": "count", "windows": ["-1h"]}]}, "aggregate.0"),
    ({"entity": "user_id", "aggregate": [{"op": "count"}], "derive": {"c": "url.colour"}},
     "unknown column 'url.colour'"),
])  # fmt: skip
def test_errors_name_the_key(spec: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        define("s", url_fields=["category", "item_id"], **spec)
    assert message in str(err.value)


def test_init_template_compiles() -> None:
    import yaml

    cfg = ProjectConfig.model_validate(yaml.safe_load(PROJECT_YAML.format(name="shop")))
    for name, fs_cfg in cfg.features.items():
        fs = compile_set(name, fs_cfg)
        assert fs.names and fs.version

"""Fixtures for feature tests: a lake built from the simulator, projects that read it."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.json as pj
import pytest
import yaml

from clickloop.events.mapping import Mapping
from clickloop.project import Project

FEATURES = {
    "user_activity": {
        "entity": "user_id",
        "where": "type = 'page_view'",
        "derive": {"category": "url.category"},
        "aggregate": [
            {"op": "count", "windows": ["1h", "1d", "7d"]},
            {"op": "distinct_count", "column": "url.item_id", "windows": ["1d", "7d"]},
            {"op": "top_k", "column": "category", "k": 3, "windows": ["7d"]},
            {"op": "histogram", "column": "category", "k": 5, "windows": ["1d"]},
            {"op": "since_last"},
            {"op": "approx_distinct_count", "column": "url", "windows": ["1d"]},
        ],
    },
    "user_clicks": {
        "entity": "user_id",
        "where": "type = 'click'",
        "aggregate": [
            {"op": "count", "windows": ["10m", "1d"]},
            {"op": "last", "column": "props.item_id"},
        ],
    },
    "user_impressions": {
        "entity": "user_id",
        "where": "type = 'impression' AND props.position <= 3",
        "aggregate": [
            {"op": "mean", "column": "props.position", "windows": ["1d"]},
            {"op": "min", "column": "props.position", "windows": ["1h"], "default": 99},
            {"op": "max", "column": "props.position", "windows": ["1h"]},
            {"op": "first", "column": "props.item_id", "windows": ["1h"]},
            {"op": "sum", "column": "props.position", "windows": ["30m"]},
        ],
    },
    "session_activity": {"entity": "session_id", "aggregate": [{"op": "count"}]},
}


def read_events(sim: Path) -> pa.Table:
    """The simulator's records as validated canonical events (duplicates kept)."""
    tables = []
    for f in sorted((sim / "events").glob("*.jsonl")):
        tables.append(Mapping().validate_table(pj.read_json(f)).events)
    return pa.concat_tables(tables)


@pytest.fixture(scope="session")
def sim_lake(sim_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lake (``raw/events/dt=…``) holding ``sim_small``'s valid events, deduplicated."""
    from clickloop.lake import Lake

    root = tmp_path_factory.mktemp("features-lake")
    lake = Lake.open(str(root))
    lake.append_events(read_events(sim_small), source="sim")
    lake.close()
    return root


def make_project(
    root: Path, lake: Path, sim: Path, features: dict | None = None, **extra: object
) -> Project:
    import orjson

    dictionaries = orjson.loads((sim / "truth" / "dictionaries.json").read_bytes())
    cfg = {
        "project": "ft",
        "lake": {"type": "local", "path": str(lake)},
        "urls": {
            "rules": [{
                "pattern": "https://shop.example.com/items/:category/:item_id",
                "fields": {"category": {"type": "category", "dictionary": "shop_categories"},
                           "item_id": {"type": "int"}},
            }],
            "dictionaries": {"shop_categories": dictionaries["shop_categories"]},
        },
        "features": FEATURES if features is None else features,
        **extra,
    }  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    (root / "clickloop.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return Project.load(root)


@pytest.fixture
def project(tmp_path: Path, sim_lake: Path, sim_small: Path) -> Project:
    return make_project(tmp_path / "proj", sim_lake, sim_small)

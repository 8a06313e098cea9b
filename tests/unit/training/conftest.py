"""Fixtures for training tests: simulator events validated into canonical tables."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.json as pajson
import pytest

from clickloop.events.mapping import Mapping
from clickloop.project import Project


def load_events(sim_dir: Path) -> pa.Table:
    """Every valid event of a simulated dataset (duplicates included, as a source sends them)."""
    mapping = Mapping()
    parts = []
    for f in sorted((sim_dir / "events").glob("*.jsonl")):
        parts.append(mapping.validate_table(pajson.read_json(f)).events)
    return pa.concat_tables(parts)


@pytest.fixture(scope="session")
def sim_events(sim_small: Path) -> pa.Table:
    return load_events(sim_small)


CTR_YAML = """\
project: t
models:
  ctr:
    examples: "type = 'impression'"
    label: {event: "type = 'click'", match: [user_id, props.item_id], within: 30m}
    context: [props.position]
    split: {by: time, test: 20%, validation: 15%, gap: 30m}
"""


@pytest.fixture
def ctr_project(tmp_path: Path) -> Project:
    (tmp_path / "clickloop.yaml").write_text(CTR_YAML)
    return Project.load(tmp_path)


def history_features(events: pa.Table, knowledge):
    """A feature function with training_set's signature, for tests that do not exercise the
    features stage: per example, the user's page views before it (count, and a histogram of
    their URL categories) — computed strictly before the example's time."""
    import duckdb
    import pyarrow.compute as pc

    pv = events.filter(pc.equal(events["type"], "page_view"))
    cats = knowledge.extract(pv["url"]).column("category")
    pv = pa.table({"user_id": pv["user_id"], "ts": pv["ts"], "cat": cats})

    def fn(project, keys: pa.Table, sets, *, entity="user_id", ts="ts") -> pa.Table:
        con = duckdb.connect()
        con.sql("SET TimeZone='UTC'")
        k = keys.append_column("_row", pa.array(range(keys.num_rows)))
        con.register("k", k)
        con.register("pv", pv)
        out = con.sql(
            """
            WITH h AS (
                SELECT k._row, pv.cat, count(*) AS n FROM k JOIN pv
                  ON pv.user_id = k.user_id AND pv.ts < k.ts AND pv.cat IS NOT NULL
                GROUP BY ALL),
            m AS (SELECT _row, map(list(cat), list(n::DOUBLE)) AS hist, sum(n) AS total
                  FROM h GROUP BY _row),
            a AS (SELECT k._row, count(pv.ts) AS views FROM k LEFT JOIN pv
                  ON pv.user_id = k.user_id AND pv.ts < k.ts GROUP BY k._row)
            SELECT a.views::DOUBLE AS hist__views, m.hist AS hist__categories
            FROM a LEFT JOIN m USING (_row) ORDER BY a._row
            """
        ).to_arrow_table()
        con.close()
        return out

    return fn


SIM_URLS = """\
urls:
  rules:
    - pattern: "https://shop.example.com/items/:category/:item_id"
      fields: {category: {type: category, dictionary: shop}, item_id: {type: int}}
    - pattern: "https://shop.example.com/c/:category"
      fields: {category: {type: category}}
  dictionaries:
    shop: {1: clothes, 2: games, 3: books, 4: electronics, 5: home, 6: sports, 7: beauty,
           8: toys}
"""


@pytest.fixture(scope="session")
def sim_medium(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pa.Table]:
    """300k records over 6 days: enough impressions for calibration to be measurable."""
    from clickloop.simulate import simulate

    out = tmp_path_factory.mktemp("sim-medium")
    simulate(out, events=300_000, days=6, seed=5, malformed=0.002)
    return out, load_events(out)


def write_project(root: Path, model_yaml: str, *, extra: str = "") -> Project:
    """A project whose clickloop.yaml holds the simulator's URL rules and one model ``ctr``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "clickloop.yaml").write_text(
        "project: t\n" + SIM_URLS + "models:\n  ctr:\n" + model_yaml + extra
    )
    return Project.load(root)


RICH_MODEL = """\
    examples: "type = 'impression'"
    label: {event: "type = 'click'", match: [user_id, props.item_id], within: 30m}
    context: [props.position]
    features: [hist, request.url]
    crosses: [{feature: hist__categories, key: item__category}]
    split: {by: time, test: 25%, validation: 20%, gap: 30m}
    algorithm: {type: lightgbm, params: {num_leaves: 15, learning_rate: 0.1, num_threads: 1}}
"""

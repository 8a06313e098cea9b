"""Point-in-time training sets from the lake: correctness, leakage, one row per input row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from clickloop.errors import ConfigError, InvalidInputError, NotFoundError, UsageError
from clickloop.events.schema import EVENT_SCHEMA
from clickloop.features import feature_names, load_sets, training_set
from clickloop.features.prepare import prepare
from clickloop.lake import open_lake
from clickloop.project import Project
from clickloop.urls import load_knowledge
from tests.unit.features.conftest import FEATURES, make_project
from tests.unit.features.oracle import expected, kinds_of, rows_of, same

TS = pa.timestamp("us", tz="UTC")


def lake_events(project: Project) -> pa.Table:
    return open_lake(project).events().to_table()


def impressions(project: Project, n: int, seed: int = 0) -> pa.Table:
    ev = lake_events(project)
    imp = ev.filter(pc.equal(ev.column("type"), "impression"))
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(imp.num_rows, size=min(n, imp.num_rows), replace=False))
    return imp.take(pa.array(pick)).select(["user_id", "session_id", "ts", "event_id"])


def test_values_match_a_naive_scan_of_the_lake(project: Project) -> None:
    examples = impressions(project, 150, seed=3)
    # shuffle: output order must follow the input, not time or entity
    examples = examples.take(pa.array(np.random.default_rng(1).permutation(examples.num_rows)))
    sets = list(FEATURES)
    out = training_set(project, examples, sets)
    assert out.num_rows == examples.num_rows
    assert out.column("event_id").equals(examples.column("event_id"))
    knowledge = load_knowledge(project)
    events = lake_events(project)
    urls = knowledge.extract(events.column("url"))
    for fs in load_sets(project, sets, knowledge=knowledge):
        rows = rows_of(fs, prepare(fs, events, urls))
        key = "session_id" if fs.entity == ("session_id",) else "user_id"
        queries = list(
            zip(
                examples.column(key).to_pylist(),
                pc.cast(examples.column("ts"), pa.int64()).to_pylist(),
                strict=True,
            )
        )
        want = expected(fs, rows, queries, kinds_of(fs))
        for name in fs.names:
            got = out.column(name).to_pylist()
            bad = [i for i, w in enumerate(want) if not same(got[i], w[name])]
            assert not bad, (
                name,
                bad[:3],
                [got[i] for i in bad[:3]],
                [want[i][name] for i in bad[:3]],
            )
    # the features actually carry signal: most example users have page views before
    assert pc.sum(pc.greater(out.column("user_activity__count_7d"), 0)).as_py() > 0.5 * out.num_rows


def test_future_events_never_leak(project: Project, tmp_path) -> None:
    """Events at or after a row's time, planted in the lake, change nothing for that row."""
    examples = impressions(project, 400, seed=5)
    # one example per user, so that events planted after one example cannot be in the past
    # of another example of the same user
    _, first = np.unique(np.array(examples.column("user_id").to_pylist()), return_index=True)
    examples = examples.take(pa.array(np.sort(first)))
    assert examples.num_rows > 30
    before = training_set(project, examples, ["user_activity", "user_clicks"])
    from clickloop.lake import Lake

    lake2 = tmp_path / "lake2"
    planted = Lake.open(str(lake2))
    planted.append_events(lake_events(project), source="copy")
    extra = []
    for i, (u, t) in enumerate(
        zip(examples.column("user_id").to_pylist(), examples.column("ts").to_pylist(), strict=True)
    ):
        for j, delta in enumerate((timedelta(0), timedelta(microseconds=1), timedelta(hours=2))):
            for typ in ("page_view", "click"):
                extra.append({"event_id": f"planted-{i}-{j}-{typ}", "ts": t + delta,
                              "received_at": t + delta, "type": typ, "user_id": u,
                              "url": "https://shop.example.com/items/3/999999",
                              "props": [("item_id", "999999")]})  # fmt: skip
    schema = pa.schema([f.with_nullable(True) for f in EVENT_SCHEMA])
    planted.append_events(pa.Table.from_pylist(extra, schema=schema), source="future")
    planted.close()
    p2 = make_project(tmp_path / "p2", lake2, _sim_of(project))
    after = training_set(p2, examples, ["user_activity", "user_clicks"])
    for name in feature_names(project, ["user_activity", "user_clicks"]):
        if name.endswith("since_last"):
            continue  # compared below: same, as floats
        assert after.column(name).equals(before.column(name)), name
    assert same(
        after.column("user_activity__since_last").to_pylist(),
        before.column("user_activity__since_last").to_pylist(),
    )


def _sim_of(project: Project):
    import yaml

    cfg = yaml.safe_load((project.root / "clickloop.yaml").read_text())
    # the conftest wrote dictionaries from the simulator; rebuild a sim dir shape for make_project
    d = project.root / "simtruth"
    (d / "truth").mkdir(parents=True, exist_ok=True)
    import orjson

    (d / "truth" / "dictionaries.json").write_bytes(orjson.dumps(cfg["urls"]["dictionaries"]))
    return d


def test_rows_without_history_are_kept_with_empty_values(project: Project) -> None:
    t0 = datetime(2026, 11, 2, 12, tzinfo=UTC)
    ev = lake_events(project)
    some_user = ev.column("user_id")[0].as_py()
    first_ts = pc.min(ev.column("ts")).as_py()
    examples = pa.table({
        "user_id": pa.array(["never-seen", None, some_user, some_user, "never-seen"]),
        "ts": pa.array([t0, t0, first_ts, None, datetime(2020, 1, 1, tzinfo=UTC)], TS),
        "label": [1, 0, 1, 0, 1],
    })  # fmt: skip
    out = training_set(project, examples, ["user_activity", "user_impressions"])
    assert out.num_rows == 5
    assert out.column("label").to_pylist() == [1, 0, 1, 0, 1]
    assert out.column("user_activity__count_7d").to_pylist() == [0] * 5
    assert out.column("user_activity__since_last").to_pylist() == [None] * 5
    assert out.column("user_activity__top_k_category_7d").to_pylist() == [[]] * 5
    assert out.column("user_activity__histogram_category_1d").to_pylist() == [[]] * 5
    assert out.column("user_impressions__min_props_position_1h").to_pylist() == [99.0] * 5
    assert out.column("user_impressions__max_props_position_1h").to_pylist() == [None] * 5
    assert out.column("user_impressions__sum_props_position_30m").to_pylist() == [0.0] * 5


def test_ties_at_equal_timestamps(project: Project) -> None:
    """Examples stamped exactly like events, several per entity and time: none dropped."""
    ev = lake_events(project)
    pv = ev.filter(pc.equal(ev.column("type"), "page_view")).slice(0, 40)
    ex = pa.concat_tables([pv.select(["user_id", "ts"])] * 3)  # three rows per (user, ts)
    out = training_set(project, ex, ["user_activity"])
    assert out.num_rows == 120
    counts = out.column("user_activity__count_7d").to_pylist()
    assert counts[:40] == counts[40:80] == counts[80:]
    # an example at exactly an event's time does not see that event
    after = training_set(project, pa.table({
        "user_id": pv.column("user_id"),
        "ts": pc.add(pc.cast(pv.column("ts"), pa.int64()), 1).cast(TS),
    }), ["user_activity"])  # fmt: skip
    more = np.array(after.column("user_activity__count_7d").to_pylist()) - np.array(counts[:40])
    assert (more >= 1).all()


def test_partitioned_runs_give_the_same_answer(project: Project) -> None:
    examples = impressions(project, 300, seed=9)
    whole = training_set(project, examples, ["user_activity", "user_clicks"])
    parts = training_set(
        project, examples, ["user_activity", "user_clicks"], memory_rows=1500, memory_limit="256MB"
    )
    assert parts.equals(whole)


def test_bad_inputs_say_what_is_wrong(project: Project) -> None:
    ex = pa.table({"uid": ["u1"], "ts": pa.array([datetime(2026, 11, 2, tzinfo=UTC)], TS)})
    with pytest.raises(InvalidInputError, match="no entity column 'user_id'"):
        training_set(project, ex, ["user_clicks"])
    ex2 = pa.table({"user_id": ["u1"], "ts": ["2026-11-02"]})
    with pytest.raises(InvalidInputError, match="not a timestamp"):
        training_set(project, ex2, ["user_clicks"])
    with pytest.raises(NotFoundError, match="no feature set named 'nope'"):
        training_set(project, ex.rename_columns(["user_id", "ts"]), ["nope"])
    with pytest.raises(UsageError, match="already have columns"):
        training_set(
            project,
            ex.rename_columns(["user_id", "ts"]).append_column(
                "user_clicks__count_1d", pa.array([1])
            ),
            ["user_clicks"],
        )


def test_unknown_url_field_is_a_config_error(tmp_path, sim_lake, sim_small) -> None:
    p = make_project(tmp_path / "p", sim_lake, sim_small, features={
        "s": {"entity": "user_id", "derive": {"c": "url.colour"},
              "aggregate": [{"op": "distinct_count", "column": "c"}]}})  # fmt: skip
    ex = pa.table({"user_id": ["u1"], "ts": pa.array([datetime(2026, 11, 2, tzinfo=UTC)], TS)})
    with pytest.raises(ConfigError, match=r"unknown column 'url\.colour'"):
        training_set(p, ex, ["s"])


def test_backfill_snapshots_equal_point_in_time_values(project: Project) -> None:
    from clickloop.features import backfill
    from clickloop.features.offline import read_snapshot, snapshot_files

    start, end = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 4, tzinfo=UTC)
    res = backfill(project, ["user_activity", "user_clicks"], start=start, end=end,
                   every=timedelta(hours=12), memory_rows=2000)  # fmt: skip
    assert [len(r.snapshots) for r in res] == [6, 6]
    fs = load_sets(project, ["user_activity"])[0]
    assert len(snapshot_files(project, fs)) == 6
    day2 = datetime(2026, 11, 2, 12, tzinfo=UTC)
    snap = read_snapshot(project, fs, day2).sort_by("entity")
    assert snap.num_rows > 50
    assert set(pc.unique(snap.column("_as_of")).to_pylist()) == {day2}
    ex = pa.table({"user_id": snap.column("entity"),
                   "ts": pa.array([day2] * snap.num_rows, TS)})  # fmt: skip
    want = training_set(project, ex, ["user_activity"])
    for name in fs.names:
        if name.endswith("since_last"):
            assert same(snap.column(name).to_pylist(), want.column(name).to_pylist())
        else:
            assert snap.column(name).to_pylist() == want.column(name).to_pylist(), name
    # re-running a range replaces its snapshots instead of adding to them
    backfill(project, ["user_activity"], start=start, end=end, every=timedelta(hours=12))
    assert read_snapshot(project, fs, day2).num_rows == snap.num_rows


def test_partition_of_a_key_is_the_same_as_its_rows(project: Project) -> None:
    """Many keys (DuckDB scans them in parallel): each lands in its rows' partition."""
    from clickloop.features.batch import _partitions
    from clickloop.features.source import connect

    keys = pa.array([f"u{i % 50_000:07d}" for i in range(400_000)])
    con = connect()
    got = _partitions(con, keys, 3)
    con.register("t", pa.table({"k": keys}))
    want = {k: p for k, p in con.sql("SELECT k, hash(k) % 3 AS p FROM t").fetchall()}
    assert got.tolist() == [want[k] for k in keys.to_pylist()]

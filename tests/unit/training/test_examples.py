from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from clickloop.errors import ConfigError, InvalidInputError
from clickloop.events.schema import EVENT_SCHEMA
from clickloop.project import Project
from clickloop.training.examples import build_examples
from clickloop.training.exprs import to_sql

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def events(rows: list[tuple]) -> pa.Table:
    """rows: (event_id, minutes after T0, type, user, item, position)."""
    cols: dict[str, list] = {f: [] for f in EVENT_SCHEMA.names}
    for eid, minutes, typ, user, item, pos in rows:
        ts = T0 + timedelta(minutes=minutes)
        cols["event_id"].append(eid)
        cols["ts"].append(ts)
        cols["received_at"].append(ts)
        cols["type"].append(typ)
        cols["user_id"].append(user)
        cols["session_id"].append(f"s-{user}")
        cols["url"].append("https://Shop.example.com/items/1/2")
        cols["referrer"].append(None)
        props = [("item_id", item)]
        if pos is not None:
            props.append(("position", str(pos)))
        cols["props"].append(props)
    return pa.table(cols, schema=EVENT_SCHEMA)


def test_props_references_become_map_lookups_outside_literals():
    assert to_sql("props.item_id = 'props.x'") == "props['item_id'] = 'props.x'"


def test_labels_follow_the_horizon_and_keys(ctr_project: Project):
    t = events(
        [
            ("i1", 0, "impression", "u1", "a", 1),
            ("c1", 10, "click", "u1", "a", 1),  # same user, same item, within 30m → positive
            ("i2", 0, "impression", "u1", "b", 2),  # clicked item differs → negative
            ("i3", 0, "impression", "u2", "a", 1),  # other user's click doesn't count
            ("i4", 100, "impression", "u3", "z", 3),
            ("c4", 140, "click", "u3", "z", 3),  # 40 minutes later: past the horizon
            ("i5", 200, "impression", "u4", "q", 1),
            ("i5", 200, "impression", "u4", "q", 1),  # duplicate delivery: one example
            ("late", 590, "impression", "u5", "q", 1),  # within 30m of data end: unlabelled
            ("pv", 600, "page_view", "u6", "-", None),
        ]
    )
    ex = build_examples(ctr_project, "ctr", events=t)
    got = dict(zip(ex.table["example_id"].to_pylist(), ex.table["label"].to_pylist(), strict=True))
    assert got == {"i1": 1, "i2": 0, "i3": 0, "i4": 0, "i5": 0}
    assert ex.excluded_unlabelled == 1 and ex.duplicates == 1
    assert ex.table["host"].to_pylist()[0] == "shop.example.com"
    assert ex.table["ctx__position"].to_pylist()[:2] == ["1", "2"]
    assert ex.table.schema.field("ts").type == pa.timestamp("us", tz="UTC")


def test_user_kind_marks_returning_users(ctr_project: Project):
    t = events(
        [
            ("pv0", 0, "page_view", "u1", "-", None),
            ("i1", 1, "impression", "u1", "a", 1),
            ("pv9", 300, "page_view", "u9", "-", None),
        ]
    )
    # u1's second session starts later: a returning user
    later = events([("i2", 200, "impression", "u1", "b", 1)])
    later = later.set_column(5, "session_id", pa.array(["s-u1-2"]))
    ex = build_examples(ctr_project, "ctr", events=pa.concat_tables([t, later]))
    kinds = dict(
        zip(ex.table["example_id"].to_pylist(), ex.table["user_kind"].to_pylist(), strict=True)
    )
    assert kinds == {"i1": "new", "i2": "returning"}


def test_a_bad_filter_names_the_key(ctr_project: Project):
    cfg = ctr_project.config.models["ctr"].model_copy(update={"examples": "tpye = 'impression'"})
    with pytest.raises(
        ConfigError, match=r"examples: .tpye = 'impression'. is not a valid event filter.*tpye"
    ):
        build_examples(ctr_project, cfg, events=events([("i", 0, "impression", "u", "a", 1)]))
    with pytest.raises(ConfigError, match="no model named 'nope'"):
        build_examples(ctr_project, "nope", events=events([]))


def test_empty_range_is_a_clear_error(ctr_project: Project):
    with pytest.raises(InvalidInputError, match="no events in the training range"):
        build_examples(ctr_project, "ctr", events=events([]))


def test_simulator_labels_match_the_truth_rate(ctr_project: Project, sim_events, sim_small):
    import json

    truth = json.loads((sim_small / "truth" / "labels.json").read_text())["click"]
    ex = build_examples(ctr_project, "ctr", events=sim_events)
    y = ex.labels
    # the simulator's clicks follow within 20 minutes, so a 30-minute horizon finds all of them
    assert abs(y.mean() - truth["rate"]) < 0.1 * truth["rate"]
    ts = pc.cast(ex.table["ts"], pa.int64()).to_numpy()
    assert np.all(np.diff(ts) >= 0)
    again = build_examples(ctr_project, "ctr", events=sim_events)
    assert again.fingerprint == ex.fingerprint

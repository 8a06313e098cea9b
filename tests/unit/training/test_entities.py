"""Feature sets keyed by other entities than the model's: items (props.item_id), sessions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from clickloop.errors import ConfigError, InvalidInputError
from clickloop.lake import open_lake
from clickloop.project import Project
from clickloop.training import build_examples
from clickloop.training.join import entity_features, join_features

YAML = """\
project: t
features:
  user_views:
    entity: user_id
    where: "type = 'page_view'"
    aggregate: [{op: count, windows: [1d]}]
  item_impressions:
    entity: props.item_id
    where: "type = 'impression'"
    aggregate: [{op: count, windows: [1d, lifetime]}]
  session_views:
    entity: session_id
    where: "type = 'page_view'"
    aggregate: [{op: count, windows: [lifetime]}]
models:
  ctr:
    examples: "type = 'impression'"
    label: {event: "type = 'click'", match: [user_id, props.item_id], within: 30m}
    features: [user_views, item_impressions, session_views]
    split: {by: time, test: 20%, validation: 15%, gap: 30m}
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, sim_events: pa.Table) -> Project:
    root: Path = tmp_path_factory.mktemp("entities")
    (root / "clickloop.yaml").write_text(YAML)
    p = Project.load(root)
    lake = open_lake(p)
    lake.append_events(sim_events, source="sim")
    lake.close()
    return p


def _brute_count(events: pa.Table, key: str, values: list[str | None], times: np.ndarray,
                 kind: str, window_us: int | None) -> list[int]:  # fmt: skip
    """Distinct events of ``kind`` with the same key strictly before each time, in the window
    as the features stage defines it: ``floor(T - w, hop) <= ts < T``."""
    from clickloop.features import hop_for

    ev = events.filter(pc.equal(events["type"], kind))
    if key.startswith("props."):
        keys = pc.map_lookup(ev["props"], key.removeprefix("props."), "first")
    else:
        keys = ev[key]
    ids = ev["event_id"].to_pylist()
    ts = ev["ts"].cast(pa.int64()).to_numpy()
    by: dict[str, dict[str, int]] = {}
    for k, i, t in zip(keys.to_pylist(), ids, ts, strict=True):
        if k is not None:
            by.setdefault(k, {}).setdefault(i, int(t))
    out = []
    for v, t in zip(values, times, strict=True):
        seen = by.get(v, {}) if v is not None else {}
        if window_us is None:
            lo = -(2**62)
        else:
            hop = hop_for(window_us)
            lo = (int(t) - window_us) // hop * hop
        out.append(sum(1 for s in seen.values() if lo <= s < int(t)))
    return out


def test_item_and_session_sets_join_on_the_examples_own_keys(project, sim_events):
    ex = build_examples(project, "ctr").table
    assert {"key__item_id", "session_id"} <= set(ex.column_names)
    table, candidates, _ = join_features(project, project.config.models["ctr"], ex)
    assert table.num_rows == ex.num_rows
    assert {"item_impressions__count_1d", "session_views__count"} <= set(candidates)
    rng = np.random.default_rng(3)
    rows = np.sort(rng.choice(ex.num_rows, 150, replace=False))
    sample = table.take(pa.array(rows))
    times = sample["ts"].cast(pa.int64()).to_numpy()
    day = 86_400_000_000
    items = sample["key__item_id"].to_pylist()
    assert sample["item_impressions__count_1d"].to_pylist() == _brute_count(
        sim_events, "props.item_id", items, times, "impression", day
    )
    assert sample["item_impressions__count"].to_pylist() == _brute_count(
        sim_events, "props.item_id", items, times, "impression", None
    )
    sessions = sample["session_id"].to_pylist()
    assert sample["session_views__count"].to_pylist() == _brute_count(
        sim_events, "session_id", sessions, times, "page_view", None
    )
    # popular items do differ: the feature carries information
    assert len(set(sample["item_impressions__count"].to_pylist())) > 10


def test_scoring_requests_take_the_item_key_from_their_props(project):
    ex = build_examples(project, "ctr").table.slice(0, 300)
    sets = ["user_views", "item_impressions"]
    from_examples = entity_features(project, sets, "user_id", ex)
    # a request as a client sends it: user, time and a props map, no key__ column
    props = pa.array(
        [[("item_id", v)] if v is not None else [] for v in ex["key__item_id"].to_pylist()],
        pa.map_(pa.string(), pa.string()),
    )
    requests = pa.table({"user_id": ex["user_id"], "ts": ex["ts"], "props": props})
    assert entity_features(project, sets, "user_id", requests).equals(from_examples)
    with pytest.raises(InvalidInputError, match=r"keyed by props.item_id.*no 'props.item_id'"):
        entity_features(project, sets, "user_id", requests.drop(["props"]))


def test_a_composite_key_cannot_be_joined_to_a_model(tmp_path: Path):
    (tmp_path / "clickloop.yaml").write_text(
        YAML.replace("entity: session_id", "entity: [session_id, user_id]")
    )
    p = Project.load(tmp_path)
    with pytest.raises(ConfigError, match="composite key"):
        build_examples(p, "ctr", events=pa.table({"x": [1]}))

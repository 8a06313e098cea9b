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

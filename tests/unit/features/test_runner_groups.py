"""A feature stream sharing its group: sets the bus does not partition by are flagged."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from clickloop.features.runner import StreamRunner
from clickloop.project import Project

YAML = """\
project: g
bus: {type: local, partitions: 4}
features:
  users:
    entity: user_id
    aggregate: [{op: count, windows: [1h]}]
  sessions:
    entity: session_id
    aggregate: [{op: count, windows: [lifetime]}]
  items:
    entity: props.item_id
    aggregate: [{op: count, windows: [1h]}]
"""


class Member:
    """A consumer holding the given partitions of ``events``."""

    def __init__(self, partitions: list[int]) -> None:
        self.partitions = partitions

    def assignment(self) -> list[tuple[str, int]]:
        return [("events", p) for p in self.partitions]


@pytest.fixture
def runner(tmp_path: Path):
    (tmp_path / "clickloop.yaml").write_text(YAML)
    r = StreamRunner(Project.load(tmp_path), bootstrap="none")
    r.bus.producer().publish("events", [(b"u", b"{}")])  # creates the topic
    yield r
    r.close()


def test_a_member_with_some_partitions_warns_once_about_item_keyed_sets(runner, caplog):
    caplog.set_level(logging.WARNING, "clickloop.features.runner")
    runner._check_assignment(Member([0, 1, 2, 3]))  # alone in the group: complete values
    assert not caplog.records
    runner._check_assignment(Member([0, 2]))
    runner._check_assignment(Member([0, 2]))  # the same assignment: said once
    (record,) = caplog.records
    assert "holds 2 of 4 partitions" in record.message
    assert "items" in record.message and "users" not in record.message.split("sets")[1]
    assert "sessions" not in record.message  # a session's events are one user's
    runner._check_assignment(Member([1]))  # a new assignment is reported again
    assert len(caplog.records) == 2

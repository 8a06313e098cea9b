"""`clickloop features get`: which sets a key is looked up in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clickloop.cli.app import main

YAML = """\
project: g
features:
  users:
    entity: user_id
    aggregate: [{op: count, windows: [1h]}]
  clicks:
    entity: user_id
    where: "type = 'click'"
    aggregate: [{op: count, windows: [1d]}]
  items:
    entity: props.item_id
    aggregate: [{op: count, windows: [1h]}]
"""


def test_a_key_is_looked_up_in_the_sets_keyed_like_the_first_unless_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    (tmp_path / "clickloop.yaml").write_text(YAML)
    assert main(["--json", "-p", str(tmp_path), "features", "get", "u1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["feature_sets"] == ["users", "clicks"]  # not the item-keyed set
    assert main(["--json", "-p", str(tmp_path), "features", "get", "42", "--set", "items"]) == 0
    assert json.loads(capsys.readouterr().out)["feature_sets"] == ["items"]

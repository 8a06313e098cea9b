"""Fixtures for the lake's tests: a lake on each filesystem the code must not care about."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from clickloop.lake import Lake


@pytest.fixture(params=["local", "memory"])
def lake(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Lake]:
    root = str(tmp_path / "lake") if request.param == "local" else f"memory://{uuid.uuid4().hex}"
    lk = Lake.open(root)
    yield lk
    lk.close()

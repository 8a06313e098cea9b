"""Shared fixtures. Real servers are started once per session, only when a test asks."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from clickloop.testing.servers import KafkaServer, PostgresServer, RedisServer

settings.register_profile(
    "ci", deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None, max_examples=30)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _no_clickloop_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never inherit CLICKLOOP_* overrides from the developer's shell."""
    for var in list(os.environ):
        if var.startswith("CLICKLOOP_"):
            monkeypatch.delenv(var)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def kafka_server() -> Iterator[KafkaServer]:
    with KafkaServer() as server:
        yield server


@pytest.fixture(scope="session")
def sim_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small simulated dataset (JSONL) shared read-only by many tests."""
    from clickloop.simulate import simulate

    out = tmp_path_factory.mktemp("sim-small")
    simulate(out, events=30_000, days=3, seed=11, malformed=0.01)
    return out

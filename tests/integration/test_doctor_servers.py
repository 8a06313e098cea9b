"""doctor against real servers started by the harness."""

from pathlib import Path

import pytest

from clickloop.ops.doctor import diagnose
from clickloop.project import Project

pytestmark = pytest.mark.integration


def test_doctor_reaches_real_kafka_redis_and_postgres(
    tmp_path: Path, kafka_server, redis_server, postgres_server
):
    (tmp_path / "clickloop.yaml").write_text(
        "bus: {type: kafka, bootstrap: '${KB}'}\n"
        "stores:\n  online: {type: redis, url: '${RU}'}\n"
        "  metadata: {type: postgres, url: '${PU}'}\n"
    )
    env = {"KB": kafka_server.bootstrap, "RU": redis_server.url, "PU": postgres_server.url}
    report = diagnose(Project.load(tmp_path, env=env))
    by = {c.component: c for c in report.checks}
    assert report.ok, report.to_dict()
    assert by["bus"].backend == "kafka" and "broker" in by["bus"].detail
    assert by["online store"].detail.startswith("Redis ")
    assert (
        by["metadata"].detail.startswith("PostgreSQL 15") or "PostgreSQL" in by["metadata"].detail
    )
    assert postgres_server.password not in by["metadata"].detail

"""One contract for every registry backend: SQLite (embedded) and PostgreSQL (real server)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from clickloop.errors import ConflictError, NotFoundError, UsageError
from clickloop.registry import ArtifactStore, Registry, parse_ref
from clickloop.registry.sql import SqlRegistry


def _artifact(tmp: Path, tag: str) -> Path:
    d = tmp / f"art-{tag}-{uuid.uuid4().hex[:6]}"
    d.mkdir()
    (d / "model.txt").write_text(f"trees for {tag}\n")
    (d / "model.json").write_text(json.dumps({"tag": tag}))
    return d


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    store = ArtifactStore(str(tmp_path / "lake" / "artifacts"))
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'metadata.sqlite'}"
    else:
        server = request.getfixturevalue("postgres_server")
        admin = server.url.replace("postgresql://", "postgresql+psycopg://")
        name = f"reg_{uuid.uuid4().hex[:10]}"
        engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
        with engine.connect() as c:
            c.execute(sa.text(f"CREATE DATABASE {name}"))
        engine.dispose()
        url = admin.rsplit("/", 1)[0] + "/" + name
    reg = SqlRegistry(url, store)
    yield reg
    reg.close()


def test_versions_are_numbered_from_one_with_their_records(registry: Registry, tmp_path: Path):
    a = registry.create_version(
        "ctr",
        _artifact(tmp_path, "a"),
        algorithm="lightgbm",
        fingerprint="f1",
        lineage={"data": {"rows": 10}},
        metrics={"test": {"roc_auc": 0.7}},
        params={"num_leaves": 31},
    )
    b = registry.create_version(
        "ctr",
        _artifact(tmp_path, "b"),
        algorithm="logistic",
        fingerprint="f2",
        lineage={},
        metrics={},
        params={},
    )
    other = registry.create_version(
        "cvr",
        _artifact(tmp_path, "c"),
        algorithm="lightgbm",
        fingerprint="f3",
        lineage={},
        metrics={},
        params={},
    )
    assert (a.version, b.version, other.version) == (1, 2, 1)
    got = registry.get_version("ctr", 1)
    assert got.lineage == {"data": {"rows": 10}} and got.metrics["test"]["roc_auc"] == 0.7
    assert got.params == {"num_leaves": 31} and got.fingerprint == "f1"
    assert [v.version for v in registry.list_versions("ctr")] == [1, 2]
    listing = {m["model"]: m for m in registry.list_models()}
    assert listing["ctr"]["versions"] == 2 and listing["ctr"]["latest"] == 2


def test_artifacts_round_trip_byte_for_byte(registry: Registry, tmp_path: Path):
    src = _artifact(tmp_path, "x")
    mv = registry.create_version(
        "ctr", src, algorithm="lightgbm", fingerprint="", lineage={}, metrics={}, params={}
    )
    path = registry.download(mv, tmp_path / "dl")
    assert (path / "model.txt").read_bytes() == (src / "model.txt").read_bytes()
    assert not list((tmp_path / "lake" / "artifacts").rglob("*.partial"))


def test_aliases_resolve_and_keep_their_history(registry: Registry, tmp_path: Path):
    for tag in "abc":
        registry.create_version(
            "ctr",
            _artifact(tmp_path, tag),
            algorithm="lightgbm",
            fingerprint="",
            lineage={},
            metrics={},
            params={},
        )
    with pytest.raises(NotFoundError, match="no alias 'champion'"):
        registry.resolve("ctr@champion")
    registry.set_alias("ctr", "champion", 1, reason="first")
    registry.set_alias("ctr", "challenger", 3)
    assert registry.resolve("ctr").version == 1
    assert registry.resolve("ctr@challenger").version == 3
    assert registry.resolve("ctr:2").version == 2
    assert registry.get_version("ctr", 1).aliases == ["champion"]
    registry.set_alias("ctr", "champion", 2)
    registry.set_alias("ctr", "champion", 3)
    kinds = [(e.kind, e.version, e.previous) for e in registry.history("ctr", "champion")]
    assert kinds == [("promote", 1, None), ("promote", 2, 1), ("promote", 3, 2)]


def test_rollback_unwinds_promotions_one_at_a_time(registry: Registry, tmp_path: Path):
    for tag in "abc":
        registry.create_version(
            "ctr",
            _artifact(tmp_path, tag),
            algorithm="lightgbm",
            fingerprint="",
            lineage={},
            metrics={},
            params={},
        )
    for v in (1, 2, 3):
        registry.set_alias("ctr", "champion", v)
    registry.rollback("ctr")
    assert registry.aliases("ctr")["champion"] == 2
    registry.rollback("ctr")
    assert registry.aliases("ctr")["champion"] == 1
    with pytest.raises(ConflictError, match="no earlier version"):
        registry.rollback("ctr")


def test_missing_things_are_named(registry: Registry, tmp_path: Path):
    with pytest.raises(NotFoundError, match=r"no version of .nope. is registered"):
        registry.get_version("nope", 1)
    registry.create_version(
        "ctr",
        _artifact(tmp_path, "a"),
        algorithm="lightgbm",
        fingerprint="",
        lineage={},
        metrics={},
        params={},
    )
    with pytest.raises(NotFoundError, match="no version 7"):
        registry.set_alias("ctr", "champion", 7)
    with pytest.raises(NotFoundError, match="no alias 'challenger'"):
        registry.remove_alias("ctr", "challenger")


def test_metrics_can_be_amended(registry: Registry, tmp_path: Path):
    mv = registry.create_version(
        "ctr",
        _artifact(tmp_path, "a"),
        algorithm="lightgbm",
        fingerprint="",
        lineage={},
        metrics={"test": {"roc_auc": 0.7}},
        params={},
    )
    registry.update_metrics("ctr", mv.version, {"comparison": {"champion": 1}})
    assert registry.get_version("ctr", 1).metrics == {
        "test": {"roc_auc": 0.7},
        "comparison": {"champion": 1},
    }


def test_concurrent_registrations_get_distinct_numbers(registry: Registry, tmp_path: Path):
    arts = [_artifact(tmp_path, str(i)) for i in range(6)]
    got: list[int] = []
    errors: list[BaseException] = []

    def work(p: Path) -> None:
        try:
            mv = registry.create_version(
                "ctr", p, algorithm="lightgbm", fingerprint="", lineage={}, metrics={}, params={}
            )
            got.append(mv.version)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(p,)) for p in arts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(got) == [1, 2, 3, 4, 5, 6]


def test_references_parse_or_say_how_to_write_them():
    assert parse_ref("ctr:3").version == 3
    assert parse_ref("ctr").alias == "champion"
    assert parse_ref("champion", default_model="ctr").model == "ctr"
    with pytest.raises(UsageError, match=r"MODEL:VERSION"):
        parse_ref("ctr:x")

"""``clickloop doctor``: which backends are configured, and can each be reached?

Each check is small and bounded in time (a few seconds at most), reports
``ok``, ``warn`` or ``fail`` with a one-line detail, and never prints secrets.

>>> from clickloop.project import Project
>>> report = diagnose(Project.load("/srv/shop"))          # doctest: +SKIP
>>> report.ok
True
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

from clickloop.config.base import reveal
from clickloop.config.infra import (
    CollectorSourceConfig,
    FilesSourceConfig,
    FsspecLakeConfig,
    KafkaBusConfig,
    PostgresMetadataConfig,
    RedisOnlineConfig,
)
from clickloop.logs import redact
from clickloop.project import Project, is_url

Status = Literal["ok", "warn", "fail"]
TIMEOUT_S = 3.0

EXTRAS = {
    "kafka": "confluent_kafka",
    "redis": "redis",
    "postgres": "psycopg",
    "beam": "apache_beam",
    "s3": "s3fs",
    "gcs": "gcsfs",
    "mlflow": "mlflow",
}


@dataclass
class Check:
    component: str
    backend: str
    status: Status
    detail: str


@dataclass
class Report:
    project: str
    root: str
    config: str | None
    checks: list[Check] = field(default_factory=list)
    extras: dict[str, bool] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    def to_dict(self) -> dict[str, object]:
        return {
            "project": self.project,
            "root": self.root,
            "config": self.config,
            "ok": self.ok,
            "checks": [asdict(c) for c in self.checks],
            "extras": self.extras,
        }


def diagnose(project: Project) -> Report:
    cfg = project.config
    report = Report(
        project.name, str(project.root), str(project.config_path) if project.config_path else None
    )
    report.extras = {
        name: importlib.util.find_spec(mod) is not None for name, mod in EXTRAS.items()
    }

    def run(component: str, backend: str, fn: Callable[[], str]) -> None:
        try:
            detail = fn()
            status: Status = "warn" if detail.startswith("warning: ") else "ok"
            report.checks.append(
                Check(component, backend, status, detail.removeprefix("warning: "))
            )
        except Exception as exc:  # a process edge: every failure becomes a report line
            report.checks.append(Check(component, backend, "fail", redact(_one_line(exc))))

    run("home", "local", lambda: _writable(project.home))
    bus = cfg.bus
    if isinstance(bus, KafkaBusConfig):
        run("bus", "kafka", lambda: _kafka(bus))
    else:
        run(
            "bus",
            "local",
            lambda: _writable(
                project.resolve_path(bus.path) if bus.path else project.state_path("bus")
            ),
        )
    lake = cfg.lake
    if isinstance(lake, FsspecLakeConfig):
        run("lake", "fsspec", lambda: _fsspec(lake.root, reveal(lake.storage_options)))
    else:
        run(
            "lake",
            "local",
            lambda: _writable(
                project.resolve_path(lake.path) if lake.path else project.state_path("lake")
            ),
        )
    online = cfg.stores.online
    if isinstance(online, RedisOnlineConfig):
        run("online store", "redis", lambda: _redis(online.url.get_secret_value()))
    else:
        run(
            "online store",
            "sqlite",
            lambda: _sqlite(
                project.resolve_path(online.path)
                if online.path
                else project.state_path("online.sqlite")
            ),
        )
    meta = cfg.stores.metadata
    if isinstance(meta, PostgresMetadataConfig):
        run("metadata", "postgres", lambda: _postgres(meta.url.get_secret_value()))
    else:
        run(
            "metadata",
            "sqlite",
            lambda: _sqlite(
                project.resolve_path(meta.path)
                if meta.path
                else project.state_path("metadata.sqlite")
            ),
        )
    for name, src in cfg.sources.items():
        if isinstance(src, FilesSourceConfig):
            run(f"source {name}", "files", partial(_files, project, src))
        elif isinstance(src, CollectorSourceConfig):
            run(f"source {name}", "collector", partial(_collector, src))
    return report


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def _writable(path: Path) -> str:
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-"):
        pass
    return f"writable: {path}"


def _sqlite(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=TIMEOUT_S)
    try:
        mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        version = con.execute("select sqlite_version()").fetchone()[0]
    finally:
        con.close()
    return f"SQLite {version} ({mode}) at {path}"


def _kafka(bus: KafkaBusConfig) -> str:
    from clickloop.errors import require

    kafka = require("confluent_kafka.admin", "kafka", feature="the Kafka bus")
    conf: dict[str, object] = {
        "bootstrap.servers": bus.bootstrap,
        "security.protocol": bus.security_protocol,
        "socket.timeout.ms": int(TIMEOUT_S * 1000),
    }
    if bus.sasl_mechanism:
        conf["sasl.mechanism"] = bus.sasl_mechanism
    if bus.sasl_username:
        conf["sasl.username"] = bus.sasl_username
    if bus.sasl_password:
        conf["sasl.password"] = bus.sasl_password.get_secret_value()
    conf.update(reveal(bus.client))
    meta = kafka.AdminClient(conf).list_topics(timeout=TIMEOUT_S)
    return f"{len(meta.brokers)} broker(s) at {bus.bootstrap}, {len(meta.topics)} topic(s)"


def _redis(url: str) -> str:
    from clickloop.errors import require

    redis = require("redis", "redis", feature="the Redis online store")
    client = redis.Redis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)
    try:
        client.ping()
        version = client.info("server").get("redis_version", "?")
    finally:
        client.close()
    return f"Redis {version} at {redact(url)}"


def _postgres(url: str) -> str:
    from clickloop.errors import require

    require("psycopg", "postgres", feature="the PostgreSQL metadata store")
    import sqlalchemy as sa

    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    engine = sa.create_engine(url, connect_args={"connect_timeout": int(TIMEOUT_S)})
    try:
        with engine.connect() as con:
            version = con.execute(sa.text("show server_version")).scalar()
    finally:
        engine.dispose()
    return f"PostgreSQL {version} at {redact(url)}"


def _fsspec(root: str, options: dict[str, object]) -> str:
    import fsspec

    fs, path = fsspec.core.url_to_fs(root, **options)
    fs.makedirs(path, exist_ok=True)
    return f"reachable: {root}"


def _files(project: Project, src: FilesSourceConfig) -> str:
    paths = [src.path] if isinstance(src.path, str) else src.path
    if any(is_url(p) for p in paths):
        import fsspec

        found = sum(len(fsspec.open_files(p, **reveal(src.storage_options))) for p in paths)
    else:
        found = 0
        for p in paths:
            full = project.resolve(p)
            found += (
                len(glob.glob(full))
                if any(ch in full for ch in "*?[")
                else int(os.path.exists(full))
            )
    if not found:
        return f"warning: no files match {', '.join(paths)} yet"
    return f"{found} file(s) match {', '.join(paths)}"


def _collector(src: CollectorSourceConfig) -> str:
    from clickloop.ingest.collector_auth import CollectorAuth

    auth = CollectorAuth.from_config(src)  # an empty token fails the check
    where = f"listens on {src.host}:{src.port}"
    if not auth.enabled:
        return (
            f"warning: authentication disabled (no tokens): anyone who can reach "
            f"{src.host}:{src.port} can send events"
        )
    return f"{where}, {auth.describe()}"

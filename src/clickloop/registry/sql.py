"""The registry over SQL: SQLite (embedded default) and PostgreSQL, one schema, one code path.

>>> reg = SqlRegistry("sqlite:////srv/shop/.clickloop/metadata.sqlite", ArtifactStore(root))
>>> mv = reg.create_version("ctr", Path("/tmp/model"), algorithm="lightgbm", fingerprint="…",
...                         lineage={}, metrics={}, params={})       # doctest: +SKIP
>>> reg.set_alias("ctr", "champion", mv.version)                   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError

from clickloop.errors import BackendUnavailableError, NotFoundError
from clickloop.registry.artifacts import ArtifactStore
from clickloop.registry.base import AliasEvent, ModelVersion, Registry

log = logging.getLogger(__name__)
SCHEMA_VERSION = 1

meta = sa.MetaData()
models_t = sa.Table(
    "cl_models",
    meta,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("created_at", sa.String(40), nullable=False),
)
versions_t = sa.Table(
    "cl_model_versions",
    meta,
    sa.Column("model", sa.String(64), sa.ForeignKey("cl_models.name"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("artifact_uri", sa.Text, nullable=False),
    sa.Column("algorithm", sa.String(200), nullable=False, default=""),
    sa.Column("fingerprint", sa.String(64), nullable=False, default=""),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("lineage", sa.JSON, nullable=False),
    sa.Column("metrics", sa.JSON, nullable=False),
    sa.Column("params", sa.JSON, nullable=False),
)
aliases_t = sa.Table(
    "cl_model_aliases",
    meta,
    sa.Column("model", sa.String(64), primary_key=True),
    sa.Column("alias", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.String(40), nullable=False),
    sa.ForeignKeyConstraint(
        ["model", "version"], ["cl_model_versions.model", "cl_model_versions.version"]
    ),
)
events_t = sa.Table(
    "cl_alias_events",
    meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(64), nullable=False, index=True),
    sa.Column("alias", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer),
    sa.Column("previous", sa.Integer),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("at", sa.String(40), nullable=False),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("actor", sa.String(200), nullable=False, default=""),
)
info_t = sa.Table(
    "cl_registry_info",
    meta,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(200), nullable=False),
)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class SqlRegistry(Registry):
    def __init__(self, url: str, artifacts: ArtifactStore, *, cache: Path | None = None) -> None:
        self.url = url
        self.artifacts = artifacts
        self.cache = cache
        kwargs: dict[str, Any] = {"future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine = sa.create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            meta.create_all(self.engine, checkfirst=True)
            with self.engine.begin() as c:
                row = c.execute(sa.select(info_t.c.value).where(info_t.c.key == "schema")).first()
                if row is None:
                    c.execute(info_t.insert().values(key="schema", value=str(SCHEMA_VERSION)))
        except IntegrityError:
            pass  # another process created the schema at the same moment
        except OperationalError as exc:
            raise BackendUnavailableError(
                f"cannot open the model registry at {sa.engine.make_url(url).render_as_string()}"
                f": {str(exc.orig).splitlines()[0]}",
                hint="check stores.metadata in clickloop.yaml and that the database is reachable",
            ) from exc

    # -- versions -------------------------------------------------------------------------

    def create_version(
        self,
        model: str,
        artifact_dir: Path,
        *,
        algorithm: str,
        fingerprint: str,
        lineage: dict[str, Any],
        metrics: dict[str, Any],
        params: dict[str, Any],
        description: str = "",
    ) -> ModelVersion:
        uri = self.artifacts.put_dir(Path(artifact_dir), f"models/{model}")
        for attempt in range(20):
            try:
                with self.engine.begin() as c:
                    if (
                        c.execute(
                            sa.select(models_t.c.name).where(models_t.c.name == model)
                        ).first()
                        is None
                    ):
                        c.execute(models_t.insert().values(name=model, created_at=_now()))
                    if self.engine.dialect.name == "postgresql":
                        c.execute(
                            sa.select(models_t.c.name)
                            .where(models_t.c.name == model)
                            .with_for_update()
                        )
                    top = c.execute(
                        sa.select(sa.func.max(versions_t.c.version)).where(
                            versions_t.c.model == model
                        )
                    ).scalar()
                    version = int(top or 0) + 1
                    created = _now()
                    c.execute(
                        versions_t.insert().values(
                            model=model,
                            version=version,
                            created_at=created,
                            artifact_uri=uri,
                            algorithm=algorithm,
                            fingerprint=fingerprint,
                            description=description,
                            lineage=lineage,
                            metrics=metrics,
                            params=params,
                        )
                    )
                return ModelVersion(
                    model,
                    version,
                    created,
                    uri,
                    algorithm,
                    fingerprint,
                    description,
                    lineage,
                    metrics,
                    params,
                    [],
                )
            except (IntegrityError, OperationalError) as exc:
                # a concurrent writer took the number (or held the lock): try the next one
                if attempt == 19:
                    raise BackendUnavailableError(f"cannot register {model}: {exc.orig}") from exc
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    def _row_to_version(self, row: Any, aliases: dict[int, list[str]]) -> ModelVersion:
        return ModelVersion(
            model=row.model,
            version=row.version,
            created_at=row.created_at,
            artifact_uri=row.artifact_uri,
            algorithm=row.algorithm,
            fingerprint=row.fingerprint,
            description=row.description,
            lineage=row.lineage or {},
            metrics=row.metrics or {},
            params=row.params or {},
            aliases=sorted(aliases.get(row.version, [])),
        )

    def _aliases_by_version(self, c: sa.Connection, model: str) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for a in c.execute(sa.select(aliases_t).where(aliases_t.c.model == model)):
            out.setdefault(a.version, []).append(a.alias)
        return out

    def get_version(self, model: str, version: int) -> ModelVersion:
        with self.engine.connect() as c:
            row = c.execute(
                sa.select(versions_t).where(
                    versions_t.c.model == model, versions_t.c.version == version
                )
            ).first()
            if row is None:
                known = [
                    r.version
                    for r in c.execute(
                        sa.select(versions_t.c.version).where(versions_t.c.model == model)
                    )
                ]
                raise NotFoundError(
                    f"model {model!r} has no version {version}",
                    hint=f"versions: {', '.join(map(str, known))}"
                    if known
                    else f"no version of {model!r} is registered; run `clickloop train {model}`",
                )
            return self._row_to_version(row, self._aliases_by_version(c, model))

    def list_models(self) -> list[dict[str, Any]]:
        out = []
        with self.engine.connect() as c:
            for m in c.execute(sa.select(models_t).order_by(models_t.c.name)):
                latest = c.execute(
                    sa.select(versions_t)
                    .where(versions_t.c.model == m.name)
                    .order_by(versions_t.c.version.desc())
                    .limit(1)
                ).first()
                count = c.execute(
                    sa.select(sa.func.count())
                    .select_from(versions_t)
                    .where(versions_t.c.model == m.name)
                ).scalar()
                aliases = {
                    a.alias: a.version
                    for a in c.execute(sa.select(aliases_t).where(aliases_t.c.model == m.name))
                }
                out.append(
                    {
                        "model": m.name,
                        "versions": int(count or 0),
                        "latest": latest.version if latest else None,
                        "latest_at": latest.created_at if latest else None,
                        "aliases": aliases,
                    }
                )
        return out

    def list_versions(self, model: str) -> list[ModelVersion]:
        with self.engine.connect() as c:
            aliases = self._aliases_by_version(c, model)
            rows = c.execute(
                sa.select(versions_t)
                .where(versions_t.c.model == model)
                .order_by(versions_t.c.version)
            )
            return [self._row_to_version(r, aliases) for r in rows]

    def update_metrics(self, model: str, version: int, metrics: dict[str, Any]) -> None:
        with self.engine.begin() as c:
            row = c.execute(
                sa.select(versions_t.c.metrics).where(
                    versions_t.c.model == model, versions_t.c.version == version
                )
            ).first()
            if row is None:
                raise NotFoundError(f"model {model!r} has no version {version}")
            merged = {**(row.metrics or {}), **metrics}
            c.execute(
                versions_t.update()
                .where(versions_t.c.model == model, versions_t.c.version == version)
                .values(metrics=merged)
            )

    # -- aliases --------------------------------------------------------------------------

    def aliases(self, model: str) -> dict[str, int]:
        with self.engine.connect() as c:
            return {
                a.alias: a.version
                for a in c.execute(sa.select(aliases_t).where(aliases_t.c.model == model))
            }

    def set_alias(
        self,
        model: str,
        alias: str,
        version: int,
        *,
        kind: str = "promote",
        reason: str = "",
        actor: str = "",
    ) -> AliasEvent:
        self.get_version(model, version)  # NotFoundError for a missing version
        now = _now()
        with self.engine.begin() as c:
            cur = c.execute(
                sa.select(aliases_t.c.version)
                .where(aliases_t.c.model == model, aliases_t.c.alias == alias)
                .with_for_update()
            ).first()
            previous = cur.version if cur else None
            if cur is None:
                c.execute(
                    aliases_t.insert().values(
                        model=model, alias=alias, version=version, updated_at=now
                    )
                )
            else:
                c.execute(
                    aliases_t.update()
                    .where(aliases_t.c.model == model, aliases_t.c.alias == alias)
                    .values(version=version, updated_at=now)
                )
            event = AliasEvent(model, alias, version, previous, kind, now, reason, actor)
            c.execute(
                events_t.insert().values(
                    model=model,
                    alias=alias,
                    version=version,
                    previous=previous,
                    kind=kind,
                    at=now,
                    reason=reason,
                    actor=actor,
                )
            )
        log.info("%s@%s → version %s (was %s; %s)", model, alias, version, previous, kind)
        return event

    def remove_alias(self, model: str, alias: str, *, reason: str = "", actor: str = "") -> None:
        with self.engine.begin() as c:
            cur = c.execute(
                sa.select(aliases_t.c.version).where(
                    aliases_t.c.model == model, aliases_t.c.alias == alias
                )
            ).first()
            if cur is None:
                raise NotFoundError(f"model {model!r} has no alias {alias!r}")
            c.execute(
                aliases_t.delete().where(aliases_t.c.model == model, aliases_t.c.alias == alias)
            )
            c.execute(
                events_t.insert().values(
                    model=model,
                    alias=alias,
                    version=None,
                    previous=cur.version,
                    kind="remove",
                    at=_now(),
                    reason=reason,
                    actor=actor,
                )
            )

    def history(self, model: str, alias: str | None = None) -> list[AliasEvent]:
        q = sa.select(events_t).where(events_t.c.model == model)
        if alias is not None:
            q = q.where(events_t.c.alias == alias)
        with self.engine.connect() as c:
            return [
                AliasEvent(r.model, r.alias, r.version, r.previous, r.kind, r.at, r.reason, r.actor)
                for r in c.execute(q.order_by(events_t.c.id))
            ]

    # -- artifacts ------------------------------------------------------------------------

    def download(self, mv: ModelVersion, dest: Path) -> Path:
        return self.artifacts.get_dir(mv.artifact_uri, dest)

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()

"""Configuration of infrastructure: bus, lake, stores, sources, ingest, serving, logging.

Every backend section is a discriminated union on ``type`` whose default is the
embedded backend, so an empty section (or none) means "run locally, no server".
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator

from clickloop.config.base import Options, Section, default_type
from clickloop.events.mapping import Mapping
from clickloop.units import ByteSize, Duration

# -- bus -------------------------------------------------------------------------------


class LocalBusConfig(Section):
    """The embedded durable log: append-only segment files under ``path``."""

    type: Literal["local"] = "local"
    path: str | None = Field(None, description="directory; default <home>/bus")
    partitions: int = Field(4, ge=1, le=1024, description="partitions per topic")
    segment_bytes: ByteSize = Field(64 * 1024**2, description="roll a segment past this size")
    retention: Duration = Field(timedelta(days=7), description="delete segments older than this")
    fsync: Literal["always", "batch", "never"] = Field(
        "batch", description="when appends reach the disk: every append, every batch, or never"
    )
    session_timeout: Duration = Field(
        timedelta(seconds=10),
        description="a consumer-group member silent this long is expelled and its partitions move",
    )


class KafkaBusConfig(Section):
    """Apache Kafka (or a Kafka-compatible broker) through confluent-kafka."""

    type: Literal["kafka"]
    bootstrap: str = Field(..., description="host:port[,host:port…]")
    topic_prefix: str = Field("", description="prefix for the events/exposures/predictions topics")
    partitions: int = Field(12, ge=1, description="partitions for topics clickloop creates")
    replication: int = Field(1, ge=1)
    session_timeout: Duration = Field(timedelta(seconds=10))
    delivery_timeout: Duration = Field(
        timedelta(seconds=30),
        description="publish gives up (the caller retries) when brokers do not acknowledge "
        "within this",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    client: Options = Field(default_factory=dict, description="extra librdkafka settings")


BusConfig = Annotated[
    LocalBusConfig | KafkaBusConfig, Field(discriminator="type"), default_type("local")
]

# -- lake ------------------------------------------------------------------------------


class LocalLakeConfig(Section):
    """Parquet files in a local directory."""

    type: Literal["local"] = "local"
    path: str | None = Field(None, description="directory; default <home>/lake")
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    target_file_rows: int = Field(1_000_000, ge=1000, description="compaction target")


class FsspecLakeConfig(Section):
    """Parquet files under any fsspec URL: ``s3://bucket/prefix``, ``gs://…``, ``memory://…``."""

    type: Literal["fsspec"]
    root: str = Field(..., description="e.g. s3://bucket/clickloop")
    storage_options: Options = Field(default_factory=dict)
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    target_file_rows: int = Field(1_000_000, ge=1000)


LakeConfig = Annotated[
    LocalLakeConfig | FsspecLakeConfig, Field(discriminator="type"), default_type("local")
]

# -- stores ----------------------------------------------------------------------------


class SqliteOnlineConfig(Section):
    type: Literal["sqlite"] = "sqlite"
    path: str | None = Field(None, description="database file; default <home>/online.sqlite")


class RedisOnlineConfig(Section):
    type: Literal["redis"]
    url: SecretStr = Field(..., description="redis://[:password@]host:port/db")
    key_prefix: str = "cl:"


OnlineStoreConfig = Annotated[
    SqliteOnlineConfig | RedisOnlineConfig, Field(discriminator="type"), default_type("sqlite")
]


class LakeOfflineConfig(Section):
    """Processed features as Parquet in the lake (``features/<set>/…``), queried with DuckDB."""

    type: Literal["lake"] = "lake"


OfflineStoreConfig = Annotated[LakeOfflineConfig, Field(discriminator="type"), default_type("lake")]


class SqliteMetadataConfig(Section):
    type: Literal["sqlite"] = "sqlite"
    path: str | None = Field(None, description="database file; default <home>/metadata.sqlite")


class PostgresMetadataConfig(Section):
    type: Literal["postgres"]
    url: SecretStr = Field(..., description="postgresql://user:password@host:5432/db")
    artifacts: str | None = Field(None, description="fsspec root for artifacts; default: the lake")


MetadataStoreConfig = Annotated[
    SqliteMetadataConfig | PostgresMetadataConfig,
    Field(discriminator="type"),
    default_type("sqlite"),
]


class StoresConfig(Section):
    online: OnlineStoreConfig = Field(default_factory=SqliteOnlineConfig)
    offline: OfflineStoreConfig = Field(default_factory=LakeOfflineConfig)
    metadata: MetadataStoreConfig = Field(default_factory=SqliteMetadataConfig)


# -- sources ---------------------------------------------------------------------------


class CsvOptions(Section):
    delimiter: str = Field(",", min_length=1, max_length=1)
    header: bool = True
    quote: str = Field('"', min_length=1, max_length=1)


class FilesSourceConfig(Mapping):
    """Batch files (CSV, JSONL, Parquet; gzip) on local disk or object storage."""

    type: Literal["files"]
    path: str | list[str] = Field(..., description="path, directory or glob; s3:// and gs:// too")
    format: Literal["auto", "jsonl", "csv", "parquet"] = "auto"
    compression: Literal["auto", "none", "gzip"] = "auto"
    csv: CsvOptions = Field(default_factory=CsvOptions)
    storage_options: Options = Field(default_factory=dict)


class CollectorSourceConfig(Mapping):
    """The HTTP collector: ``POST /v1/events`` and the ``GET /v1/p.gif`` tracking pixel."""

    type: Literal["collector"]
    host: str = "127.0.0.1"
    port: int = Field(8081, ge=0, le=65535)
    tokens: list[SecretStr] = Field(default_factory=list, description="bearer tokens accepted")
    pixel_public: bool = Field(False, description="let the pixel endpoint skip authentication")
    max_body: ByteSize = Field(1024**2, description="largest request body accepted (413 beyond)")
    max_inflight: int = Field(64, ge=1, description="concurrent publishes before 503")
    cors_origins: list[str] = Field(
        default_factory=list,
        description="browser origins allowed to call the collector (CORS), e.g. "
        "https://shop.example.com; '*' for any; none by default",
    )


SourceConfig = Annotated[FilesSourceConfig | CollectorSourceConfig, Field(discriminator="type")]


class IngestConfig(Section):
    """Rules shared by every acquisition path."""

    dedupe_horizon: Duration = Field(
        timedelta(days=7), description="drop an event_id seen again within this event-time span"
    )
    max_future: Duration = Field(
        timedelta(hours=1), description="quarantine events whose ts is this far after arrival"
    )
    batch_max_events: int = Field(50_000, ge=1, description="stream micro-batch size bound")
    batch_max_wait: Duration = Field(timedelta(seconds=1), description="micro-batch time bound")


# -- serving, logging --------------------------------------------------------------------


class ServingConfig(Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    tokens: list[SecretStr] = Field(default_factory=list)
    model: str | None = Field(None, description="default model, e.g. 'ctr@champion'")
    log_features_sample: float = Field(0.01, ge=0, le=1)
    workers: int = Field(1, ge=1)


class LoggingConfig(Section):
    format: Literal["console", "json"] = "console"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v

"""Project configuration: ``clickloop.yaml`` parsed into pydantic models.

>>> from clickloop.config import load_config
>>> cfg = load_config(text="stores: {online: {type: sqlite}}")
>>> cfg.stores.online.type, cfg.bus.type
('sqlite', 'local')
"""

from clickloop.config.infra import (
    CollectorSourceConfig,
    FilesSourceConfig,
    FsspecLakeConfig,
    IngestConfig,
    KafkaBusConfig,
    LocalBusConfig,
    LocalLakeConfig,
    PostgresMetadataConfig,
    RedisOnlineConfig,
    ServingConfig,
    SqliteMetadataConfig,
    SqliteOnlineConfig,
)
from clickloop.config.loader import load_config
from clickloop.config.ml import (
    AggregateConfig,
    ExperimentConfig,
    FeatureSetConfig,
    ModelConfig,
    PipelineConfig,
    UrlsConfig,
)
from clickloop.config.project import ProjectConfig

__all__ = [
    "AggregateConfig",
    "CollectorSourceConfig",
    "ExperimentConfig",
    "FeatureSetConfig",
    "FilesSourceConfig",
    "FsspecLakeConfig",
    "IngestConfig",
    "KafkaBusConfig",
    "LocalBusConfig",
    "LocalLakeConfig",
    "ModelConfig",
    "PipelineConfig",
    "PostgresMetadataConfig",
    "ProjectConfig",
    "RedisOnlineConfig",
    "ServingConfig",
    "SqliteMetadataConfig",
    "SqliteOnlineConfig",
    "UrlsConfig",
    "load_config",
]

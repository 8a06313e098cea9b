"""The root of ``clickloop.yaml``."""

from __future__ import annotations

from pydantic import Field

from clickloop.config.base import Section
from clickloop.config.infra import (
    BusConfig,
    IngestConfig,
    LakeConfig,
    LocalBusConfig,
    LocalLakeConfig,
    LoggingConfig,
    ServingConfig,
    SourceConfig,
    StoresConfig,
)
from clickloop.config.ml import (
    ExperimentConfig,
    FeatureSetConfig,
    ModelConfig,
    Name,
    PipelineConfig,
    UrlsConfig,
)


class ProjectConfig(Section):
    """Everything a project declares. Every section is optional and defaults to embedded."""

    project: str = Field("clickloop", description="project name, used in metrics and reports")
    home: str = Field(".clickloop", description="embedded state directory (relative to project)")
    bus: BusConfig = Field(default_factory=LocalBusConfig)
    lake: LakeConfig = Field(default_factory=LocalLakeConfig)
    stores: StoresConfig = Field(default_factory=StoresConfig)
    sources: dict[Name, SourceConfig] = Field(default_factory=dict)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    urls: UrlsConfig = Field(default_factory=UrlsConfig)
    features: dict[Name, FeatureSetConfig] = Field(default_factory=dict)
    models: dict[Name, ModelConfig] = Field(default_factory=dict)
    experiments: dict[str, ExperimentConfig] = Field(default_factory=dict)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    pipelines: dict[str, PipelineConfig] = Field(default_factory=dict)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

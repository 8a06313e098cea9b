"""The model registry: versions with lineage, aliases with history, gates, rollback.

A reference names a version three ways: ``ctr:3`` (version 3), ``ctr@champion``
(whatever the alias points at), or ``ctr`` (its champion). Backends implement
:class:`Registry` over one SQL schema (SQLite embedded, PostgreSQL in
production) and keep artifacts in an :class:`~clickloop.registry.artifacts.ArtifactStore`.

>>> parse_ref("ctr@champion")
ModelRef(model='ctr', version=None, alias='champion')
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from clickloop.errors import UsageError

ALIASES: Final = ("champion", "challenger")
_REF: Final = re.compile(
    r"^(?P<model>[a-z][a-z0-9_]{0,62})?(?::(?P<version>\d+)|@(?P<alias>[a-z][a-z0-9_-]{0,62}))?$"
)


@dataclass(frozen=True)
class ModelRef:
    model: str | None
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        head = self.model or ""
        if self.version is not None:
            return f"{head}:{self.version}"
        return f"{head}@{self.alias or 'champion'}"


def parse_ref(ref: str, *, default_model: str | None = None) -> ModelRef:
    """Parse ``name``, ``name:VERSION``, ``name@ALIAS``, ``@ALIAS`` or a bare alias."""
    text = ref.strip()
    if text in ALIASES:
        text = "@" + text
    m = _REF.match(text)
    if not m or not text:
        raise UsageError(
            f"{ref!r} is not a model reference",
            hint="write MODEL, MODEL:VERSION or MODEL@ALIAS, e.g. ctr:3 or ctr@champion",
        )
    model = m.group("model") or default_model
    if model is None:
        raise UsageError(f"{ref!r} names no model", hint="write MODEL@ALIAS, e.g. ctr@champion")
    version = int(m.group("version")) if m.group("version") else None
    alias = m.group("alias") or (None if version is not None else "champion")
    return ModelRef(model, version, alias)


@dataclass
class ModelVersion:
    """One registered version and everything recorded about it."""

    model: str
    version: int
    created_at: str
    artifact_uri: str
    algorithm: str = ""
    fingerprint: str = ""
    description: str = ""
    lineage: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.model}:{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "ref": self.ref,
            "created_at": self.created_at,
            "aliases": self.aliases,
            "algorithm": self.algorithm,
            "artifact_uri": self.artifact_uri,
            "fingerprint": self.fingerprint,
            "description": self.description,
            "metrics": self.metrics,
            "params": self.params,
            "lineage": self.lineage,
        }


@dataclass
class AliasEvent:
    model: str
    alias: str
    version: int | None
    previous: int | None
    kind: str  # "promote", "rollback", "remove"
    at: str
    reason: str = ""
    actor: str = ""


class Registry(ABC):
    """Versions, aliases and their history. Artifacts are uploaded before a version exists,
    so a crash never leaves a version without its files."""

    @abstractmethod
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
        """Upload ``artifact_dir`` and record a new version (numbers start at 1)."""

    @abstractmethod
    def get_version(self, model: str, version: int) -> ModelVersion: ...

    @abstractmethod
    def list_models(self) -> list[dict[str, Any]]:
        """Every model with its latest version and aliases."""

    @abstractmethod
    def list_versions(self, model: str) -> list[ModelVersion]: ...

    @abstractmethod
    def aliases(self, model: str) -> dict[str, int]: ...

    @abstractmethod
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
        """Point ``alias`` at ``version`` and append the change to the alias history."""

    @abstractmethod
    def remove_alias(
        self, model: str, alias: str, *, reason: str = "", actor: str = ""
    ) -> None: ...

    @abstractmethod
    def history(self, model: str, alias: str | None = None) -> list[AliasEvent]: ...

    @abstractmethod
    def update_metrics(self, model: str, version: int, metrics: dict[str, Any]) -> None:
        """Merge ``metrics`` into a version's recorded metrics (e.g. a fresh comparison)."""

    @abstractmethod
    def download(self, mv: ModelVersion, dest: Path) -> Path:
        """The version's artifact directory, fetched into ``dest`` when remote."""

    @abstractmethod
    def close(self) -> None: ...

    # -- derived operations ----------------------------------------------------------------

    def resolve(self, ref: str | ModelRef, *, default_model: str | None = None) -> ModelVersion:
        """The version a reference names (NotFoundError when it names none)."""
        from clickloop.errors import NotFoundError

        r = parse_ref(ref, default_model=default_model) if isinstance(ref, str) else ref
        assert r.model is not None
        if r.version is not None:
            return self.get_version(r.model, r.version)
        alias = r.alias or "champion"
        target = self.aliases(r.model).get(alias)
        if target is None:
            versions = self.list_versions(r.model)
            if not versions:
                raise NotFoundError(
                    f"model {r.model!r} has no registered version",
                    hint=f"run `clickloop train {r.model}`",
                )
            raise NotFoundError(
                f"model {r.model!r} has no alias {alias!r}",
                hint=f"run `clickloop models promote {r.model}:{versions[-1].version}"
                f"{'' if alias == 'champion' else ' --alias ' + alias}`",
            )
        return self.get_version(r.model, target)

    def rollback_target(self, model: str, alias: str = "champion") -> tuple[int, int]:
        """(current, previous) versions of ``alias`` by its history (rollbacks unwind it)."""
        from clickloop.errors import ConflictError

        stack: list[int] = []
        for e in self.history(model, alias):
            if e.kind == "promote" and e.version is not None:
                stack.append(e.version)
            elif e.kind == "rollback" and stack:
                stack.pop()
            elif e.kind == "remove":
                stack.clear()
        if len(stack) < 2:
            raise ConflictError(
                f"{model}@{alias} has no earlier version to roll back to",
                hint=f"see `clickloop models show {model}` for its history",
            )
        return stack[-1], stack[-2]

    def rollback(
        self, model: str, alias: str = "champion", *, reason: str = "", actor: str = ""
    ) -> AliasEvent:
        """Point ``alias`` back at the version it held before its latest promotion."""
        _current, previous = self.rollback_target(model, alias)
        return self.set_alias(
            model, alias, previous, kind="rollback", reason=reason or "rollback", actor=actor
        )

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""A project: a directory holding ``clickloop.yaml`` and its embedded state.

Embedded state (the local bus, the lake, SQLite files, logs) lives under the
project's ``home`` (``.clickloop/`` by default) — never in the package or the
user's home directory.

>>> p = Project.load("/srv/shop")            # reads /srv/shop/clickloop.yaml
>>> p.state_path("bus")                       # /srv/shop/.clickloop/bus
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from clickloop.config import ProjectConfig, load_config
from clickloop.errors import ConfigError

CONFIG_FILE = "clickloop.yaml"
PROJECT_DIR_ENV = "CLICKLOOP_PROJECT_DIR"
_URL = re.compile(r"^[a-z][a-z0-9+.\-]*://", re.I)


def is_url(path: str) -> bool:
    """True for ``s3://…``, ``gs://…``, ``memory://…`` and other fsspec URLs."""
    return bool(_URL.match(path))


@dataclass(frozen=True)
class Project:
    root: Path
    config: ProjectConfig
    config_path: Path | None = None

    @classmethod
    def load(
        cls,
        root: str | os.PathLike[str] | None = None,
        *,
        config_path: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        require_config: bool = True,
    ) -> Project:
        """Load the project at ``root`` (default: ``$CLICKLOOP_PROJECT_DIR`` or the cwd).

        With ``require_config=False`` a directory without ``clickloop.yaml`` is a
        project on pure defaults (used by ``simulate`` and the demo).
        """
        env = os.environ if env is None else env
        if config_path is not None:
            cfg_path = Path(config_path).resolve()
            base = Path(root).resolve() if root is not None else cfg_path.parent
        else:
            base = Path(root or env.get(PROJECT_DIR_ENV) or Path.cwd()).resolve()
            cfg_path = base / CONFIG_FILE
        if cfg_path.is_file():
            return cls(base, load_config(cfg_path, env=env), cfg_path)
        if require_config:
            raise ConfigError(
                f"no {CONFIG_FILE} in {base}",
                hint=f"run `clickloop init {base}` or pass --project DIR",
            )
        return cls(base, load_config(None, env=env), None)

    @property
    def home(self) -> Path:
        """The embedded state directory (not created until something writes to it)."""
        return self.resolve_path(self.config.home)

    def state_path(self, *parts: str) -> Path:
        """A path under the embedded state directory."""
        return self.home.joinpath(*parts)

    def resolve_path(self, path: str | os.PathLike[str]) -> Path:
        """A local path from the config: relative paths are relative to the project root."""
        p = Path(os.path.expanduser(os.fspath(path)))
        return p if p.is_absolute() else (self.root / p)

    def resolve(self, location: str) -> str:
        """Like :meth:`resolve_path` but leaves URLs (``s3://…``) untouched."""
        return location if is_url(location) else str(self.resolve_path(location))

    @property
    def name(self) -> str:
        return self.config.project

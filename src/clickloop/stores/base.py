"""The online feature store: the latest feature vector per entity, read in one round trip.

Backends: SQLite in WAL mode (embedded default) and Redis; one contract suite
(``tests/contract/test_online_store.py``) runs against both.

Values are plain Python scalars (``int``, ``float``, ``str``, ``bool``, ``None``)
or lists/dicts of them (top-k, histograms). Each entity's row in a feature set
carries the event time it reflects; a write never replaces a newer row with an
older one, and a row older than the feature set's TTL reads as absent.

>>> store = open_online_store(project)                       # doctest: +SKIP
>>> store.write("user_activity", rows)     # Arrow table: entity, _event_ts, features…
>>> store.read("u42", ["user_activity", "user_clicks"])
{'user_activity__count_1h': 3, ..., 'user_clicks__count_1d': 1}
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

import pyarrow as pa

if TYPE_CHECKING:
    from clickloop.project import Project

ENTITY: Final = "entity"
EVENT_TS: Final = "_event_ts"


class OnlineStore(ABC):
    @abstractmethod
    def write(self, feature_set: str, rows: pa.Table, *, ttl: timedelta | None = None) -> int:
        """Upsert rows (columns ``entity``, ``_event_ts`` and features); return rows written.

        A row whose ``_event_ts`` is older than the stored one for that entity is ignored.
        """

    @abstractmethod
    def read(self, entity: str, feature_sets: Sequence[str]) -> dict[str, Any]:
        """All features of one entity across ``feature_sets``, in one round trip.

        Keys are the feature names; missing or expired features are absent.
        """

    @abstractmethod
    def read_many(self, entities: Sequence[str], feature_sets: Sequence[str]
                  ) -> list[dict[str, Any]]:
        """:meth:`read` for many entities, batched (one result per entity, in order)."""

    @abstractmethod
    def close(self) -> None: ...


def open_online_store(project: Project) -> OnlineStore:
    """The online store the project configures (``stores.online.type``)."""
    from clickloop.config.infra import RedisOnlineConfig

    cfg = project.config.stores.online
    if isinstance(cfg, RedisOnlineConfig):
        from clickloop.stores.redis import RedisOnlineStore

        return RedisOnlineStore(cfg.url.get_secret_value(), key_prefix=cfg.key_prefix)
    from clickloop.stores.sqlite import SqliteOnlineStore

    path = project.resolve_path(cfg.path) if cfg.path else project.state_path("online.sqlite")
    return SqliteOnlineStore(path)

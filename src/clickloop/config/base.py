"""Building blocks shared by every configuration section."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, SecretStr

_SECRET_KEY = re.compile(r"(token|secret|password|passwd|api[_-]?key|credential)", re.I)


class Section(BaseModel):
    """Base of every config model: unknown keys are errors, never ignored."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_default=True)


def default_type(default: str) -> BeforeValidator:
    """Fill in ``type: <default>`` when a backend section omits it (or is empty)."""

    def fill(value: Any) -> Any:
        if value is None:
            return {"type": default}
        if isinstance(value, dict) and "type" not in value:
            return {"type": default, **value}
        return value

    return BeforeValidator(fill)


def _wrap_secrets(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    return {
        k: SecretStr(str(v)) if _SECRET_KEY.search(str(k)) and not isinstance(v, SecretStr) else v
        for k, v in value.items()
    }


# Free-form client options (librdkafka settings, fsspec storage options, …):
# values under keys that look secret are kept as SecretStr so they never print.
Options = Annotated[dict[str, str | int | float | bool | SecretStr], BeforeValidator(_wrap_secrets)]


def reveal(options: dict[str, Any]) -> dict[str, Any]:
    """Options with secrets unwrapped, to hand to a client library (never to a log)."""
    return {k: v.get_secret_value() if isinstance(v, SecretStr) else v for k, v in options.items()}

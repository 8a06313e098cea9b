"""The event contract: canonical schema, timestamp parsing, source mapping, validation."""

from clickloop.events.mapping import ColumnSpec, Mapping
from clickloop.events.schema import EVENT_SCHEMA, FIELDS, PROPS_TYPE, REQUIRED, Reason
from clickloop.events.timestamps import ParsedTimes, parse_timestamps
from clickloop.events.validate import Validated, validate

__all__ = [
    "EVENT_SCHEMA",
    "FIELDS",
    "PROPS_TYPE",
    "REQUIRED",
    "ColumnSpec",
    "Mapping",
    "ParsedTimes",
    "Reason",
    "Validated",
    "parse_timestamps",
    "validate",
]

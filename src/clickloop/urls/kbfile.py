"""The knowledge base file: learned URL templates people review, edit and commit.

One YAML file (``urls.knowledge``, default ``urls/knowledge.yaml`` in the project)::

    format: 1
    version: 5c1f0e9a2b7d          # content hash, written by clickloop
    dictionaries:                  # code → meaning, attach with `dictionary:` on a field
      shop_categories: {'1': clothes, '2': games}
    hosts:
      shop.example.com:
        domain: example.com
        urls: 216417
        templates:
          - name: items
            pattern: /items/:item_category/:item_id      # URL Pattern syntax, path only
            urls: 120334
            share: 0.42
            fields:
              item_category: {kind: category, cardinality: 8, examples: ['1', '2'],
                              dictionary: shop_categories}
              item_id: {kind: id, cardinality: 31877, examples: ['1194631']}
          - name: search
            pattern: /search
            query:
              q: {field: search, kind: search, share: 0.99, examples: [red shirt]}

What people may change, and what survives ``clickloop urls learn``: template names,
field names (rename the ``:variable`` in the pattern and its ``fields`` key together),
query ``field`` names, ``dictionary`` attachments, ``dictionaries``, ``ignore`` (path
shapes never to learn again, e.g. ``/items/:/:``) and ``pinned: true`` templates (kept
exactly as written, even when not seen again). Counts and examples are refreshed.

The ``version`` is a hash of everything that changes what extraction produces
(patterns, names, query fields, dictionaries) — not of counts or examples.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any, Final

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from clickloop.config.loader import dotted, parse_yaml
from clickloop.errors import ConfigError
from clickloop.urls.shapes import KINDS, RESERVED, query_field_name
from clickloop.urls.templates import parse_path_pattern, shape_of

FORMAT: Final = 1
FIELD_NAME: Final = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
TEMPLATE_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$")

HEADER: Final = """\
# clickloop URL knowledge base — what the URLs of each host mean.
#
# Written by `clickloop urls learn`; review it, edit it, commit it. Your edits survive
# re-learning: template names, field names (rename the :variable in `pattern` and its
# key under `fields` together), query `field` names, `dictionary` attachments,
# `dictionaries`, `ignore` (path shapes never to learn, e.g. /items/:/:) and templates
# marked `pinned: true`. Counts and examples are refreshed on every run.
# Declared rules in clickloop.yaml (urls.rules) take precedence over this file.
# `clickloop urls show` lists it; `clickloop urls test URL` explains one URL.
"""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _kind(value: str) -> str:
    if value not in KINDS:
        raise ValueError(f"unknown kind {value!r} (one of: {', '.join(KINDS)})")
    return value


class KbField(_Model):
    """A path field of a template."""

    kind: str = "text"
    dictionary: str | None = Field(None, description="name of a dictionary to decode codes")
    cardinality: int | None = None
    examples: list[str] = Field(default_factory=list)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        return _kind(v)

    @field_validator("examples", mode="before")
    @classmethod
    def _strings(cls, v: Any) -> Any:
        return [str(x) for x in v] if isinstance(v, list) else v


class KbQueryField(KbField):
    """A query parameter that matters; ``field`` is the output column name."""

    field: str | None = None
    share: float | None = Field(None, description="share of the template's URLs carrying it")

    def output_name(self, param: str) -> str:
        """The output column name: ``field``, or one derived from the parameter name."""
        return self.field or query_field_name(param, self.kind)

    @field_validator("field")
    @classmethod
    def _field_name(cls, v: str | None) -> str | None:
        if v is not None:
            _check_field_name(v)
        return v


def _check_field_name(name: str) -> None:
    if not FIELD_NAME.match(name):
        raise ValueError(
            f"{name!r} is not a valid field name: use lowercase letters, digits and '_', "
            "starting with a letter"
        )
    if name in RESERVED:
        raise ValueError(f"{name!r} is reserved for a standard column; pick another field name")


class KbTemplate(_Model):
    name: str
    pattern: str = Field(..., description="path in URL Pattern syntax, e.g. /items/:cat/:id")
    fields: dict[str, KbField] = Field(default_factory=dict)
    query: dict[str, KbQueryField] = Field(default_factory=dict)
    urls: int = 0
    share: float | None = None
    distinct: int | None = None
    examples: list[str] = Field(default_factory=list)
    pinned: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not TEMPLATE_NAME.match(v):
            raise ValueError(f"{v!r} is not a valid template name (letters, digits, _ . -)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> KbTemplate:
        if not self.pattern.startswith("/"):
            raise ValueError(f"pattern {self.pattern!r} must be a path starting with '/'")
        try:
            _, names = parse_path_pattern(self.pattern)
            variables = [n for n in names if n]
        except ValueError:
            variables = re.findall(r":([A-Za-z_][A-Za-z0-9_]*)", self.pattern)
            _validate_urlpattern(self.pattern)
        for v in variables:
            _check_field_name(v)
        if len(set(variables)) != len(variables):
            raise ValueError(f"pattern {self.pattern!r} names a variable twice")
        extra = set(self.fields) - set(variables)
        if extra:
            raise ValueError(
                f"fields {sorted(extra)} are not variables of pattern {self.pattern!r} "
                "(rename the :variable in the pattern and its key under fields together)"
            )
        out_names = set(variables)
        for param, q in self.query.items():
            name = q.output_name(param)
            if name in out_names:
                raise ValueError(f"query field {name!r} clashes with another field of {self.name}")
            out_names.add(name)
        return self

    @property
    def shape(self) -> str:
        try:
            slots, _ = parse_path_pattern(self.pattern)
        except ValueError:
            return self.pattern
        return shape_of(slots)


def _validate_urlpattern(pattern: str) -> None:
    from clickloop.urls.templates import _urlpattern

    try:
        _urlpattern()({"pathname": pattern})
    except Exception as exc:
        raise ValueError(f"pattern {pattern!r} is not a valid URL Pattern path: {exc}") from None


class KbHost(_Model):
    domain: str | None = None
    urls: int = 0
    matched: float | None = Field(None, description="share of this host's URLs a template matched")
    tracking: dict[str, int] = Field(default_factory=dict, description="tracking params seen")
    suspected_tracking: dict[str, int] = Field(
        default_factory=dict,
        description="params that behave like click/session ids; confirm in urls.tracking_params",
    )
    ignore: list[str] = Field(default_factory=list, description="shapes never to learn")
    templates: list[KbTemplate] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> KbHost:
        names = [t.name for t in self.templates]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"template names must be unique per host; repeated: {dup}")
        shapes = [t.shape for t in self.templates]
        dup = sorted({s for s in shapes if shapes.count(s) > 1})
        if dup:
            raise ValueError(f"two templates describe the same URLs: {dup}")
        return self


class KnowledgeFile(_Model):
    """The whole knowledge base file (see the module docstring)."""

    format: int = FORMAT
    version: str | None = None
    learned_at: str | None = None
    learned_from: dict[str, Any] = Field(default_factory=dict)
    dictionaries: dict[str, dict[str, str]] = Field(default_factory=dict)
    hosts: dict[str, KbHost] = Field(default_factory=dict)

    @field_validator("dictionaries", mode="before")
    @classmethod
    def _string_keys(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {
                str(n): {str(k): str(x) for k, x in d.items()} if isinstance(d, dict) else d
                for n, d in v.items()
            }
        return v

    @model_validator(mode="after")
    def _check(self) -> KnowledgeFile:
        if self.format != FORMAT:
            raise ValueError(
                f"format {self.format} is not supported (this clickloop reads {FORMAT})"
            )
        return self

    def content_version(self) -> str:
        """Hash of what changes extraction output (not counts, examples or timestamps)."""
        return content_hash(extraction_spec(self))

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", exclude_none=True)
        data["version"] = self.content_version()
        for host in data.get("hosts", {}).values():
            for key in ("tracking", "suspected_tracking", "ignore"):
                if not host.get(key):
                    host.pop(key, None)
            for t in host.get("templates", []):
                for key in ("fields", "query", "examples"):
                    if not t.get(key):
                        t.pop(key, None)
                for key in ("fields", "query"):
                    if key in t:  # one line per field: easy to review and to edit
                        t[key] = {k: _Flow(_ordered(v)) for k, v in t[key].items()}
                if not t.get("pinned"):
                    t.pop("pinned", None)
        for key in ("learned_from", "dictionaries"):
            if not data.get(key):
                data.pop(key, None)
        body = yaml.dump(
            data, Dumper=_Dumper, sort_keys=False, default_flow_style=None, allow_unicode=True,
            width=120,
        )  # fmt: skip
        return HEADER + body

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically (a crash never leaves a torn file)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        tmp.write_text(self.to_yaml(), encoding="utf-8")
        tmp.replace(target)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> KnowledgeFile:
        """Read and validate a knowledge file; a missing file is an empty knowledge base."""
        p = Path(path)
        if not p.is_file():
            return cls()
        return cls.loads(p.read_text(encoding="utf-8"), where=str(p))

    @classmethod
    def loads(cls, text: str, *, where: str = "<knowledge>") -> KnowledgeFile:
        data, lines = parse_yaml(text, where)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            out = [f"invalid URL knowledge file {where}"]
            for err in exc.errors(include_url=False):
                loc = tuple(x for x in err["loc"] if x != "[key]")
                line = next((lines[loc[:c]] for c in range(len(loc), 0, -1) if loc[:c] in lines), 0)
                msg = str(err.get("msg", "")).removeprefix("Value error, ")
                at = f"line {line}" if line else "(top level)"
                out.append(f"  {at}: {dotted(loc)}: {msg}")
            raise ConfigError(
                "\n".join(out),
                hint="fix the file by hand, or delete it and run `clickloop urls learn`",
                file=where,
            ) from None


def extraction_spec(kb: KnowledgeFile) -> dict[str, Any]:
    return {
        "format": kb.format,
        "dictionaries": kb.dictionaries,
        "hosts": {
            h: [
                {
                    "name": t.name,
                    "pattern": t.pattern,
                    "dict": {k: f.dictionary for k, f in t.fields.items() if f.dictionary},
                    "query": {
                        p: [q.output_name(p), q.dictionary] for p, q in sorted(t.query.items())
                    },
                }
                for t in kb.hosts[h].templates
            ]
            for h in sorted(kb.hosts)
        },
    }


def content_hash(obj: Any) -> str:
    blob = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(blob).hexdigest()[:12]


_FIELD_ORDER: Final = ("field", "kind", "dictionary", "share", "cardinality", "examples")


def _ordered(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: entry[k] for k in _FIELD_ORDER if k in entry}


class _Flow(dict[str, Any]):
    """A mapping written on one line."""


class _Dumper(yaml.SafeDumper):
    """Block style for structure, flow style for short lists; readable in review."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)  # indent list items under their key


_Dumper.add_representer(
    _Flow, lambda d, data: d.represent_mapping("tag:yaml.org,2002:map", data, flow_style=True)
)

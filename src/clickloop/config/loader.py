"""Load ``clickloop.yaml``: YAML → ``${ENV}`` expansion → ``CLICKLOOP_…`` overrides → pydantic.

Errors name the file, the line, the key path, what was expected and — for an
unknown key — the closest valid one::

    invalid configuration in /srv/shop/clickloop.yaml
      line 4: bus.bootstrp: unknown key; did you mean 'bootstrap'?
              (valid keys here: type, bootstrap, topic_prefix, partitions, …)

Environment:

* ``${NAME}`` or ``${NAME:-default}`` inside any string value is replaced by
  the variable; an unset variable without a default is an error.
* ``CLICKLOOP_<SECTION>__<KEY>…=value`` overrides a key (``__`` separates
  levels; the value is read as YAML, so ``8080`` is a number and ``[a, b]`` a
  list), e.g. ``CLICKLOOP_BUS__TYPE=kafka CLICKLOOP_BUS__BOOTSTRAP=k1:9092``.
  ``CLICKLOOP_PROJECT_DIR`` is not an override: it picks the project directory.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from clickloop.config.project import ProjectConfig
from clickloop.errors import ConfigError

ENV_PREFIX = "CLICKLOOP_"
NOT_OVERRIDES = frozenset({"CLICKLOOP_PROJECT_DIR"})
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

Path_ = tuple[str | int, ...]


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    text: str | None = None,
    env: Mapping[str, str] | None = None,
) -> ProjectConfig:
    """Parse and validate a project configuration.

    Give ``path`` (a ``clickloop.yaml``), or ``text`` (then ``path`` only names
    it in messages), or neither for the pure defaults.

    >>> load_config(text="bus: {type: local}").bus.type
    'local'
    """
    env = os.environ if env is None else env
    where = str(path) if path is not None else "<config>"
    if text is None and path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise ConfigError(
                f"no configuration file at {where}",
                hint="run `clickloop init DIR` to create a project, or pass --project DIR",
            ) from exc
    data, lines = parse_yaml(text or "", where)
    data = expand_env(data, env, where, lines)
    origins = apply_overrides(data, env)
    try:
        return ProjectConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, data, lines, origins, where), file=where) from None


# -- YAML with line numbers ------------------------------------------------------------


def parse_yaml(text: str, where: str) -> tuple[dict[str, Any], dict[Path_, int]]:
    """Parse YAML into plain data plus a map from key path to 1-based line number."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}{at}: not valid YAML: {problem}") from None
    if node is None:
        return {}, {}
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where}: the top level must be a mapping of sections, not {type(data).__name__}"
        )
    lines: dict[Path_, int] = {}
    _index(node, (), lines)
    return data, lines


def _index(node: yaml.Node, path: Path_, lines: dict[Path_, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key: str | int = key_node.value
            if key_node.tag == "tag:yaml.org,2002:int":
                key = int(str(key), 0)
            child = (*path, key)
            lines[child] = key_node.start_mark.line + 1
            _index(value_node, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*path, i)] = item.start_mark.line + 1
            _index(item, (*path, i), lines)


# -- environment -----------------------------------------------------------------------


def expand_env(
    data: Any, env: Mapping[str, str], where: str, lines: dict[Path_, int], path: Path_ = ()
) -> Any:
    """Replace ``${NAME}`` / ``${NAME:-default}`` in every string value."""
    if isinstance(data, dict):
        return {k: expand_env(v, env, where, lines, (*path, k)) for k, v in data.items()}
    if isinstance(data, list):
        return [expand_env(v, env, where, lines, (*path, i)) for i, v in enumerate(data)]
    if isinstance(data, str) and "${" in data:

        def sub(m: re.Match[str]) -> str:
            name, default = m[1], m[2]
            if name in env:
                return env[name]
            if default is not None:
                return default
            line = next(
                (lines[path[:c]] for c in range(len(path), 0, -1) if path[:c] in lines), None
            )
            at = f"line {line}" if line else "(default)"
            raise ConfigError(
                f"invalid configuration in {where}\n  {at}: {dotted(path)}: "
                f"environment variable {name} is not set",
                hint=f"export {name}=… or write ${{{name}:-default}}",
            )

        return _ENV_REF.sub(sub, data)
    return data


def apply_overrides(data: dict[str, Any], env: Mapping[str, str]) -> dict[Path_, str]:
    """Apply ``CLICKLOOP_A__B=value`` variables; return which path came from which variable."""
    origins: dict[Path_, str] = {}
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX) or var in NOT_OVERRIDES:
            continue
        keys = [k.lower() for k in var[len(ENV_PREFIX) :].split("__") if k]
        if not keys:
            continue
        try:
            value = yaml.safe_load(env[var])
        except yaml.YAMLError:
            value = env[var]
        node = data
        for key in keys[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child
        node[keys[-1]] = value
        origins[tuple(keys)] = var
    return origins


# -- error messages --------------------------------------------------------------------


def dotted(path: Path_) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def format_errors(
    exc: ValidationError,
    data: dict[str, Any],
    lines: dict[Path_, int],
    origins: dict[Path_, str],
    where: str,
) -> str:
    out = [f"invalid configuration in {where}"]
    for err in exc.errors(include_url=False):
        path = _user_path(err["loc"], data)
        msg = _explain(err, path, data)
        origin = next(
            (v for p, v in origins.items() if path[: len(p)] == p or p[: len(path)] == path), None
        )
        if origin:
            at = f"environment variable {origin}"
        else:
            line = next(
                (lines[path[:c]] for c in range(len(path), 0, -1) if path[:c] in lines), None
            )
            at = f"line {line}" if line else "(default)"
        text = f"  {at}: {dotted(path)}: {msg}"
        if text not in out:
            out.append(text)
    return "\n".join(out)


def _user_path(loc: tuple[Any, ...], data: dict[str, Any]) -> Path_:
    """Drop what pydantic adds to a location (union tags, member type names)."""
    path: list[str | int] = []
    node: Any = data
    for seg in loc:
        if seg == "[key]":  # an invalid dict key: the path already ends at it
            continue
        present = (isinstance(node, dict) and seg in node) or (
            isinstance(node, list) and isinstance(seg, int) and seg < len(node)
        )
        if not present:
            ann = _annotation_at(tuple(path), data)
            if _is_union(ann) and seg in _union_labels(ann):
                continue
        path.append(seg)
        node = node[seg] if present else None
    return tuple(path)


def _union_labels(ann: Any) -> set[Any]:
    labels: set[Any] = set()
    for m in typing.get_args(ann):
        m = _unwrap(m)
        labels.add(_tag(m))
        labels.add(getattr(m, "__name__", None))
    return labels | {"str", "int", "float", "bool", "list", "dict", "none"}


def _annotation_at(path: Path_, data: dict[str, Any]) -> Any:
    """The (unwrapped) annotation that the user's key ``path`` points to, unions unresolved."""
    ann: Any = ProjectConfig
    node: Any = data
    for seg in path:
        ann = _choose(_unwrap(ann), node)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            field = _field(ann, seg)
            if field is None:
                return Any
            ann = field.annotation
        elif typing.get_origin(ann) in (dict, Mapping) and typing.get_args(ann):
            ann = typing.get_args(ann)[1]
        elif typing.get_origin(ann) in (list, tuple) and typing.get_args(ann):
            ann = typing.get_args(ann)[0]
        else:
            return Any
        node = (
            node.get(seg)
            if isinstance(node, dict)
            else (
                node[seg]
                if isinstance(node, list) and isinstance(seg, int) and seg < len(node)
                else None
            )
        )
    return _unwrap(ann)


def _model_at(path: Path_, data: dict[str, Any]) -> type[BaseModel] | None:
    node: Any = data
    for seg in path:
        node = node.get(seg) if isinstance(node, dict) else None
    ann = _choose(_annotation_at(path, data), node)
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def _choose(ann: Any, node: Any) -> Any:
    """Resolve a union the way validation did: by ``type`` (or the member with a default)."""
    if not _is_union(ann):
        return ann
    members = [_unwrap(m) for m in typing.get_args(ann) if m is not type(None)]
    models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
    if not models:
        return members[0] if len(members) == 1 else ann
    tag = node.get("type") if isinstance(node, dict) else None
    for m in models:
        if tag is not None and _tag(m) == tag:
            return m
    if tag is None:
        with_default = [
            m
            for m in models
            if "type" in m.model_fields
            and m.model_fields["type"].default is not None
            and m.model_fields["type"].is_required() is False
        ]
        if with_default:
            return with_default[0]
        if len(models) == 1:
            return models[0]
    return ann


def _unwrap(ann: Any) -> Any:
    while typing.get_origin(ann) is typing.Annotated:
        ann = typing.get_args(ann)[0]
    return ann


def _is_union(ann: Any) -> bool:
    return typing.get_origin(ann) in (typing.Union, types.UnionType)


def _tag(model: Any) -> Any:
    if isinstance(model, type) and issubclass(model, BaseModel) and "type" in model.model_fields:
        field = model.model_fields["type"]
        args = typing.get_args(field.annotation)
        return args[0] if args else field.default
    return None


def _field(model: type[BaseModel], key: Any) -> Any:
    if key in model.model_fields:
        return model.model_fields[key]
    return next((f for f in model.model_fields.values() if f.alias == key), None)


def _explain(err: Any, path: Path_, data: dict[str, Any]) -> str:
    kind = err["type"]
    value = err.get("input")
    if kind == "extra_forbidden":
        owner = _model_at(path[:-1], data)
        valid = [f.alias or name for name, f in owner.model_fields.items()] if owner else []
        key = str(path[-1]) if path else ""
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        listing = f" (valid keys here: {', '.join(valid)})" if valid else ""
        return f"unknown key{hint}{listing}"
    if kind == "missing":
        return "required key is missing"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        ctx = err.get("ctx", {})
        expected = [t.strip().strip("'") for t in str(ctx.get("expected_tags", "")).split(",")]
        expected = [t for t in expected if t]
        got = ctx.get("tag", value)
        if kind == "union_tag_not_found":
            return f"'type' is required here (one of: {', '.join(expected)})"
        close = difflib.get_close_matches(str(got), expected, n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"unknown type {got!r}{hint} (expected one of: {', '.join(expected)})"
    if err["loc"] and err["loc"][-1] == "[key]" and kind == "literal_error":
        expected = [
            t.strip().strip("'")
            for t in str(err.get("ctx", {}).get("expected", "")).replace(" or ", ", ").split(",")
        ]
        close = difflib.get_close_matches(str(value), expected, n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"unknown key{hint} (valid keys here: {', '.join(expected)})"
    msg = str(err.get("msg", kind)).removeprefix("Value error, ")
    msg = msg[:1].lower() + msg[1:]
    if value is not None and not isinstance(value, dict | list) and repr(value) not in msg:
        return f"{msg} (got {value!r})"
    return msg

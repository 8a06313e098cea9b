"""Re-learning without losing what people wrote.

A freshly learned knowledge base is merged into the previous file:

* a learned template whose path shape (``/items/:/:``) already exists keeps the
  existing template's name, its field names (matched by position), query field names,
  dictionary attachments and query parameters; counts and examples are refreshed;
* a template marked ``pinned: true`` is kept exactly as written (counts refreshed),
  even when it was not seen this time;
* shapes listed under a host's ``ignore`` are never learned;
* hosts not seen in this run are kept unchanged (learning from a recent window must
  not forget the rest), and the file's ``dictionaries`` are kept.

>>> merged = merge_knowledge(learned, KnowledgeFile.load("urls/knowledge.yaml"))  # doctest: +SKIP
"""

from __future__ import annotations

from clickloop.errors import DataError
from clickloop.urls.kbfile import KbHost, KbTemplate, KnowledgeFile
from clickloop.urls.templates import build_path_pattern, parse_path_pattern


def merge_knowledge(new: KnowledgeFile, old: KnowledgeFile | None) -> KnowledgeFile:
    """``new`` with the edits of ``old`` carried over (see the module docstring)."""
    if old is None:
        return new
    hosts: dict[str, KbHost] = {}
    for h in sorted(set(old.hosts) | set(new.hosts)):
        if h not in new.hosts:
            hosts[h] = old.hosts[h]
        elif h not in old.hosts:
            hosts[h] = new.hosts[h]
        else:
            hosts[h] = merge_host(new.hosts[h], old.hosts[h])
    merged = new.model_copy(update={"hosts": hosts, "dictionaries": dict(old.dictionaries)})
    try:  # re-validate: the merge must produce a file people can load
        return KnowledgeFile.model_validate(merged.model_dump())
    except ValueError as exc:  # pragma: no cover - a bug, not a user error
        raise DataError(f"merging the learned URL knowledge failed: {exc}") from exc


def merge_host(new: KbHost, old: KbHost) -> KbHost:
    ignore = set(old.ignore)
    old_by_shape = {t.shape: t for t in old.templates}
    kept: list[KbTemplate] = []
    fresh: list[KbTemplate] = []
    used: set[str] = set()
    for t in new.templates:
        if t.shape in ignore:
            continue
        o = old_by_shape.get(t.shape)
        if o is None:
            fresh.append(t)
            continue
        used.add(t.shape)
        stats = {"urls": t.urls, "share": t.share, "distinct": t.distinct, "examples": t.examples}
        kept.append(o.model_copy(update=stats) if o.pinned else carry_edits(t, o))
    kept += [o for o in old.templates if o.pinned and o.shape not in used]
    taken = {t.name for t in kept}
    for t in fresh:  # a new template never takes a name people already use
        name, k = t.name, 2
        while name in taken:
            name = f"{t.name}_{k}"
            k += 1
        taken.add(name)
        kept.append(t if name == t.name else t.model_copy(update={"name": name}))
    kept.sort(key=lambda t: (-t.urls, t.pattern))
    return new.model_copy(update={"templates": kept, "ignore": list(old.ignore)})


def carry_edits(t: KbTemplate, o: KbTemplate) -> KbTemplate:
    """The learned template ``t`` with names and dictionaries of the existing ``o``."""
    try:
        slots, t_names = parse_path_pattern(t.pattern)
        _, o_names = parse_path_pattern(o.pattern)
    except ValueError:
        return o
    rename = {a: b for a, b in zip(t_names, o_names, strict=True) if a and b}
    fields = {}
    for name, f in t.fields.items():
        target = rename.get(name, name)
        before = o.fields.get(target)
        fields[target] = f.model_copy(update={"dictionary": before.dictionary}) if before else f
    query = dict(o.query)  # parameters people added by hand stay, even if rare this time
    for param, q in t.query.items():
        before_q = o.query.get(param)
        query[param] = (
            q.model_copy(
                update={"field": before_q.field or q.field, "dictionary": before_q.dictionary}
            )
            if before_q
            else q
        )
    taken = set(fields) | {q.output_name(p) for p, q in query.items() if p in o.query}
    for param, q in query.items():  # a newly learned query field must not clash
        if param in o.query:
            continue
        name, k = q.output_name(param), 2
        base = name
        while name in taken:
            name = f"{base}_{k}"
            k += 1
        taken.add(name)
        if name != q.output_name(param):
            query[param] = q.model_copy(update={"field": name})
    pattern = build_path_pattern(slots, [rename.get(n, n) if n else None for n in t_names])
    return t.model_copy(
        update={"name": o.name, "pattern": pattern, "fields": fields, "query": query}
    )

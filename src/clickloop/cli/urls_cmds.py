"""``clickloop urls …``: learn, show and test the URL knowledge base."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from clickloop.cli.common import State, console, emit, human_int, progress, state
from clickloop.errors import EXIT_FAILURE, UsageError

urls_app = typer.Typer(
    help="URL knowledge: what the URLs of each site mean (templates, fields, dictionaries).\n\n"
    "[bold]Example[/bold]: clickloop urls learn && clickloop urls show",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


def register(app: typer.Typer) -> None:
    app.add_typer(urls_app, name="urls")


def _when(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        from clickloop.units import parse_duration

        return datetime.now(UTC) - parse_duration(value)  # "7d": the last seven days
    except (ValueError, TypeError):
        pass
    try:
        t = datetime.fromisoformat(value)
    except ValueError as exc:
        raise UsageError(
            f"{option} {value!r} is neither a date/time nor a duration",
            hint="use e.g. 2026-11-01, 2026-11-01T12:00:00Z or 7d",
        ) from exc
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@urls_app.command("learn")
def learn_cmd(
    ctx: typer.Context,
    inputs: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            "-i",
            help="Files, directories or globs to read URLs from (JSONL/CSV/Parquet with a url "
            "field, or .txt with one URL per line). Default: the project's raw lake.",
        ),
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only events at or after this time (ISO date or 7d).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Only events before this time (lake).")] = None,
    column: Annotated[str, typer.Option(help="The column holding URLs.")] = "url",
    sample: Annotated[
        int | None,
        typer.Option(min=1, help="Read at most this many URLs (default urls.learn.sample)."),
    ] = None,
    min_template_urls: Annotated[
        int, typer.Option(min=1, help="Leave out templates seen fewer times.")
    ] = 5,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Learn and report, but do not write the file.")
    ] = False,
) -> None:
    """Discover URL templates per host and update the knowledge file (keeping your edits).

    Reads URLs from the raw lake (or --input files), mines which path segments are
    constants, ids, category codes, slugs or page numbers and which query parameters
    matter, and merges the result into urls.knowledge (default urls/knowledge.yaml):
    names, dictionaries, ignored shapes and pinned templates you edited are kept.

    [bold]Example[/bold]: clickloop urls learn --input data/sim --since 2026-11-01
    """
    from clickloop.urls.knowledge import from_config, knowledge_path
    from clickloop.urls.sources import (
        ReadStats,
        file_batches,
        lake_available,
        lake_batches,
        learn_from,
    )

    st = state(ctx)
    project = st.project(require_config=False)
    cfg = project.config.urls
    path = knowledge_path(project)
    start, end = _when(since, "--since"), _when(until, "--until")
    limit = sample or cfg.learn.sample
    read = ReadStats()
    if inputs:
        if end is not None:
            raise UsageError("--until applies to the lake; with --input use --since only")
        batches = file_batches(inputs, column=column, since=start, stats=read)
        source = ", ".join(inputs)
    elif lake_available():
        batches = lake_batches(project, column=column, since=start, until=end, stats=read)
        source = "the raw lake"
    else:
        raise UsageError(
            "no URLs to learn from: this installation has no raw lake yet",
            hint="pass --input FILES (e.g. the output of `clickloop simulate`)",
        )
    with progress(st, "reading URLs", limit, unit="urls") as advance:
        kb, counts, previous = learn_from(
            project, batches, source=source, limit=limit, min_template_urls=min_template_urls,
            advance=advance,
            hint="ingest events first (`clickloop ingest batch …`) or pass --input FILES",
        )  # fmt: skip
    report = _learn_report(previous, kb, path, source, counts.rows, read, dry_run)
    # what feature sets and models record: the file together with the declared rules
    report["knowledge_version"] = from_config(cfg, kb, where=_where(st)).version
    if not dry_run:
        kb.save(path)

    def human() -> None:
        verb = "would write" if dry_run else "wrote"
        console.print(
            f"read {human_int(counts.rows)} URLs from {source} "
            f"({human_int(report['distinct_urls'])} distinct); {verb} [bold]{path}[/bold]"
        )
        table = Table(show_header=True, header_style="bold")
        for col in ("host", "URLs", "templates", "matched", "new", "gone"):
            table.add_column(col, justify="right" if col != "host" else "left")
        for h in report["hosts"]:
            table.add_row(
                h["host"],
                human_int(h["urls"]),
                str(h["templates"]),
                f"{h['matched']:.1%}" if h["matched"] is not None else "-",
                ", ".join(h["new"]) or "-",
                ", ".join(h["gone"]) or "-",
            )
        console.print(table)
        if report["hosts_too_small"]:
            console.print(
                f"{report['hosts_too_small']} hosts had fewer than "
                f"{cfg.learn.min_urls_per_host} URLs and were not learned "
                "(urls.learn.min_urls_per_host)"
            )
        if read.bad_lines:
            console.print(f"[yellow]{read.bad_lines} unreadable lines were skipped[/yellow]")
        console.print(
            f"file version {report['previous_version'] or '(none)'} → {report['version']}; "
            f"knowledge version (file + declared rules, recorded in feature sets and models) "
            f"{report['knowledge_version']}"
        )
        console.print("review it with `clickloop urls show`; edit and commit the file")

    emit(st, report, human)


def _where(st: State) -> str:
    p = st.project(require_config=False)
    return str(p.config_path) if p.config_path else "configuration"


def _learn_report(
    previous: Any, kb: Any, path: Path, source: str, rows: int, read: Any, dry_run: bool
) -> dict[str, Any]:
    hosts = []
    for name, h in kb.hosts.items():
        before = previous.hosts.get(name)
        old = {t.shape: t.name for t in before.templates} if before else {}
        new = {t.shape: t.name for t in h.templates}
        hosts.append(
            {
                "host": name,
                "urls": h.urls,
                "templates": len(h.templates),
                "matched": h.matched,
                "new": sorted(new[s] for s in set(new) - set(old)),
                "gone": sorted(old[s] for s in set(old) - set(new)),
            }
        )
    return {
        "knowledge": str(path),
        "written": not dry_run,
        "source": source,
        "urls": rows,
        "distinct_urls": kb.learned_from.get("distinct_urls", 0),
        "files": read.files,
        "bad_lines": read.bad_lines,
        "hosts_too_small": kb.learned_from.get("hosts_too_small", 0),
        "previous_version": previous.content_version() if previous.hosts else None,
        "version": kb.content_version(),
        "hosts": hosts,
    }


@urls_app.command("show")
def show_cmd(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Argument(help="Only this host.")] = None,
) -> None:
    """List the knowledge base: declared rules, learned templates, their fields and version.

    For every template: its URL Pattern, share of the host's URLs, and each field's
    kind, cardinality, examples and dictionary.

    [bold]Example[/bold]: clickloop urls show shop.example.com
    """
    from clickloop.urls.kbfile import KbField
    from clickloop.urls.knowledge import knowledge_path, load_knowledge

    st = state(ctx)
    project = st.project(require_config=False)
    kn = load_knowledge(project)
    kb = kn.knowledge
    if (
        host is not None
        and host not in kb.hosts
        and not any(t.matches_host(host) for t in kn.declared)
    ):
        raise UsageError(
            f"no knowledge about host {host!r}",
            hint=f"known hosts: {', '.join(sorted(kb.hosts)) or 'none'}",
        )
    rules = [
        {
            "name": t.name,
            "pattern": t.pattern,
            "query": [q.param for q in t.query],
            "fields": {
                n: {"type": f.type, "dictionary": f.dictionary} for n, f in t.fields.items()
            },
        }
        for t in kn.declared
        if host is None or t.matches_host(host)
    ]
    hosts = {h: v for h, v in kb.hosts.items() if host is None or h == host}
    columns = ["host", "domain", "template", "path", *kn.columns]
    data = {
        "knowledge": str(knowledge_path(project)),
        "version": kn.version,
        "file_version": kb.content_version(),
        "learned_at": kb.learned_at,
        "rules": rules,
        "dictionaries": sorted(kn.dictionaries),
        "columns": columns,
        "hosts": {h: v.model_dump(mode="json", exclude_none=True) for h, v in hosts.items()},
    }

    def human() -> None:
        console.print(
            f"URL knowledge [bold]{kn.version}[/bold]  ({data['knowledge']}"
            + (f", learned {kb.learned_at}" if kb.learned_at else "")
            + ")"
        )
        if rules:
            console.print("[bold]declared rules[/bold] (urls.rules, matched first)")
            for r in rules:
                console.print(f"  {r['name']:<20} {r['pattern']}")
        if not hosts and not rules:
            console.print("nothing learned yet: run `clickloop urls learn`")
        for name, h in hosts.items():
            share = f", {h.matched:.1%} matched" if h.matched is not None else ""
            console.print(f"\n[bold]{name}[/bold]  ({human_int(h.urls)} URLs{share})")
            table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
            for col in ("template", "pattern", "share", "field", "kind", "card.", "examples"):
                table.add_column(col)
            for t in h.templates:
                first = True
                rows: list[tuple[str, KbField | None, str]] = [
                    (n, f, "") for n, f in t.fields.items()
                ]
                rows += [(q.output_name(p), q, f"?{p}") for p, q in t.query.items()]
                if not rows:
                    rows = [("", None, "")]
                for n, f, src in rows:
                    kind = (
                        "" if f is None else f.kind + (f" → {f.dictionary}" if f.dictionary else "")
                    )
                    table.add_row(
                        (t.name + (" (pinned)" if t.pinned else "")) if first else "",
                        t.pattern if first else "",
                        f"{t.share:.1%}" if first and t.share is not None else "",
                        n + (f" ({src})" if src else ""),
                        kind,
                        "" if f is None or f.cardinality is None else human_int(f.cardinality),
                        "" if f is None else ", ".join(f.examples[:3]),
                    )
                    first = False
            console.print(table)
            if h.tracking:
                console.print(
                    "  tracking removed: "
                    + ", ".join(f"{k} ({human_int(v)})" for k, v in h.tracking.items())
                )
            if h.suspected_tracking:
                console.print(
                    "  [yellow]look like tracking[/yellow] (confirm in urls.tracking_params): "
                    + ", ".join(f"{k} ({human_int(v)})" for k, v in h.suspected_tracking.items())
                )
        console.print(f"\ncolumns: {', '.join(columns)}")

    emit(st, data, human)


@urls_app.command("test")
def test_cmd(
    ctx: typer.Context,
    urls: Annotated[list[str], typer.Argument(help="One or more URLs.")],
) -> None:
    """Explain how URLs are understood: normalised form, host and domain, the template
    matched, its fields (decoded through dictionaries) and the tracking parameters removed.

    Exits 1 when a URL cannot be parsed at all.

    [bold]Example[/bold]: clickloop urls test "https://shop.example.com/items/1/1234?utm_source=x"
    """
    from clickloop.urls.knowledge import load_knowledge

    st = state(ctx)
    kn = load_knowledge(st.project(require_config=False))
    results = [kn.explain(u) for u in urls]

    def human() -> None:
        for r in results:
            console.print(f"[bold]{r['url']}[/bold]")
            if not r["valid"]:
                console.print(f"  [red]invalid[/red]: {r['reason']}")
                continue
            console.print(f"  normalized  {r['normalized']}")
            console.print(f"  host        {r['host']}  (domain {r['domain']})")
            if r["tracking_removed"]:
                removed = ", ".join(f"{k}={v}" for k, v in r["tracking_removed"].items())
                console.print(f"  tracking    {removed}")
            t = r["template"]
            if t is None:
                console.print(f"  template    [yellow]none[/yellow]: {r['reason']}")
            else:
                console.print(f"  template    {t['name']}  {t['pattern']}  ({t['source']})")
                for name, f in r["fields"].items():
                    decoded = f"  ({f['raw']} via {f['dictionary']})" if f["dictionary"] else ""
                    console.print(f"  {name:<11} {f['value']!s:<24} {f['kind']}{decoded}")
        console.print(f"[dim]knowledge version {kn.version}[/dim]")

    emit(st, {"version": kn.version, "results": results}, human)
    if not all(r["valid"] for r in results):
        raise typer.Exit(EXIT_FAILURE)

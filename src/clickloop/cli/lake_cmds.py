"""``clickloop lake …``: what the raw lake holds (``stats``) and keeping it tidy (``compact``)."""

from __future__ import annotations

from typing import Annotated

import typer

from clickloop.cli.common import console, emit, human_int, state
from clickloop.cli.ingest_cmds import _accounting

lake_app = typer.Typer(
    help="The raw lake: statistics and compaction.\n\n[bold]Example[/bold]: clickloop lake stats",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


def register(app: typer.Typer) -> None:
    app.add_typer(lake_app, name="lake")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


@lake_app.command("stats")
def stats(
    ctx: typer.Context,
    partitions: Annotated[
        bool, typer.Option("--partitions", help="List every event-date partition.")
    ] = False,
) -> None:
    """Partitions, rows, bytes, newest event and arrival times, and the accounting.

    The accounting shows, per source, every record that came in: accepted
    into the lake, dropped as a duplicate, or quarantined (by reason).

    [bold]Example[/bold]: clickloop -p shop lake stats --partitions
    """
    from clickloop.lake import open_lake

    st = state(ctx)
    lake = open_lake(st.project())
    s = lake.stats()

    def human() -> None:
        ev, q = s["events"], s["quarantine"]
        console.print(f"lake [bold]{s['root']}[/bold]  (version {s['version']})")
        console.print(
            f"  events: {human_int(ev['rows'])} rows in {ev['files']} file(s), "
            f"{ev['partitions']} partition(s), {_size(ev['bytes'])}"
        )
        if ev["rows"]:
            console.print(
                f"  event time {ev['oldest_event']} → {ev['newest_event']}; "
                f"newest arrival {ev['newest_arrival']}"
            )
        console.print(
            f"  quarantine: {human_int(q['rows'])} rows in {q['files']} file(s), "
            f"{_size(q['bytes'])}"
        )
        for name, counts in s["sources"].items():
            console.print(f"  source [bold]{name}[/bold]:")
            _accounting(counts, indent="    ")
        if len(s["sources"]) > 1:
            console.print("  all sources:")
            _accounting(s["total"], indent="    ")
        if partitions:
            for p in s["partitions"]:
                console.print(
                    f"    dt={p['dt']}  {human_int(p['rows']):>12} rows  {p['files']:>4} file(s)"
                    f"  {_size(p['bytes']):>10}"
                )

    emit(st, s, human)


@lake_app.command("compact")
def compact(
    ctx: typer.Context,
    target_rows: Annotated[
        int | None,
        typer.Option(min=1000, help="Rows per merged file (default: lake.target_file_rows)."),
    ] = None,
    vacuum: Annotated[
        bool,
        typer.Option(help="Afterwards delete files no reader needs any more (see --retain)."),
    ] = True,
    retain: Annotated[
        str, typer.Option(help="Keep replaced files this long for readers still using them.")
    ] = "1h",
    rebuild_index: Annotated[
        bool, typer.Option(help="Rewrite every dedupe sidecar from the data (repair).")
    ] = False,
) -> None:
    """Merge small files of each partition into larger ones (the rows do not change).

    Streaming ingestion writes a small file per partition per micro-batch;
    compaction merges them so reads stay fast. Replaced files are deleted by
    the vacuum once older than --retain.

    [bold]Example[/bold]: clickloop -p shop lake compact --target-rows 2000000
    """
    from clickloop.errors import UsageError
    from clickloop.lake import open_lake
    from clickloop.lake.maintenance import rebuild_index as rebuild
    from clickloop.units import parse_duration

    st = state(ctx)
    try:
        keep = parse_duration(retain)
    except ValueError as exc:
        raise UsageError(f"--retain: {exc}") from None
    lake = open_lake(st.project())
    result: dict[str, object] = {}
    if rebuild_index:
        result["rebuilt_sidecars"] = rebuild(lake)
    result.update(lake.compact(target_rows=target_rows))
    if vacuum:
        result["vacuum"] = lake.vacuum(older_than=keep)

    def human() -> None:
        console.print(
            f"merged {result['merged_files']} file(s) into {result['written_files']}"
            + (
                f"; {result['skipped_partitions']} partition(s) skipped (changed meanwhile)"
                if result["skipped_partitions"]
                else ""
            )
        )
        v = result.get("vacuum")
        if isinstance(v, dict):
            console.print(
                f"vacuum: deleted {v['expired_files']} replaced file(s), {v['orphans']} "
                f"uncommitted leftover(s), {v['log_entries_pruned']} old log entries"
            )

    emit(st, result, human)

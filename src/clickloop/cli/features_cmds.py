"""``clickloop features …``: list, backfill, stream, materialize, get."""

from __future__ import annotations

import signal
import threading
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.table import Table

from clickloop.cli.common import console, emit, human_int, progress, state
from clickloop.errors import UsageError

features_app = typer.Typer(
    help="Features: one definition, computed in batch (backfill, training sets) and in "
    "streaming (online store).\n\n"
    "[bold]Example[/bold]: clickloop features backfill --start 2026-11-01 --end 2026-11-08",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

SetsArg = Annotated[
    list[str] | None,
    typer.Argument(help="Feature sets (default: every set in clickloop.yaml).", show_default=False),
]


def register(app: typer.Typer) -> None:
    app.add_typer(features_app, name="features")


def _time(value: str | None, option: str) -> datetime | None:
    """ISO date/time, ``now``, or a duration meaning that long ago (``7d``)."""
    if value is None:
        return None
    if value.strip().lower() == "now":
        return datetime.now(UTC)
    try:
        from clickloop.units import parse_duration

        return datetime.now(UTC) - parse_duration(value)
    except (ValueError, TypeError):
        pass
    try:
        t = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise UsageError(
            f"{option} {value!r} is neither a date/time nor a duration",
            hint="use e.g. 2026-11-01, 2026-11-01T12:00:00Z, now or 7d (seven days ago)",
        ) from exc
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@features_app.command("list")
def list_cmd(ctx: typer.Context, sets: SetsArg = None) -> None:
    """List feature sets: entity, features, version, offline snapshots.

    [bold]Example[/bold]: clickloop features list --json
    """
    from clickloop.features import offline
    from clickloop.features.batch import compile_sets
    from clickloop.features.source import load_knowledge

    st = state(ctx)
    project = st.project()
    compiled = compile_sets(project, sets, load_knowledge(project))
    data: list[dict[str, Any]] = []
    for fs in compiled:
        snaps = offline.snapshot_files(project, fs)
        data.append({
            "feature_set": fs.name, "entity": "|".join(fs.entity), "version": fs.version,
            "features": [{"name": f.name, "type": str(f.dtype)} for f in fs.features],
            "snapshots": len(snaps),
            "latest_snapshot": max(snaps).isoformat() if snaps else None,
            "offline_glob": offline.glob(project, fs),
        })  # fmt: skip

    def human() -> None:
        for d in data:
            console.print(
                f"[bold]{d['feature_set']}[/bold]  entity {d['entity']}  version {d['version']}"
                f"  snapshots {d['snapshots']} (latest {d['latest_snapshot'] or '—'})"
            )
            for f in d["features"]:
                console.print(f"  {f['name']}  [dim]{f['type']}[/dim]")

    emit(st, {"feature_sets": data}, human)


@features_app.command("backfill")
def backfill_cmd(
    ctx: typer.Context,
    sets: SetsArg = None,
    start: Annotated[str, typer.Option(help="Start of the range (ISO date/time or 7d).")] = "7d",
    end: Annotated[str, typer.Option(help="End of the range, included (ISO, now, or 1d).")] = "now",
    every: Annotated[str, typer.Option(help="Snapshot interval, e.g. 1d or 1h.")] = "1d",
    memory_rows: Annotated[
        int, typer.Option(help="Rows per partition in memory (larger data is split).")
    ] = 4_000_000,
    memory_limit: Annotated[
        str | None, typer.Option(help="DuckDB memory cap, e.g. 2GB (it spills beyond).")
    ] = None,
) -> None:
    """Compute feature snapshots at every interval boundary into the offline store.

    A snapshot at T holds each entity's values from events strictly before T.
    [bold]Example[/bold]: clickloop features backfill --start 2026-11-01 --end 2026-11-08
    """
    from clickloop.features import backfill
    from clickloop.units import parse_duration

    st = state(ctx)
    project = st.project()
    t0, t1 = _time(start, "--start"), _time(end, "--end")
    assert t0 is not None and t1 is not None
    try:
        step = parse_duration(every)
    except ValueError as exc:
        raise UsageError(f"--every {every!r}: {exc}") from None
    with progress(st, "backfill", None, unit="rows") as advance:
        results = backfill(project, sets, start=t0, end=t1, every=step,
                           memory_rows=memory_rows, memory_limit=memory_limit,
                           progress=advance)  # fmt: skip
    data = {"results": [r.to_dict() for r in results]}

    def human() -> None:
        table = Table(show_header=True, header_style="bold")
        for col in ("feature set", "version", "snapshots", "rows", "seconds"):
            table.add_column(col)
        for r in results:
            table.add_row(r.feature_set, r.version, str(len(r.snapshots)), human_int(r.rows),
                          f"{r.seconds:.1f}")  # fmt: skip
        console.print(table)

    emit(st, data, human)


class Bootstrap(StrEnum):
    auto = "auto"
    lake = "lake"
    none = "none"


@features_app.command("stream")
def stream_cmd(
    ctx: typer.Context,
    sets: SetsArg = None,
    group: Annotated[str, typer.Option(help="Consumer group (one state per group).")] = "features",
    until_idle: Annotated[
        float | None, typer.Option(help="Stop after this many seconds without events.")
    ] = None,
    max_seconds: Annotated[float | None, typer.Option(help="Stop after this long.")] = None,
    checkpoint_every: Annotated[
        float,
        typer.Option(help="Seconds between durable checkpoints (a crash replays at most this)."),
    ] = 1.0,
    batch_size: Annotated[int, typer.Option(help="Messages per micro-batch, at most.")] = 20_000,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus /metrics on this port.")
    ] = None,
    bootstrap: Annotated[
        Bootstrap,
        typer.Option(
            help="Seed the state from the lake first: auto (when there is no checkpoint), "
            "lake (rebuild now, dropping the checkpoint), none (the bus alone).",
        ),
    ] = Bootstrap.auto,
) -> None:
    """Run the streaming feature engine: bus events in, online store rows out.

    Without a checkpoint it first seeds its state from the raw lake (the history the
    windows need, events also on the bus counted once), then consumes the bus.
    Resumes from its checkpoint after a restart (no event counted twice); stops
    cleanly on SIGTERM / Ctrl-C.
    [bold]Example[/bold]: clickloop features stream --bootstrap auto --metrics-port 9108
    """
    from clickloop.features.runner import StreamRunner

    st = state(ctx)
    project = st.project()
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port)
    runner = StreamRunner(project, sets, group=group, checkpoint_every=checkpoint_every,
                          batch_size=batch_size, bootstrap=bootstrap.value)  # fmt: skip
    stop = threading.Event()
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    for s in previous:
        signal.signal(s, lambda *_: stop.set())
    try:
        if runner.needs_bootstrap:
            with progress(st, "bootstrap from the lake", None, unit="events") as advance:
                runner.bootstrap(progress=advance)
        with progress(st, "stream", None, unit="events") as advance:
            report = runner.run(stop=stop, until_idle=until_idle, max_seconds=max_seconds,
                                on_batch=advance)  # fmt: skip
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        runner.close()

    def human() -> None:
        f = report["freshness_ms"]
        b = report["bootstrap"]
        if b is not None:
            console.print(
                f"bootstrap from the lake (version {b['lake_version']}): "
                f"{human_int(b['events'])} events, {b['start'] or '—'} … {b['end'] or '—'}, "
                f"in {b['seconds']:.1f}s; {human_int(b['rows_written'])} online rows as of "
                f"{b['clock'] or '—'}"
            )
        console.print(
            f"consumed {human_int(report['messages'])} events in {report['seconds']:.1f}s, "
            f"wrote {human_int(report['rows_written'])} rows; clock {report['clock']}"
        )
        if f["p99"] is not None:
            console.print(f"freshness p50 {f['p50']:.0f} ms, p99 {f['p99']:.0f} ms")
        for name, s in report["sets"].items():
            console.print(
                f"  {name}: applied {human_int(s['applied'])}, too late {s['too_late']}, "
                f"rows emitted {human_int(s['rows_emitted'])}"
            )
        if report["before_bootstrap"]:
            console.print(
                f"  {human_int(report['before_bootstrap'])} bus events older than the "
                "bootstrap's dedupe memory were left to the lake (next backfill)"
            )

    emit(st, report, human)


@features_app.command("materialize")
def materialize_cmd(
    ctx: typer.Context,
    sets: SetsArg = None,
    as_of: Annotated[
        str | None, typer.Option(help="Use the newest snapshot at or before this time.")
    ] = None,
    compute: Annotated[
        bool, typer.Option(help="Compute a fresh snapshot as of --as-of (default now) first.")
    ] = False,
) -> None:
    """Load the newest offline snapshot of each set into the online store.

    [bold]Example[/bold]: clickloop features materialize --compute
    """
    from clickloop.features.materialize import materialize

    st = state(ctx)
    results = materialize(st.project(), sets, as_of=_time(as_of, "--as-of"), compute=compute)

    def human() -> None:
        for r in results:
            console.print(
                f"{r['feature_set']}: {human_int(r['rows'])} rows as of {r['as_of']} "
                f"({r['rows_per_second'] or 0:,} rows/s)"
            )

    emit(st, {"results": results}, human)


@features_app.command("get")
def get_cmd(
    ctx: typer.Context,
    entity: Annotated[str, typer.Argument(help="The entity key: a user id, a session, an item.")],
    feature_set: Annotated[
        list[str] | None,
        typer.Option(
            "--set", "-s", help="Feature sets (default: those keyed like the first, e.g. by user)."
        ),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(help="Compute from the lake as of this time instead of reading online."),
    ] = None,
) -> None:
    """Show an entity's features: from the online store, or computed as of a time.

    [bold]Example[/bold]: clickloop features get u0000042 --as-of 2026-11-05T12:00:00Z
    (an item: clickloop features get 1810723 --set item_impressions --set item_clicks)
    """
    st = state(ctx)
    project = st.project()
    if not project.config.features:
        raise UsageError("the project defines no feature sets", hint="add a features: section")
    # a key is a user, a session or an item: by default, the sets keyed like the first set
    # (usually by user); others by name with --set
    entities = {n: str(fs.entity) for n, fs in project.config.features.items()}
    first = next(iter(entities.values()))
    names = feature_set or [n for n, e in entities.items() if e == first]
    others = sorted({e for e in entities.values() if e != first}) if not feature_set else []
    values: dict[str, Any]
    when = _time(as_of, "--as-of")
    if when is not None:
        from clickloop.features import as_of_values

        values = as_of_values(project, [entity], when, names)[0]
        values.pop("entity", None)
        source = f"computed from the lake as of {when.isoformat()}"
    else:
        from clickloop.stores.base import open_online_store

        with open_online_store(project) as store:
            values = store.read(entity, names)
        source = "online store"
    data = {"entity": entity, "source": source, "feature_sets": names, "features": values}

    def human() -> None:
        console.print(f"[bold]{entity}[/bold]  ({source})")
        if not values:
            console.print("  no features (unknown entity, or nothing materialised yet)")
        for k, v in values.items():
            console.print(f"  {k} = {v!r}")
        if others:
            console.print(f"[dim]sets keyed by {', '.join(others)}: name them with --set[/dim]")

    emit(st, data, human)

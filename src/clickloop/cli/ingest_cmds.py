"""``clickloop ingest …``: acquisition commands (batch import, stream ingester, HTTP collector).

The group lives here with ``batch`` and ``stream``; ``serve`` is added by
:mod:`clickloop.cli.collector_cmds`.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from clickloop.cli.common import console, emit, human_int, progress, state

ingest_app = typer.Typer(
    help="Acquire events: batch files, the event stream, the HTTP collector.\n\n"
    "[bold]Example[/bold]: clickloop ingest batch data/*.jsonl.gz",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


def register(app: typer.Typer) -> None:
    app.add_typer(ingest_app, name="ingest")


def _accounting(counts: dict[str, Any], indent: str = "  ") -> None:
    quarantined = counts.get("quarantined", {})
    reasons = ", ".join(f"{k} {human_int(v)}" for k, v in sorted(quarantined.items()))
    total_q = sum(quarantined.values())
    console.print(
        f"{indent}{human_int(counts['received'])} received = "
        f"{human_int(counts['accepted'])} accepted + {human_int(counts['duplicates'])} "
        f"duplicates + {human_int(total_q)} quarantined" + (f" ({reasons})" if reasons else "")
    )


@ingest_app.command("batch")
def batch(
    ctx: typer.Context,
    paths: Annotated[
        list[str] | None,
        typer.Argument(
            help="Files, directories or globs; local or URLs (s3://, gs://, memory://). "
            "Default: the --source's path.",
            show_default=False,
        ),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(
            "--source", "-s", help="A configured files source: its mapping, format and path."
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Parsing threads (default: one per core).")
    ] = None,
    commit_every: Annotated[
        int, typer.Option(min=1, help="Records per lake commit (the resume granularity).")
    ] = 1_000_000,
) -> None:
    """Import CSV, JSONL (optionally gzip) and Parquet files into the raw lake.

    Every record ends in exactly one place: the lake, quarantine (with its
    reason), or dropped as a duplicate of an event already accepted. Re-running
    over the same files adds nothing; an interrupted run continues where it
    stopped.

    [bold]Example[/bold]: clickloop -p shop ingest batch data/sim/events --source logs
    """
    from clickloop.ingest.batch import import_files

    st = state(ctx)
    project = st.project()
    with progress(st, "importing", None, unit="records") as advance:
        report = import_files(
            project,
            list(paths or []),
            source=source,
            progress=advance,
            workers=workers,
            commit_every=commit_every,
        )
    out = report.to_dict()

    def human() -> None:
        done = [f for f in report.files if not f["status"].startswith("skipped")]
        skipped = len(report.files) - len(done)
        if not done:
            console.print(
                f"nothing to import: all {skipped} file(s) were imported already "
                "(a re-run adds nothing)"
            )
            return
        console.print(
            f"imported [bold]{len(done)}[/bold] file(s) into the lake as source "
            f"[bold]{report.source}[/bold]"
            + (f" ({skipped} already imported, skipped)" if skipped else "")
            + f" in {report.seconds:.1f}s ({human_int(report.rate)} records/s, "
            f"{report.commits} commit(s))"
        )
        for f in done:
            if f["status"] != "imported":
                console.print(f"  {f['file']}: {f['status']}")
        _accounting(out)

    emit(st, out, human)


@ingest_app.command("stream")
def stream(
    ctx: typer.Context,
    group: Annotated[
        str,
        typer.Option(
            "--group", "-g", help="Consumer group; ingesters in one group share partitions."
        ),
    ] = "clickloop-lake",
    source: Annotated[
        str | None,
        typer.Option("--source", "-s", help="Name to account records under (default bus:events)."),
    ] = None,
    max_events: Annotated[
        int | None,
        typer.Option(min=1, help="Micro-batch size bound (default ingest.batch_max_events)."),
    ] = None,
    max_wait: Annotated[
        str | None,
        typer.Option(help="Micro-batch time bound, e.g. 500ms (default ingest.batch_max_wait)."),
    ] = None,
    idle_exit: Annotated[
        float | None,
        typer.Option(
            help="Stop after this many seconds with nothing to read (default: run until stopped)."
        ),
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="Serve Prometheus /metrics on this port.")
    ] = None,
) -> None:
    """Consume the bus's events topic into the raw lake, exactly once, until stopped.

    Micro-batches are bounded by size and time; each is validated, committed to
    the lake, and only then acknowledged on the bus. Ctrl-C or SIGTERM finishes
    the batch in progress, then stops.

    [bold]Example[/bold]: clickloop -p shop ingest stream --group lake --metrics-port 9108
    """
    import logging
    import signal
    import threading

    from clickloop.errors import UsageError
    from clickloop.ingest.metrics import IngestMetrics
    from clickloop.ingest.stream import run_stream
    from clickloop.units import parse_duration

    st = state(ctx)
    project = st.project()
    wait = None
    if max_wait is not None:
        try:
            wait = parse_duration(max_wait)
        except ValueError as exc:
            raise UsageError(f"--max-wait: {exc}") from None
    stop = threading.Event()
    metrics = IngestMetrics()
    if metrics_port is not None:
        metrics.serve(metrics_port)
    log = logging.getLogger("clickloop.ingest.stream")
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    last = [0.0]

    def on_batch(report: Any) -> None:
        import time

        if time.monotonic() - last[0] >= 10:
            last[0] = time.monotonic()
            log.info("ingested %s", report.to_dict())

    log.info("ingesting topic events as group %s (bus: %s)", group, project.config.bus.type)
    try:
        report = run_stream(
            project,
            group=group,
            source=source,
            stop=stop,
            idle_exit=idle_exit,
            metrics=metrics,
            max_events=max_events,
            max_wait=wait,
            on_batch=on_batch,
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    out = report.to_dict()

    def human() -> None:
        console.print(
            f"stream ingester (group [bold]{group}[/bold]) stopped after {report.seconds:.1f}s: "
            f"{report.batches} batch(es)"
            + (f", {report.skipped:,} redelivered message(s) skipped" if report.skipped else "")
        )
        _accounting(out)

    emit(st, out, human)

"""Project-level commands: init, doctor, simulate, demo."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from clickloop.cli.common import console, emit, human_int, progress, state
from clickloop.errors import EXIT_FAILURE, UsageError


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("doctor")(doctor)
    app.command("simulate")(simulate)
    app.command("demo")(demo)


def init(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="Project directory to create.")],
    name: Annotated[
        str | None, typer.Option(help="Project name (default: directory name).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing clickloop.yaml.")] = False,
) -> None:
    """Create a project: a commented, working clickloop.yaml and a .gitignore.

    [bold]Example[/bold]: clickloop init shop && clickloop -p shop doctor
    """
    from clickloop.config.template import GITIGNORE, PROJECT_YAML
    from clickloop.project import CONFIG_FILE

    st = state(ctx)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / CONFIG_FILE
    if target.exists() and not force:
        raise UsageError(f"{target} already exists", hint="pass --force to overwrite it")
    project_name = name or directory.resolve().name
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in project_name) or "clickloop"
    target.write_text(PROJECT_YAML.format(name=safe), encoding="utf-8")
    gitignore = directory / ".gitignore"
    if not gitignore.exists():
        gitignore.write_text(GITIGNORE, encoding="utf-8")
    (directory / "data").mkdir(exist_ok=True)
    (directory / "urls").mkdir(exist_ok=True)
    emit(
        st,
        {"project": safe, "config": str(target)},
        lambda: console.print(
            f"created [bold]{target}[/bold]\nnext: clickloop -p {directory} doctor"
        ),
    )


def doctor(ctx: typer.Context) -> None:
    """Show which backends the project configures and whether each is reachable.

    Exits 1 if any check fails. [bold]Example[/bold]: clickloop -p shop doctor --json
    """
    from clickloop.ops.doctor import diagnose

    st = state(ctx)
    report = diagnose(st.project())

    def human() -> None:
        console.print(f"project [bold]{report.project}[/bold]  ({report.config})")
        table = Table(show_header=True, header_style="bold")
        for col in ("component", "backend", "status", "detail"):
            table.add_column(col)
        colors = {"ok": "green", "warn": "yellow", "fail": "red"}
        for c in report.checks:
            table.add_row(c.component, c.backend, f"[{colors[c.status]}]{c.status}[/]", c.detail)
        console.print(table)
        extras = ", ".join(
            f"{k}{'' if v else ' (not installed)'}" for k, v in report.extras.items()
        )
        console.print(f"extras: {extras}")
        console.print(
            "[green]all reachable[/green]"
            if report.ok
            else "[red]some backends are not reachable[/red]"
        )

    emit(st, report.to_dict(), human)
    if not report.ok:
        raise typer.Exit(EXIT_FAILURE)


def simulate(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")],
    events: Annotated[
        int, typer.Option("--events", "-n", min=1, help="Exact number of records to write.")
    ] = 1_000_000,
    days: Annotated[int, typer.Option("--days", "-d", min=1, help="Days of traffic.")] = 7,
    seed: Annotated[int, typer.Option("--seed", "-s", help="Same seed, same bytes.")] = 0,
    fmt: Annotated[str, typer.Option("--format", "-f", help="jsonl, csv or parquet.")] = "jsonl",
    start: Annotated[str, typer.Option(help="First day (UTC), YYYY-MM-DD.")] = "2026-11-01",
    users: Annotated[int | None, typer.Option(min=1, help="Visitors (default events/100).")] = None,
    malformed: Annotated[
        float,
        typer.Option(
            help="Share of malformed records (bad timestamps, missing ids, broken URLs, "
            "duplicates)."
        ),
    ] = 0.005,
    gzip: Annotated[bool, typer.Option("--gzip", help="gzip jsonl/csv files.")] = False,
    force: Annotated[bool, typer.Option(help="Replace existing data in --out.")] = False,
) -> None:
    """Generate a realistic, deterministic clickstream with ground truth.

    Writes OUT/events/ (the records) and OUT/truth/ (URL templates, category
    dictionaries, label parameters with the Bayes-optimal AUC, counts of every
    kind of malformed record).

    [bold]Example[/bold]: clickloop simulate --events 1000000 --seed 7 --out data/sim
    """
    from clickloop.simulate import FORMATS
    from clickloop.simulate import simulate as run

    st = state(ctx)
    if fmt not in FORMATS:
        raise UsageError(f"unknown --format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")
    try:
        first = date.fromisoformat(start)
    except ValueError as exc:
        raise UsageError(f"--start {start!r} is not a date", hint="use YYYY-MM-DD") from exc
    with progress(st, "simulating", events) as advance:
        summary = run(
            out,
            events=events,
            days=days,
            seed=seed,
            fmt=fmt,  # type: ignore[arg-type]
            start=first,
            users=users,
            malformed=malformed,
            compress=gzip,
            force=force,
            progress=advance,
        )

    def human() -> None:
        console.print(
            f"wrote [bold]{human_int(summary['records'])}[/bold] records in "
            f"{len(summary['files'])} {fmt} file(s) to {out / 'events'}"
        )
        types = ", ".join(f"{k} {human_int(v)}" for k, v in summary["by_type"].items())
        console.print(f"  events: {types}")
        bad = ", ".join(f"{k} {human_int(v)}" for k, v in summary["malformed"].items() if v)
        console.print(f"  malformed: {bad or 'none'}")
        console.print(
            f"  users {human_int(summary['users'])}, sessions "
            f"{human_int(summary['sessions'])}, {summary['ts_min']} → {summary['ts_max']}"
        )
        console.print(
            f"  ground truth in {out / 'truth'} (Bayes-optimal click AUC "
            f"{summary['bayes_auc']['click']:.4f})"
        )

    emit(st, summary, human)


def demo(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Option("--dir", help="Demo project directory.")] = Path(
        "clickloop-demo"
    ),
    events: Annotated[int, typer.Option("--events", "-n", min=1000)] = 300_000,
    seed: Annotated[int, typer.Option("--seed", "-s")] = 7,
) -> None:
    """Run the loop, as far as it is built, on embedded defaults, and say what it did.

    Creates (or reuses) a project in --dir, simulates traffic, and runs each
    stage in turn. [bold]Example[/bold]: clickloop demo --events 200000
    """
    from clickloop.demo import run_demo

    st = state(ctx)
    result = run_demo(directory, events=events, seed=seed, json=st.json, quiet=st.quiet)
    emit(st, result, lambda: None)  # the human story was printed step by step

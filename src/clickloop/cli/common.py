"""Shared CLI plumbing: the per-invocation state, output in text or JSON, progress bars."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from clickloop.project import Project

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


@dataclass
class State:
    """Global options of one ``clickloop`` invocation (set by the root callback)."""

    project_dir: Path | None = None
    config: Path | None = None
    json: bool = False
    quiet: bool = False
    _project: Project | None = field(default=None, repr=False)

    def project(self, *, require_config: bool = True) -> Project:
        if self._project is None or (require_config and self._project.config_path is None):
            self._project = Project.load(
                self.project_dir, config_path=self.config, require_config=require_config
            )
        return self._project


def state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    if not isinstance(obj, State):  # invoked without the root callback (tests)
        obj = State()
        ctx.find_root().obj = obj
    return obj


def emit(st: State, data: dict[str, Any], human: Callable[[], None]) -> None:
    """Print ``data`` as JSON with ``--json``, otherwise call ``human`` to render it."""
    if st.json:
        sys.stdout.write(
            orjson.dumps(data, default=str, option=orjson.OPT_INDENT_2).decode() + "\n"
        )
        sys.stdout.flush()
    else:
        human()


@contextmanager
def progress(
    st: State, description: str, total: int | None, unit: str = "events"
) -> Iterator[Callable[[int], None]]:
    """A rich progress bar (hidden with --json/--quiet or when stderr is not a terminal)."""
    show = not (st.json or st.quiet) and err_console.is_terminal
    if not show:
        yield lambda n: None
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=err_console, transient=False) as bar:
        task = bar.add_task(description, total=total, rate="")

        def advance(n: int) -> None:
            bar.advance(task, n)
            t = bar.tasks[task]
            if t.elapsed:
                bar.update(task, rate=f"{t.completed / t.elapsed:,.0f}/s")

        yield advance


def human_int(n: float) -> str:
    return f"{n:,.0f}"

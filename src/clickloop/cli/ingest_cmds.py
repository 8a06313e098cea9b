"""``clickloop ingest …``: acquisition commands (batch import, stream ingester, HTTP collector).

The group lives here; commands are added by the modules that implement them.
"""

from __future__ import annotations

import typer

ingest_app = typer.Typer(
    help="Acquire events: batch files, the event stream, the HTTP collector.\n\n"
    "[bold]Example[/bold]: clickloop ingest batch data/*.jsonl.gz",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


def register(app: typer.Typer) -> None:
    app.add_typer(ingest_app, name="ingest")

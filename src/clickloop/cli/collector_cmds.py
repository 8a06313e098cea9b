"""``clickloop ingest serve``: the HTTP collector.

Importing this module adds ``serve`` to the ``ingest`` group (``cli/app.py`` imports it).
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from clickloop.cli.common import console, emit, err_console, state
from clickloop.cli.ingest_cmds import ingest_app


def serve(
    ctx: typer.Context,
    source: Annotated[
        str | None,
        typer.Option("--source", "-s", help="Collector source to serve (default: the only one)."),
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="Interface to listen on (default: the source's host).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(help="Port (default: the source's port; 0 picks a free one).", min=0),
    ] = None,
    access_log: Annotated[
        bool, typer.Option(help="Log every request (metrics count them anyway).")
    ] = False,
) -> None:
    """Run the HTTP collector: POST /v1/events, GET /v1/p.gif, /healthz, /readyz, /metrics.

    Events are validated against the source's mapping and answered 202 only once
    durable on the bus. Stops on Ctrl-C or SIGTERM after in-flight requests finish.

    [bold]Example[/bold]: clickloop -p shop ingest serve --source web --port 8081
    """
    from clickloop.ingest.collector import find_source
    from clickloop.ingest.collector import serve as run_collector
    from clickloop.ingest.collector_auth import CollectorAuth

    st = state(ctx)
    project = st.project()
    name, cfg = find_source(project, source)
    auth = CollectorAuth.from_config(cfg, name)
    # uvicorn's own messages (start-up, shutdown, access log) go where clickloop's go
    ours = logging.getLogger("clickloop")
    for logger_name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(logger_name)
        lg.handlers = list(ours.handlers)
        lg.filters = [_drop_color]
        lg.propagate = False
        lg.setLevel(ours.level)

    def ready(url: str) -> None:
        info = {
            "event": "listening",
            "source": name,
            "url": url,
            "auth": auth.describe(),
            "bus": project.config.bus.type,
        }
        emit(
            st,
            info,
            lambda: console.print(
                f"collector [bold]{name}[/bold] listening on [bold]{url}[/bold]  "
                f"(auth: {auth.describe()}, bus: {project.config.bus.type})\n"
                f"  POST {url}/v1/events   GET {url}/v1/p.gif   "
                f"GET {url}/healthz /readyz /metrics",
                soft_wrap=True,
            ),
        )
        if not auth.enabled:
            err_console.print(
                "[bold yellow]warning:[/bold yellow] authentication is DISABLED: this source "
                "has no tokens, so anyone who can reach it can send events "
                '(add tokens: ["${COLLECTOR_TOKEN}"])',
                soft_wrap=True,
            )

    collector = run_collector(
        project, name, host=host, port=port, access_log=access_log, on_ready=ready
    )
    totals = {"event": "stopped", "source": name, **collector.metrics.totals}
    emit(
        st,
        totals,
        lambda: console.print(
            f"collector [bold]{name}[/bold] stopped: {totals['received']:,} received, "
            f"{totals['accepted']:,} accepted, {totals['rejected']:,} rejected",
            soft_wrap=True,
        ),
    )


def _drop_color(record: logging.LogRecord) -> bool:
    # uvicorn attaches an ANSI-coloured copy of each message as an extra field
    record.__dict__.pop("color_message", None)
    return True


ingest_app.command("serve")(serve)

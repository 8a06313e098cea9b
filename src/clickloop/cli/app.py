"""The ``clickloop`` command.

Exit codes: 0 success, 1 failure, 2 usage or configuration error.
Errors are turned into messages (or JSON objects with ``--json``) in exactly one
place: :func:`main`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Literal

import orjson
import typer
from typer.exceptions import TyperException

import clickloop.cli.collector_cmds  # noqa: F401  (adds `ingest serve`)
from clickloop import __version__, logs
from clickloop.cli import ingest_cmds, models_cmds, predict_cmds, project_cmds, train_cmds
from clickloop.cli.common import State, err_console
from clickloop.cli.features_cmds import register as register_features
from clickloop.cli.lake_cmds import register as register_lake
from clickloop.cli.urls_cmds import register as register_urls
from clickloop.errors import EXIT_FAILURE, EXIT_USAGE, ClickloopError, ConfigError

log = logging.getLogger(__name__)

app = typer.Typer(
    name="clickloop",
    help="The whole ML production loop for web event data: acquire, store, featurize, "
    "train, serve, A/B test.\n\n"
    "[bold]Example[/bold]: clickloop init shop && cd shop && clickloop doctor",
    rich_markup_mode="rich",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"clickloop {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    project: Annotated[
        Path | None,
        typer.Option(
            "--project",
            "-p",
            envvar="CLICKLOOP_PROJECT_DIR",
            help="Project directory (holds clickloop.yaml). Default: current directory.",
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Path to a clickloop.yaml elsewhere.")
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Machine-readable JSON on stdout (for scripting).")
    ] = False,
    log_format: Annotated[
        Literal["console", "json"] | None,
        typer.Option(
            "--log-format",
            help="Logs for people (console) or machines (json lines); "
            "default from config logging.format.",
        ),
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR; default from config."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Global options; see each command's --help for an example."""
    st = State(project_dir=project, config=config, json=json_out, quiet=quiet)
    ctx.obj = st
    fmt, level = log_format, log_level
    if fmt is None or level is None:
        try:  # logging preferences come from the project, when there is one
            cfg = st.project(require_config=False).config.logging
            fmt = fmt or cfg.format
            level = level or cfg.level
        except ClickloopError:
            pass  # the command itself will report the configuration problem
    logs.configure(fmt or "console", (level or "INFO").upper())


project_cmds.register(app)
ingest_cmds.register(app)
register_lake(app)
register_urls(app)
train_cmds.register(app)
models_cmds.register(app)
predict_cmds.register(app)
register_features(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app and map every outcome to an exit code."""
    args = sys.argv[1:] if argv is None else argv
    want_json = "--json" in args
    try:
        # standalone_mode=False: click returns the code of typer.Exit / --help
        rc = app(args=args, prog_name="clickloop", standalone_mode=False)
    except (typer.Exit, typer.Abort) as exc:  # raised outside click's own handling
        return int(getattr(exc, "exit_code", 130) or 0)
    except TyperException as exc:  # usage errors: bad option, missing argument
        if want_json:
            message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            _json_error({"error": "usage_error", "message": message})
        elif hasattr(exc, "show"):
            exc.show()
        else:
            err_console.print(f"usage error: {exc}")
        return EXIT_USAGE
    except ClickloopError as exc:
        if want_json:
            _json_error(exc.to_dict())
        else:
            label = "configuration error" if isinstance(exc, ConfigError) else "error"
            err_console.print(
                f"[bold red]{label}:[/bold red] {exc.message}", markup=True, soft_wrap=True
            )
            if exc.hint:
                err_console.print(f"[dim]hint:[/dim] {exc.hint}", soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except Exception as exc:  # the process edge: report, log the traceback, fail
        log.debug("unexpected error", exc_info=True)
        message = f"unexpected {type(exc).__name__}: {exc}"
        if want_json:
            _json_error({"error": "internal", "message": message})
        else:
            err_console.print(f"[bold red]error:[/bold red] {message}", soft_wrap=True)
            err_console.print("[dim]run with --log-level DEBUG for the traceback[/dim]")
        return EXIT_FAILURE
    return rc if isinstance(rc, int) else 0


def _json_error(obj: dict[str, object]) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

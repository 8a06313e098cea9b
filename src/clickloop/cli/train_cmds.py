"""``clickloop train MODEL``: train, evaluate, register, and report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from clickloop.cli.common import console, emit, state


def register(app: typer.Typer) -> None:
    app.command("train")(train)


def _f(v: object, digits: int = 4) -> str:
    return "—" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def train(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name under models: in clickloop.yaml.")],
    start: Annotated[
        str | None, typer.Option(help="First example time (ISO); default from config.")
    ] = None,
    end: Annotated[
        str | None, typer.Option(help="Examples strictly before this time (ISO).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Override models.<name>.seed.")] = None,
    promote: Annotated[
        bool, typer.Option("--promote", help="Promote to champion if the gates pass.")
    ] = False,
    no_register: Annotated[
        bool, typer.Option("--no-register", help="Train and report without registering.")
    ] = False,
    report: Annotated[
        Path | None, typer.Option(help="Directory for report.html/report.json.")
    ] = None,
) -> None:
    """Train a model on the lake's events: examples and labels, point-in-time features,
    sampling, feature selection, fit, calibration, evaluation report, registry.

    Registers a new version with the alias [bold]challenger[/bold]; with --promote it
    becomes [bold]champion[/bold] when it passes the promotion gates against the
    current champion on the same test slice.

    [bold]Example[/bold]: clickloop train ctr --promote
    """
    from clickloop.training import train as run

    st = state(ctx)
    project = st.project()
    result = run(
        project,
        model,
        start=start,
        end=end,
        seed=seed,
        register=not no_register,
        promote=promote,
        report_dir=report,
    )
    s = result.summary()

    def human() -> None:
        t, b = s["test"], s["baseline"]
        head = f"{model}:{s['version']}" if s["version"] else f"{model} (not registered)"
        console.print(
            f"trained [bold]{head}[/bold] on {s['examples']:,} examples; "
            f"{s['features_kept']} of {s['features_candidates']} features kept"
        )
        console.print(
            f"  test  ROC-AUC {_f(t['roc_auc'])}  PR-AUC {_f(t['pr_auc'])}  "
            f"log loss {_f(t['log_loss'])} (baseline {_f(b['log_loss'])})  "
            f"ECE {_f(t['ece'])}"
        )
        console.print(
            f"  at threshold {_f(t['threshold'])}: precision {_f(t['precision'], 3)}"
            f"  recall {_f(t['recall'], 3)}  F1 {_f(t['f1'], 3)}  "
            f"accuracy {_f(t['accuracy'], 3)}"
        )
        ch = s["champion"]
        if ch:
            if ch.get("error"):
                console.print(f"  champion v{ch['version']} could not be scored: {ch['error']}")
            else:
                console.print(
                    f"  champion v{ch['version']} on the same test slice: ROC-AUC "
                    f"{_f(ch['roc_auc'])}  log loss {_f(ch['log_loss'])}"
                )
        g = s["gates"]
        if g:
            verdict = "[green]pass[/green]" if g["passed"] else "[red]fail[/red]"
            console.print(f"  promotion gates: {verdict}")
            for c in g["checks"]:
                if not c["passed"]:
                    console.print(f"    ✗ {c['detail']}")
        if s["promoted"]:
            console.print(f"  [green]promoted[/green] {model}:{s['version']} to champion")
        elif s["version"]:
            console.print(f"  alias challenger → {model}:{s['version']}")
        console.print(f"report: {s['report']}")

    emit(st, s, human)

"""``clickloop predict batch``: score a table with a registered model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from clickloop.cli.common import console, emit, progress, state

predict_app = typer.Typer(
    help="Score with registered models.\n\n"
    "[bold]Example[/bold]: clickloop predict batch --model ctr@champion --input r.parquet "
    "--output s.parquet",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


def register(app: typer.Typer) -> None:
    app.add_typer(predict_app, name="predict")


@predict_app.command("batch")
def batch(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", "-m", help="ctr@champion, ctr:3 or champion.")],
    input_path: Annotated[
        Path, typer.Option("--input", "-i", help="Rows to score (.parquet, .csv, .jsonl).")
    ],
    output_path: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the scores (same formats).")
    ],
) -> None:
    """Score a table: each row needs the entity (user_id) and ts; url and props add
    request-time features. Feature sets are joined point-in-time, as in training.
    Writes the input columns plus score, decision (at the model's threshold) and model.

    [bold]Example[/bold]: clickloop predict batch -m ctr@champion -i req.parquet -o scores.parquet
    """
    from clickloop.training.batch import predict_batch

    st = state(ctx)
    with progress(st, "scoring", None, unit="rows") as advance:
        out = predict_batch(st.project(), model, input_path, output_path, progress=advance)
    emit(
        st,
        out,
        lambda: console.print(
            f"scored {out['rows']:,} rows with {out['model']} (mean score "
            f"{out['mean_score'] or 0:.4f}) → {out['output']}"
        ),
    )

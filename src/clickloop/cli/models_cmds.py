"""``clickloop models list | show | promote | rollback | export``: the model registry."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from clickloop.cli.common import console, emit, state

models_app = typer.Typer(
    help="The model registry: versions with lineage, aliases, promotion gates, rollback.\n\n"
    "[bold]Example[/bold]: clickloop models list",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")


def _f(v: Any) -> str:
    return "—" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


@models_app.command("list")
def list_(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(help="List this model's versions.")] = None,
) -> None:
    """List models (or one model's versions) with their aliases and test metrics.

    [bold]Example[/bold]: clickloop models list ctr
    """
    from clickloop.registry import open_registry

    st = state(ctx)
    with open_registry(st.project()) as reg:
        if model is None:
            rows = reg.list_models()

            def human() -> None:
                t = Table("model", "versions", "latest", "aliases", "latest at")
                for r in rows:
                    aliases = ", ".join(f"{a}→{v}" for a, v in sorted(r["aliases"].items()))
                    t.add_row(
                        r["model"],
                        str(r["versions"]),
                        str(r["latest"]),
                        aliases or "—",
                        r["latest_at"] or "—",
                    )
                console.print(t if rows else "no models registered yet (run `clickloop train`)")

            emit(st, {"models": rows}, human)
            return
        versions = reg.list_versions(model)
    data = [
        {
            "version": v.version,
            "created_at": v.created_at,
            "aliases": v.aliases,
            "algorithm": v.algorithm,
            "test": v.metrics.get("test", {}),
        }
        for v in versions
    ]

    def human_versions() -> None:
        t = Table("version", "aliases", "algorithm", "ROC-AUC", "log loss", "ECE", "created")
        for v in data:
            m = v["test"]
            t.add_row(
                str(v["version"]),
                ", ".join(v["aliases"]) or "—",
                v["algorithm"],
                _f(m.get("roc_auc")),
                _f(m.get("log_loss")),
                _f(m.get("ece")),
                v["created_at"],
            )
        console.print(t if data else f"model {model!r} has no versions")

    emit(st, {"model": model, "versions": data}, human_versions)


@models_app.command("show")
def show(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="MODEL, MODEL:VERSION or MODEL@ALIAS.")],
) -> None:
    """Show one version: metrics, parameters, lineage, aliases and alias history.

    [bold]Example[/bold]: clickloop models show ctr@champion --json
    """
    from clickloop.registry import open_registry

    st = state(ctx)
    with open_registry(st.project()) as reg:
        mv = reg.resolve(ref)
        history = [e.__dict__ for e in reg.history(mv.model)]
    data = mv.to_dict() | {"history": history}

    def human() -> None:
        console.print(
            f"[bold]{mv.ref}[/bold]  {', '.join(mv.aliases) or 'no alias'}  "
            f"({mv.algorithm}, created {mv.created_at})"
        )
        t = mv.metrics.get("test", {})
        console.print(
            "  test: "
            + "  ".join(
                f"{k} {_f(t.get(k))}"
                for k in ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "f1", "threshold")
            )
        )
        lin = mv.lineage
        data_ = lin.get("data", {})
        console.print(
            f"  data: {data_.get('examples')} examples {data_.get('first')} → "
            f"{data_.get('last')}, fingerprint {mv.fingerprint}"
        )
        console.print(
            f"  features: {lin.get('features')}  URL knowledge: {lin.get('url_knowledge')}"
        )
        console.print(f"  code: {lin.get('code')}  libraries: {lin.get('libraries')}")
        console.print(f"  artifact: {mv.artifact_uri}")
        comp = mv.metrics.get("comparison")
        if comp and comp.get("gates"):
            console.print(
                f"  vs champion v{comp['champion_version']}: gates "
                f"{'pass' if comp['gates']['passed'] else 'fail'}"
            )
        for e in history[-8:]:
            console.print(
                f"  {e['at']}  {e['alias']}: {e['previous']} → {e['version']} "
                f"({e['kind']}{': ' + e['reason'] if e['reason'] else ''})"
            )

    emit(st, data, human)


@models_app.command("promote")
def promote(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="MODEL:VERSION (or MODEL@ALIAS) to promote.")],
    alias: Annotated[str, typer.Option(help="Alias to set: champion or challenger.")] = "champion",
    force: Annotated[bool, typer.Option(help="Promote even if the gates fail.")] = False,
    reason: Annotated[str, typer.Option(help="Why (kept in the alias history).")] = "",
) -> None:
    """Point an alias at a version. For champion, the promotion gates of models.<name>.gates
    must pass against the current champion on the same test slice (or --force).

    [bold]Example[/bold]: clickloop models promote ctr:4
    """
    from clickloop.training.promotion import promote as run

    st = state(ctx)
    out = run(st.project(), ref, alias=alias, force=force, reason=reason)

    def human() -> None:
        g = out["gates"]
        if g:
            for c in g["checks"]:
                console.print(f"  {'✓' if c['passed'] else '✗'} {c['detail']}")
        console.print(
            f"{out['model']}@{out['alias']} → version {out['version']} "
            f"(was {out['previous']}){' [yellow](forced)[/yellow]' if out['forced'] else ''}"
        )

    emit(st, out, human)


@models_app.command("rollback")
def rollback(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name.")],
    alias: Annotated[str, typer.Option(help="Alias to roll back.")] = "champion",
    reason: Annotated[str, typer.Option(help="Why (kept in the alias history).")] = "",
) -> None:
    """Point an alias back at the version it held before its latest promotion.

    [bold]Example[/bold]: clickloop models rollback ctr --reason "CTR dropped"
    """
    from clickloop.registry import open_registry

    st = state(ctx)
    with open_registry(st.project()) as reg:
        e = reg.rollback(model, alias, reason=reason)
    out = {"model": model, "alias": alias, "version": e.version, "previous": e.previous}
    emit(
        st,
        out,
        lambda: console.print(
            f"{model}@{alias} → version {e.version} (rolled back from {e.previous})"
        ),
    )


@models_app.command("export")
def export(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="MODEL:VERSION or MODEL@ALIAS.")],
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI (default: MLflow's own).")
    ] = None,
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment name.")] = None,
) -> None:
    """Export a version to MLflow: parameters, metrics, lineage and the artifact files
    (needs the mlflow extra).

    [bold]Example[/bold]: clickloop models export ctr@champion --tracking-uri http://mlflow:5000
    """
    from clickloop.registry.mlflow_export import export_version

    st = state(ctx)
    out = export_version(st.project(), ref, tracking_uri=tracking_uri, experiment=experiment)
    emit(st, out, lambda: console.print(f"exported {ref} to MLflow run {out['run_id']}"))

"""Export a registered version to MLflow (the ``mlflow`` extra).

>>> export_version(project, "ctr:3", tracking_uri="http://mlflow:5000")   # doctest: +SKIP
{'run_id': '…', 'registered_model': 'ctr', 'model_version': '1'}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clickloop.errors import require

if TYPE_CHECKING:
    from clickloop.project import Project


def _flat(prefix: str, obj: Any, out: dict[str, float]) -> None:
    if isinstance(obj, bool):
        return
    if isinstance(obj, int | float):
        out[prefix] = float(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)


def export_version(
    project: Project,
    ref: str,
    *,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    register: bool = True,
) -> dict[str, Any]:
    """Log a version's parameters, scalar metrics, lineage and artifact files as an MLflow run."""
    mlflow = require("mlflow", "mlflow", feature="exporting models to MLflow")
    from clickloop.registry import open_registry

    with open_registry(project) as reg:
        mv = reg.resolve(ref)
        path = reg.download(mv, project.state_path("cache", "models", mv.model, str(mv.version)))
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment or f"clickloop-{project.name}")
    metrics: dict[str, float] = {}
    _flat("", mv.metrics.get("test", {}), metrics)
    with mlflow.start_run(run_name=mv.ref) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in mv.params.items()})
        mlflow.log_metrics({k: v for k, v in metrics.items() if "." not in k})
        mlflow.set_tags(
            {
                "clickloop.ref": mv.ref,
                "clickloop.fingerprint": mv.fingerprint,
                "clickloop.algorithm": mv.algorithm,
            }
        )
        mlflow.log_dict(mv.lineage, "lineage.json")
        mlflow.log_artifacts(str(path), artifact_path="model")
        out: dict[str, Any] = {"run_id": run.info.run_id}
    if register:
        res = mlflow.register_model(f"runs:/{out['run_id']}/model", mv.model)
        out.update(registered_model=mv.model, model_version=str(res.version))
    return out

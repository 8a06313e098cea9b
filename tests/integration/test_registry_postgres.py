"""The registry on a real PostgreSQL server with artifacts in object storage (fsspec)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pyarrow.json as pajson
import pytest
import sqlalchemy as sa

from clickloop.cli.app import main
from clickloop.events.mapping import Mapping
from clickloop.project import Project
from clickloop.registry import load_model, open_registry
from clickloop.training import train

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = """\
models:
  ctr:
    examples: "type = 'impression'"
    label: {event: "type = 'click'", match: [user_id, props.item_id], within: 30m}
    context: [props.position]
    features: [request.url]
    split: {by: time, test: 25%, validation: 15%, gap: 30m}
    algorithm: {type: logistic}
"""


@pytest.fixture
def pg_project(tmp_path: Path, postgres_server, sim_small) -> tuple[Project, object]:
    admin = server_url = postgres_server.url
    name = f"reg_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(
        admin.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with engine.connect() as c:
        c.execute(sa.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    url = server_url.rsplit("/", 1)[0] + "/" + name
    bucket = f"memory://clickloop-{uuid.uuid4().hex[:8]}/artifacts"
    (tmp_path / "clickloop.yaml").write_text(
        "project: pg\n"
        f"stores:\n  metadata: {{type: postgres, url: '${{PG_URL}}', artifacts: '{bucket}'}}\n"
        + MODEL
    )
    project = Project.load(tmp_path, env={"PG_URL": url})
    mapping = Mapping()
    events = [
        mapping.validate_table(pajson.read_json(f)).events
        for f in sorted((sim_small / "events").glob("*.jsonl"))
    ]
    import pyarrow as pa

    return project, pa.concat_tables(events)


def test_versions_live_in_postgres_and_artifacts_in_object_storage(pg_project, tmp_path):
    project, events = pg_project
    first = train(project, "ctr", events=events, promote=True)
    second = train(project, "ctr", events=events, seed=5)
    assert (first.version, second.version) == (1, 2)
    with open_registry(project) as reg:
        assert reg.engine.dialect.name == "postgresql"
        mv = reg.resolve("ctr@champion")
        assert mv.version == 1 and mv.artifact_uri.startswith("memory://")
        assert reg.resolve("ctr@challenger").version == 2
        assert second.champion["version"] == 1
    # the secret in the URL never reaches the lineage or the report
    secret = project.config.stores.metadata.url.get_secret_value().split(":")[2].split("@")[0]
    assert secret not in json.dumps(mv.lineage) and secret not in first.report_html.read_text()
    model = load_model(project, "ctr")
    assert model.version == 1 and model.estimator.kind == "logistic"
    cached = project.state_path("cache", "models", "ctr", "1")
    assert (cached / "model.joblib").exists()
    p = model.predict_proba(model.request_columns(events.slice(0, 50)))
    assert np.all((p > 0) & (p < 1))


def test_cli_models_commands_on_postgres(pg_project, capsys, monkeypatch):
    project, events = pg_project
    train(project, "ctr", events=events, promote=True)
    train(project, "ctr", events=events, seed=7)
    monkeypatch.setenv("PG_URL", project.config.stores.metadata.url.get_secret_value())
    assert main(["-p", str(project.root), "--json", "models", "promote", "ctr:2", "--force"]) == 0
    capsys.readouterr()
    assert main(["-p", str(project.root), "--json", "models", "list", "ctr"]) == 0
    versions = json.loads(capsys.readouterr().out)["versions"]
    assert [v["aliases"] for v in versions] == [[], ["challenger", "champion"]]
    assert main(["-p", str(project.root), "--json", "models", "rollback", "ctr"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 1

"""The learning stage through the CLI: lake → features → train → registry → batch scoring."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from clickloop.cli.app import main
from clickloop.errors import InvalidInputError
from clickloop.project import Project
from clickloop.simulate import simulate

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROJECT = """\
project: e2e
urls:
  rules:
    - pattern: "https://shop.example.com/items/:category/:item_id"
      fields: {category: {type: category, dictionary: shop}, item_id: {type: int}}
  dictionaries:
    shop: {1: clothes, 2: games, 3: books, 4: electronics, 5: home, 6: sports, 7: beauty,
           8: toys}
features:
  user_activity:
    entity: user_id
    where: "type = 'page_view'"
    derive: {category: url.category}
    aggregate:
      - {op: count, windows: [1h, 1d, 7d]}
      - {op: histogram, column: category, k: 8, windows: [7d]}
      - {op: since_last}
  user_clicks:
    entity: user_id
    where: "type = 'click'"
    aggregate:
      - {op: count, windows: [1d, 7d]}
models:
  ctr:
    examples: "type = 'impression'"
    label: {event: "type = 'click'", match: [user_id, props.item_id], within: 30m}
    context: [props.position]
    features: [user_activity, user_clicks, request.url]
    crosses: [{feature: user_activity__histogram_category_7d, key: item__category}]
    split: {by: time, test: 25%, validation: 15%, gap: 30m}
    sampling: {negatives: 0.3}
    algorithm: {type: lightgbm, params: {num_threads: 1}}
    gates: {metric: roc_auc, min_gain: 0.0}
"""


def cli(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    rc = main(["--json", *args])
    out = capsys.readouterr().out
    return rc, (json.loads(out) if out.strip() else {})


def test_train_register_and_score_through_the_cli(tmp_path: Path, capsys):
    proj = tmp_path / "shop"
    proj.mkdir()
    (proj / "clickloop.yaml").write_text(PROJECT)
    sim = tmp_path / "sim"
    summary = simulate(sim, events=80_000, days=3, seed=21, malformed=0.0)
    rc, out = cli("-p", str(proj), "ingest", "batch", str(sim / "events"), capsys=capsys)
    assert rc == 0, out

    rc, s = cli("-p", str(proj), "train", "ctr", "--promote", capsys=capsys)
    assert rc == 0, s
    assert s["version"] == 1 and s["promoted"] is True
    assert 0.55 < s["test"]["roc_auc"] < summary["bayes_auc"]["click"]
    assert s["test"]["log_loss"] < s["baseline"]["log_loss"]
    html = Path(s["report"]).read_text()
    assert "<svg" in html and "user_activity__" in html

    rc, listing = cli("-p", str(proj), "models", "list", capsys=capsys)
    assert rc == 0 and listing["models"][0]["aliases"] == {"champion": 1, "challenger": 1}
    rc, shown = cli("-p", str(proj), "models", "show", "ctr@champion", capsys=capsys)
    assert rc == 0 and set(shown["lineage"]["features"]) == {"user_activity", "user_clicks"}
    assert shown["lineage"]["url_knowledge"]

    # score raw impressions from the lake's source files: features joined point-in-time
    from clickloop.lake import open_lake

    events = open_lake(Project.load(proj)).events().to_table()
    imps = events.filter(pc.equal(events["type"], "impression")).slice(0, 500)
    req = proj / "requests.parquet"
    pq.write_table(imps.select(["user_id", "ts", "url", "props"]), req)
    rc, scored = cli(
        "-p",
        str(proj),
        "predict",
        "batch",
        "--model",
        "ctr@champion",
        "--input",
        str(req),
        "--output",
        str(proj / "scores.parquet"),
        capsys=capsys,
    )
    assert rc == 0, scored
    result = pq.read_table(proj / "scores.parquet")
    assert result.num_rows == 500 and scored["model"] == "ctr:1"
    scores = result.column("score").to_numpy()
    assert ((scores > 0) & (scores < 1)).all() and len(set(scores.round(6))) > 20

    # the same requests as JSONL, props as JSON objects (how clients and the simulator write
    # them): read into the event contract's props map, they score identically
    rows = imps.select(["user_id", "ts", "url", "props"]).to_pylist()
    lines = [
        json.dumps({**r, "ts": r["ts"].isoformat(), "props": dict(r["props"] or [])}) for r in rows
    ]
    (proj / "requests.jsonl").write_text("\n".join(lines) + "\n")
    args = ["-m", "ctr@champion", "-i", str(proj / "requests.jsonl"), "-o", str(proj / "s.parquet")]
    rc, scored = cli("-p", str(proj), "predict", "batch", *args, capsys=capsys)
    assert rc == 0, scored
    again = pq.read_table(proj / "s.parquet").column("score").to_numpy()
    assert (abs(again - scores) < 1e-9).all()

    # streamed in small batches, to CSV: the same scores; a bad row in a later batch leaves
    # no output behind (the file appears whole or not at all)
    from clickloop.training.batch import predict_batch

    csv_in = proj / "requests.csv"
    plain = imps.select(["user_id", "ts", "url"])
    pacsv.write_csv(plain, csv_in)
    res = predict_batch(Project.load(proj), "ctr@champion", csv_in, proj / "s.csv", batch_rows=128)
    assert res["rows"] == 500
    predict_batch(Project.load(proj), "ctr@champion", csv_in, proj / "w.csv")
    small = pacsv.read_csv(proj / "s.csv").column("score").to_numpy()
    assert (abs(small - pacsv.read_csv(proj / "w.csv").column("score").to_numpy()) < 1e-9).all()
    lines = csv_in.read_text().splitlines()
    lines[400] = lines[400].replace(lines[400].split(",")[1], '"not a time"')
    csv_in.write_text("\n".join(lines) + "\n")
    with pytest.raises(InvalidInputError, match=r"rows 385–500"):
        predict_batch(Project.load(proj), "ctr@champion", csv_in, proj / "bad.csv", batch_rows=128)
    assert not (proj / "bad.csv").exists() and not (proj / "bad.csv.partial").exists()

    # a second version is compared with the champion on its own test slice
    rc, s2 = cli("-p", str(proj), "train", "ctr", "--seed", "3", capsys=capsys)
    assert rc == 0 and s2["version"] == 2 and s2["champion"]["version"] == 1
    assert s2["champion"]["roc_auc"] is not None and s2["gates"] is not None
    rc, _ = cli("-p", str(proj), "models", "promote", "ctr:2", "--force", capsys=capsys)
    assert rc == 0
    rc, back = cli("-p", str(proj), "models", "rollback", "ctr", capsys=capsys)
    assert rc == 0 and back["version"] == 1
    rc, err = cli("-p", str(proj), "models", "rollback", "ctr", capsys=capsys)
    assert rc == 1 and err["error"] == "conflict"
    rc, err = cli("-p", str(proj), "models", "show", "ctr:9", capsys=capsys)
    assert rc == 1 and "no version 9" in err["message"]


def test_training_an_unknown_model_is_a_usage_error(tmp_path: Path, capsys):
    (tmp_path / "clickloop.yaml").write_text(PROJECT)
    rc, err = cli("-p", str(tmp_path), "train", "nope", capsys=capsys)
    assert rc == 2 and "no model named 'nope'" in err["message"]

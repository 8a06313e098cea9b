import hashlib
import json
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest
import urlpattern

from clickloop.errors import UsageError
from clickloop.simulate import generator as gen
from clickloop.simulate import simulate
from clickloop.simulate.world import TRACKING_PARAMS


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def records(root: Path) -> list[dict]:
    out = []
    for f in sorted((root / "events").glob("*.jsonl")):
        out.extend(orjson.loads(line) for line in f.read_bytes().splitlines())
    return out


def truth(root: Path, name: str) -> dict:
    return json.loads((root / "truth" / f"{name}.json").read_text())


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path):
    simulate(tmp_path / "a", events=5000, days=2, seed=3)
    simulate(tmp_path / "b", events=5000, days=2, seed=3)
    simulate(tmp_path / "c", events=5000, days=2, seed=4)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_writes_exactly_the_requested_number_of_parseable_records(sim_small: Path):
    rows = records(sim_small)
    summary = truth(sim_small, "summary")
    assert len(rows) == summary["records"] == 30_000
    assert sum(f["records"] for f in summary["files"]) == 30_000
    assert {r["type"] for r in rows} == {"page_view", "impression", "click", "conversion"}


def test_malformed_records_are_what_the_truth_says(sim_small: Path):
    rows = records(sim_small)
    summary = truth(sim_small, "summary")
    assert sum(1 for r in rows if "event_id" not in r) == summary["malformed"]["missing_event_id"]
    assert sum(1 for r in rows if "user_id" not in r) == summary["malformed"]["missing_user_id"]
    bad_ts = {"2026-13-45T25:61:00Z", "not-a-date", "31/31/2026 99:99"}
    assert sum(1 for r in rows if r["ts"] in bad_ts) == summary["malformed"]["bad_ts"]
    ids = [r["event_id"] for r in rows if "event_id" in r]
    assert len(ids) - len(set(ids)) == summary["malformed"]["duplicate"] > 0
    lines = [
        line
        for f in sorted((sim_small / "events").glob("*.jsonl"))
        for line in f.read_bytes().splitlines()
    ]
    assert len(lines) - len(set(lines)) == summary["malformed"]["duplicate"]  # exact copies


def test_late_and_out_of_order_arrivals_exist(sim_small: Path):
    rows = [r for r in records(sim_small) if r["ts"][:4] == "2026" and r["ts"][5:7] == "11"]
    delays = [
        datetime.fromisoformat(r["received_at"]) - datetime.fromisoformat(r["ts"]) for r in rows
    ]
    assert (
        sum(d > timedelta(minutes=1) for d in delays)
        >= truth(sim_small, "summary")["late_arrivals"] * 0.9
    )
    assert any(d > timedelta(days=1) for d in delays)
    ts = [r["ts"] for r in rows]
    assert ts != sorted(ts)  # files are in arrival order, so event time is not monotonic


def _clean(url: str) -> tuple[str, str, dict[str, str]]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    path = parts.path.rstrip("/") or "/"
    query = {k: v for k, v in parse_qsl(parts.query) if k not in TRACKING_PARAMS}
    return host, path, query


def test_every_page_url_matches_exactly_one_declared_template(sim_small: Path):
    hosts = truth(sim_small, "urls")["hosts"]
    patterns = {
        h: [(t, urlpattern.URLPattern({"pathname": t["path"]})) for t in spec["templates"]]
        for h, spec in hosts.items()
    }
    checked = 0
    for r in records(sim_small):
        if r["type"] != "page_view" or not r.get("url", "").startswith("http"):
            continue
        if "://" not in r["url"] or r["url"].startswith("htp:"):
            continue
        host, path, query = _clean(r["url"])
        matches = [t for t, p in patterns[host] if p.test({"pathname": path})]
        assert len(matches) == 1, (r["url"], [t["name"] for t in matches])
        assert set(query) <= set(matches[0]["query"]), r["url"]
        checked += 1
    assert checked > 5000


def test_truth_dictionaries_cover_the_category_codes_in_urls(sim_small: Path):
    codes = truth(sim_small, "dictionaries")["shop_categories"]
    seen = {
        urlsplit(r["url"]).path.split("/")[2]
        for r in records(sim_small)
        if r["type"] == "page_view"
        and "/items/" in r.get("url", "")
        and r["url"].startswith("http")
    }
    assert seen <= set(codes) and len(seen) == 8
    assert codes["1"] == "clothes"


def test_every_click_follows_an_impression_of_the_same_item(sim_small: Path):
    shown: dict[tuple[str, str], str] = {}
    rows = [
        r
        for r in records(sim_small)
        if "user_id" in r and r["ts"][:2] == "20" and r["ts"][5:7] != "13"
    ]
    for r in sorted(rows, key=lambda r: r["ts"]):
        key = (r["user_id"], r.get("props", {}).get("item_id", ""))
        if r["type"] == "impression":
            shown.setdefault(key, r["ts"])
        elif r["type"] == "click" and key in shown:
            gap = datetime.fromisoformat(r["ts"]) - datetime.fromisoformat(shown[key])
            assert timedelta(0) < gap
    clicks = sum(r["type"] == "click" for r in rows)
    matched = sum(
        r["type"] == "click" and (r["user_id"], r["props"]["item_id"]) in shown for r in rows
    )
    assert matched >= 0.97 * clicks  # the rest lost their impression to a malformed record


def test_labels_carry_real_signal_and_a_measured_ceiling(sim_small: Path):
    labels = truth(sim_small, "labels")
    assert 0.75 < labels["click"]["bayes_auc"] < 0.95
    assert 0.02 < labels["click"]["rate"] < 0.15
    assert labels["click"]["coefficients"]["interest"] > 0
    summary = truth(sim_small, "summary")
    assert labels["click"]["impressions"] == summary["by_type"]["impression"]


def test_memory_is_bounded_by_the_batch_not_the_total(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(gen, "MAX_SESSIONS_PER_BATCH", 200)
    sizes = [c.num_rows for c in gen.Generator(gen.SimSpec(events=60_000, days=1)).chunks()]
    assert sum(sizes) == 60_000
    assert max(sizes) < 200 * 45  # sessions × max events per session, whatever the total


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_other_formats_write_the_same_count(tmp_path: Path, fmt: str):
    summary = simulate(tmp_path, events=3000, days=1, seed=1, fmt=fmt)
    assert summary["records"] == 3000
    assert all(f["file"].endswith(fmt) for f in summary["files"])


def test_gzip_is_deterministic_too(tmp_path: Path):
    simulate(tmp_path / "a", events=2000, days=1, seed=1, compress=True)
    simulate(tmp_path / "b", events=2000, days=1, seed=1, compress=True)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")


def test_refuses_to_overwrite_without_force(tmp_path: Path):
    simulate(tmp_path, events=1000, days=1)
    with pytest.raises(UsageError, match="--force"):
        simulate(tmp_path, events=1000, days=1)
    assert simulate(tmp_path, events=1000, days=1, force=True)["records"] == 1000

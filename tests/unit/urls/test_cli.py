"""``clickloop urls learn | show | test`` through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from clickloop.cli.app import main


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "clickloop.yaml").write_text(
        "project: shop\n"
        "urls:\n"
        "  dictionaries:\n"
        "    shop_categories: {1: clothes, 2: games, 3: books, 4: electronics, 5: home,\n"
        "                      6: sports, 7: beauty, 8: toys}\n"
    )
    return tmp_path


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    rc = main(["--json", *args])
    out = capsys.readouterr().out
    return rc, json.loads(out) if out.strip() else {}


def test_learn_show_test_round_trip(
    project: Path, sim_small: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = str(project)
    rc, report = run_json(capsys, "-p", p, "urls", "learn", "--input", str(sim_small))
    assert rc == 0, report
    kb_path = project / "urls" / "knowledge.yaml"
    assert report["written"] and Path(report["knowledge"]) == kb_path and kb_path.is_file()
    assert report["urls"] > 25_000 and report["previous_version"] is None
    hosts = {h["host"]: h for h in report["hosts"]}
    assert set(hosts) == {
        "shop.example.com", "www.shop-two.co.uk", "news.example.org", "m.video.example.net",
    }  # fmt: skip
    assert all(h["matched"] > 0.99 for h in hosts.values())

    rc, shown = run_json(capsys, "-p", p, "urls", "show", "shop.example.com")
    assert rc == 0 and list(shown["hosts"]) == ["shop.example.com"]
    patterns = {t["pattern"] for t in shown["hosts"]["shop.example.com"]["templates"]}
    assert "/items/:item_category/:item_id" in patterns
    assert shown["version"] and "item_category" in shown["columns"]

    url = "https://Shop.Example.com/items/2/1234567/?utm_source=mail"
    rc, tested = run_json(capsys, "-p", p, "urls", "test", url)
    r = tested["results"][0]
    assert rc == 0 and r["template"]["name"] == "items"
    assert r["normalized"] == "https://shop.example.com/items/2/1234567"
    assert r["fields"]["item_id"]["kind"] == "id"
    assert r["tracking_removed"] == {"utm_source": "mail"}


def test_relearning_keeps_reviewed_edits(
    project: Path, sim_small: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = str(project)
    assert main(["-p", p, "--quiet", "urls", "learn", "--input", str(sim_small)]) == 0
    kb_path = project / "urls" / "knowledge.yaml"
    text = kb_path.read_text()
    # a reviewer renames the item category, attaches a dictionary, renames a template,
    # pins a hand-written template and ignores a shape
    text = text.replace(":item_category", ":category").replace(
        "item_category: {kind: category,", "category: {kind: category, dictionary: shop_categories,"
    )
    data = yaml.safe_load(text)
    shop = data["hosts"]["shop.example.com"]
    for t in shop["templates"]:
        if t["pattern"] == "/brand/:brand":
            t["name"] = "brand_page"
    shop["templates"].append({"name": "sale", "pattern": "/sale/:campaign", "pinned": True})
    shop["ignore"] = ["/cart"]
    kb_path.write_text(yaml.safe_dump(data, sort_keys=False))
    capsys.readouterr()

    rc, report = run_json(capsys, "-p", p, "urls", "learn", "--input", str(sim_small))
    assert rc == 0
    shop_report = next(h for h in report["hosts"] if h["host"] == "shop.example.com")
    assert shop_report["gone"] == ["cart"] and shop_report["new"] == []
    shop = yaml.safe_load(kb_path.read_text())["hosts"]["shop.example.com"]
    by_pattern = {t["pattern"]: t for t in shop["templates"]}
    assert "/items/:category/:item_id" in by_pattern
    assert by_pattern["/items/:category/:item_id"]["fields"]["category"]["dictionary"] == (
        "shop_categories"
    )
    assert by_pattern["/brand/:brand"]["name"] == "brand_page"
    assert by_pattern["/sale/:campaign"]["pinned"] is True
    assert "/cart" not in by_pattern and shop["ignore"] == ["/cart"]

    rc, tested = run_json(capsys, "-p", p, "urls", "test", "https://shop.example.com/items/2/77")
    assert tested["results"][0]["fields"]["category"]["value"] == "games"


def test_dry_run_writes_nothing(
    project: Path, sim_small: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, report = run_json(
        capsys, "-p", str(project), "urls", "learn", "--input", str(sim_small), "--dry-run"
    )
    assert rc == 0 and report["written"] is False
    assert not (project / "urls" / "knowledge.yaml").exists()


def test_learn_reads_txt_and_respects_sample(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [f"https://example.org/items/{i % 50_000 + 100_000}" for i in range(1000)]
    (tmp_path / "urls.txt").write_text("\n".join(lines))
    rc, report = run_json(
        capsys, "-p", str(project), "urls", "learn", "--input", str(tmp_path / "urls.txt"),
        "--sample", "400",
    )  # fmt: skip
    assert rc == 0 and report["urls"] == 400
    kb = yaml.safe_load((project / "urls" / "knowledge.yaml").read_text())
    assert [t["pattern"] for t in kb["hosts"]["example.org"]["templates"]] == ["/items/:item_id"]


def test_usage_errors_exit_2(
    project: Path, sim_small: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = str(project)
    assert main(["-p", p, "urls", "learn", "--input", str(project / "nope")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["-p", p, "urls", "learn", "--input", str(sim_small), "--since", "soon"]) == 2
    assert "--since 'soon'" in capsys.readouterr().err
    assert main(["-p", p, "urls", "show", "nowhere.example"]) == 2
    (project / "urls").mkdir()
    (project / "urls" / "knowledge.yaml").write_text("hosts: {a.com: {templates: [{}]}}")
    assert main(["-p", p, "urls", "show"]) == 2
    assert "required" in capsys.readouterr().err.lower()


def test_test_exits_1_on_an_invalid_url(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-p", str(project), "urls", "test", "https://ok.example/a", "not a url"]) == 1
    out = capsys.readouterr().out
    assert "invalid" in out and "no declared rule or learned template" in out


def test_since_filters_by_event_time(
    project: Path, sim_small: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = json.loads((sim_small / "truth" / "summary.json").read_text())
    rc, all_urls = run_json(
        capsys, "-p", str(project), "urls", "learn", "--input", str(sim_small), "--dry-run"
    )
    rc2, recent = run_json(
        capsys, "-p", str(project), "urls", "learn", "--input", str(sim_small), "--dry-run",
        "--since", "2026-11-03",
    )  # fmt: skip
    assert rc == rc2 == 0 and summary
    assert 0 < recent["urls"] < all_urls["urls"]

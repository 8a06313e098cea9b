"""Applying URL knowledge: declared rules, the knowledge file, extract / extract_one / explain."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from clickloop.config import load_config
from clickloop.errors import ConfigError
from clickloop.project import Project
from clickloop.urls import KnowledgeFile, UrlKnowledge, from_config, load_knowledge

CONFIG = """
urls:
  rules:
    - pattern: "https://shop.example.com/items/:category/:item_id"
      fields: {category: {type: category, dictionary: shop_categories}, item_id: {type: int}}
    - pattern: "https://m.video.example.net/watch"
      name: watch
      query: [v]
    - pattern: "https://news.example.org/:section(\\\\w+)/:article_slug"
  dictionaries:
    shop_categories: {1: clothes, 2: games, 3: books}
  tracking_params: [ref_code]
"""

KB = """
format: 1
dictionaries:
  two_depts: {clo: clothes, gam: games}
hosts:
  www.shop-two.co.uk:
    templates:
      - name: product
        pattern: /product/:item_id/:product_slug
        fields:
          item_id: {kind: id}
          product_slug: {kind: slug}
      - name: dept
        pattern: /dept/:category
        fields:
          category: {kind: category, dictionary: two_depts}
        query:
          page: {field: page, kind: page}
      - name: dept_sale
        pattern: /dept/sale
      - name: search
        pattern: /search
        query:
          query: {field: search, kind: search}
      - name: home
        pattern: /
"""


@pytest.fixture
def kn() -> UrlKnowledge:
    cfg = load_config(text=CONFIG)
    return from_config(cfg.urls, KnowledgeFile.loads(KB))


URLS = [
    "https://shop.example.com/items/1/1234",
    "HTTP://Shop.Example.COM:80/items/2/0099/?utm_source=mail#frag",
    "https://shop.example.com/items/9/55",
    "https://shop.example.com/items/x/abc",
    "https://shop.example.com/cart",
    "https://m.video.example.net/watch?v=dQw4w9WgXcQ&gclid=zz",
    "https://m.video.example.net/watch",
    "https://news.example.org/sport/city-wins-cup",
    "https://news.example.org/sport-news/city-wins-cup",
    "https://www.shop-two.co.uk/product/7268580/quiet-market-board-game",
    "https://www.shop-two.co.uk/dept/clo?page=3",
    "https://www.shop-two.co.uk/dept/sale",
    "https://www.shop-two.co.uk/dept/xyz",
    "https://www.shop-two.co.uk/search?query=red+caf%C3%A9",
    "https://www.shop-two.co.uk/search?query=kids%20sofa&ref_code=9",
    "https://www.shop-two.co.uk/",
    "https://unknown.example/a/b",
    "not a url",
    None,
    "",
]


def test_declared_rule_types_dictionaries_and_codes(kn: UrlKnowledge) -> None:
    row = kn.extract_one(URLS[1])
    assert row["host"] == "shop.example.com"
    assert row["domain"] == "example.com"
    assert row["template"] == "items"
    assert row["path"] == "/items/2/0099"
    assert row["category"] == "games" and row["category_code"] == "2"
    assert row["item_id"] == "99"  # type int: canonical integer spelling
    unknown_code = kn.extract_one(URLS[2])
    assert unknown_code["category"] is None and unknown_code["category_code"] == "9"
    assert kn.extract_one(URLS[3])["item_id"] is None  # not an integer
    assert kn.extract_one(URLS[4])["template"] is None


def test_query_fields_and_tracking(kn: UrlKnowledge) -> None:
    assert kn.extract_one(URLS[5])["v"] == "dQw4w9WgXcQ"
    assert kn.extract_one(URLS[6])["template"] == "watch"
    assert kn.extract_one(URLS[6])["v"] is None
    assert kn.extract_one(URLS[13])["search"] == "red café"
    assert kn.extract_one(URLS[14])["search"] == "kids sofa"
    explained = kn.explain(URLS[14])
    assert explained["tracking_removed"] == {"ref_code": "9"}  # from urls.tracking_params
    assert "ref_code" not in explained["normalized"]


def test_complex_pattern_and_literal_beats_variable(kn: UrlKnowledge) -> None:
    assert kn.extract_one(URLS[7])["section"] == "sport"
    assert kn.extract_one(URLS[8])["template"] is None  # \w+ does not match "sport-news"
    assert kn.extract_one(URLS[11])["template"] == "dept_sale"
    row = kn.extract_one(URLS[10])
    assert (row["template"], row["category"], row["page"]) == ("dept", "clothes", "3")


def test_extract_equals_extract_one_row_for_row(kn: UrlKnowledge) -> None:
    many = URLS * 3  # repeats: the work is per distinct URL
    table = kn.extract(pa.array(many, pa.string()))
    assert table.schema == kn.schema
    assert table.num_rows == len(many)
    assert table.to_pylist() == [kn.extract_one(u) for u in many]


def test_extract_fast_path_equals_scalar_path(kn: UrlKnowledge) -> None:
    # enough distinct URLs for the vectorised path
    many = [f"https://shop.example.com/items/{i % 4}/{i}" for i in range(200)] + URLS
    many += [f"https://www.shop-two.co.uk/dept/{d}?page={i}" for i in range(50) for d in "ab"]
    table = kn.extract(pa.chunked_array([pa.array(many[:100]), pa.array(many[100:])]))
    assert table.to_pylist() == [kn.extract_one(u) for u in many]


def test_extract_accepts_lists_dictionaries_and_empty(kn: UrlKnowledge) -> None:
    assert kn.extract([]).schema == kn.schema
    enc = pa.array(URLS).dictionary_encode()
    assert kn.extract(enc).to_pylist() == kn.extract(URLS).to_pylist()
    large = pa.array(URLS, pa.large_string())
    assert kn.extract(large).column("template").to_pylist() == [
        kn.extract_one(u)["template"] for u in URLS
    ]


def test_invalid_urls_give_null_rows(kn: UrlKnowledge) -> None:
    for url in ("not a url", None, ""):
        assert set(kn.extract_one(url).values()) == {None}
    assert kn.explain("not a url")["valid"] is False


def test_explain_says_why(kn: UrlKnowledge) -> None:
    e = kn.explain("https://www.shop-two.co.uk/dept/clo?page=3&utm_campaign=x")
    assert e["template"]["name"] == "dept" and e["template"]["source"] == "learned"
    assert e["fields"]["category"] == {
        "value": "clothes",
        "raw": "clo",
        "kind": "category",
        "dictionary": "two_depts",
        "from": "path",
    }
    assert e["tracking_removed"] == {"utm_campaign": "x"}
    assert "no declared rule or learned template" in kn.explain(URLS[16])["reason"]
    assert "none with 4 path segments" in kn.explain("https://www.shop-two.co.uk/a/b/c/d")["reason"]
    why = kn.explain("https://www.shop-two.co.uk/a/b/c")["reason"]
    assert "with 3 path segments matches (/product/:item_id/:product_slug)" in why


def test_version_changes_with_what_extraction_produces() -> None:
    cfg = load_config(text=CONFIG)
    a = from_config(cfg.urls, KnowledgeFile.loads(KB))
    edited = KnowledgeFile.loads(KB.replace("dictionary: two_depts", "dictionary: null"))
    b = from_config(cfg.urls, edited)
    stats_only = KnowledgeFile.loads(KB.replace("name: home", "name: home\n        urls: 99"))
    c = from_config(cfg.urls, stats_only)
    assert a.version != b.version
    assert a.version == c.version


def test_missing_dictionary_is_a_config_error() -> None:
    cfg = load_config(text=CONFIG)
    bad = KnowledgeFile.loads(KB.replace("dictionary: two_depts", "dictionary: nope"))
    with pytest.raises(ConfigError, match="dictionary 'nope'"):
        from_config(cfg.urls, bad)


def test_bad_declared_pattern_names_the_rule() -> None:
    cfg = load_config(text='urls: {rules: [{pattern: "https://x.com/items/:id(("}]}')
    with pytest.raises(ConfigError, match=r"urls.rules\[0\].pattern"):
        from_config(cfg.urls)
    cfg = load_config(text='urls: {rules: [{pattern: "https://x.com/a/:id", fields: {idd: {}}}]}')
    with pytest.raises(ConfigError, match="idd"):
        from_config(cfg.urls)


def test_load_knowledge_reads_config_and_file(tmp_path: Path) -> None:
    (tmp_path / "clickloop.yaml").write_text(CONFIG)
    (tmp_path / "urls").mkdir()
    (tmp_path / "urls" / "knowledge.yaml").write_text(KB)
    kn = load_knowledge(tmp_path)
    assert kn.extract_one(URLS[10])["category"] == "clothes"
    assert kn.extract_one(URLS[0])["category"] == "clothes"
    same = load_knowledge(Project.load(tmp_path))
    assert same.version == kn.version


def test_load_knowledge_without_file_or_config(tmp_path: Path) -> None:
    kn = load_knowledge(tmp_path)
    row = kn.extract_one("https://Example.co.uk/a/")
    assert row == {"host": "example.co.uk", "domain": "example.co.uk", "template": None,
                   "path": "/a"}  # fmt: skip


def test_knowledge_file_errors_name_line_and_key() -> None:
    bad = KB.replace("kind: slug", "kind: slugg")
    with pytest.raises(ConfigError, match=r"line \d+: hosts.*product_slug.kind: unknown kind"):
        KnowledgeFile.loads(bad)
    renamed_half = KB.replace("pattern: /dept/:category", "pattern: /dept/:cat")
    with pytest.raises(ConfigError, match="not variables of pattern"):
        KnowledgeFile.loads(renamed_half)


def test_encoded_extract_has_the_same_values(kn: UrlKnowledge) -> None:
    many = URLS * 2 + [f"https://shop.example.com/items/{i % 3}/{i}" for i in range(60)]
    plain = kn.extract(many)
    enc = kn.extract(many, encoded=True)
    assert enc.column_names == plain.column_names
    assert all(pa.types.is_dictionary(f.type) for f in enc.schema)
    assert enc.to_pylist() == plain.to_pylist()
    assert kn.extract([], encoded=True).num_rows == 0


def test_knowledge_survives_pickling_for_worker_processes(kn: UrlKnowledge) -> None:
    import pickle

    again = pickle.loads(pickle.dumps(kn))
    assert again.version == kn.version
    assert again.extract(URLS).to_pylist() == kn.extract(URLS).to_pylist()


def test_instrumented_knowledge_counts_outcomes(kn: UrlKnowledge) -> None:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    kn.instrument(registry)
    many = URLS * 3
    kn.extract(many)
    kn.extract_one(URLS[0])

    def value(result: str) -> float:
        got = registry.get_sample_value("clickloop_urls_extracted_total", {"result": result})
        return got or 0.0

    rows = [kn.lookup(u) for u in many]
    invalid = sum(r["host"] is None for r in rows)
    matched = sum(r["template"] is not None for r in rows)
    assert value("invalid") == invalid
    assert value("matched") == matched + 1
    assert value("unmatched") == len(many) - invalid - matched
    assert registry.get_sample_value("clickloop_urls_knowledge_info", {"version": kn.version}) == 1

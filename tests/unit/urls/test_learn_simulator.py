"""Discovery scored against the simulator's exact ground truth (truth/urls.json).

Matching, precisely: a learned template *matches* a true one when both describe the
same set of URLs of the same host — the same path shape (number of segments, the
same literal at every literal position, variables at the same positions; variable
names do not matter) and the same set of meaningful query parameters. Precision is
the share of learned templates that match a true one; recall the share of true
templates matched by a learned one. Field kinds are then compared field by field on
matched pairs: path fields by position, query fields by parameter name.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from clickloop.simulate import simulate
from clickloop.urls import UrlKnowledge
from clickloop.urls.kbfile import KnowledgeFile
from clickloop.urls.learn import learn
from clickloop.urls.sources import file_batches
from clickloop.urls.templates import parse_path_pattern, shape_of

TRACKING = {"utm_source", "utm_medium", "utm_campaign", "utm_content", "gclid", "fbclid"}


def read_urls(sim: Path) -> pa.Array:
    return pa.concat_arrays(list(file_batches([str(sim)])))


def describe(pattern: str) -> tuple[str, list[int]]:
    slots, _ = parse_path_pattern(pattern)
    return shape_of(slots), [i for i, s in enumerate(slots) if s is None]


def score(kb: KnowledgeFile, truth: dict[str, Any]) -> dict[str, Any]:
    true_t = {}
    for host, h in truth["hosts"].items():
        for t in h["templates"]:
            shape, _ = describe(t["path"])
            true_t[(host, shape, frozenset(t["query"]))] = t
    learned = {}
    for host, h in kb.hosts.items():
        for t in h.templates:
            learned[(host, t.shape, frozenset(t.query))] = t
    matched = set(true_t) & set(learned)
    kinds_ok, kinds_all, wrong = 0, 0, []
    for key in sorted(matched, key=str):
        t, lt = true_t[key], learned[key]
        _, t_names = parse_path_pattern(t["path"])
        _, l_names = parse_path_pattern(lt.pattern)
        for tn, ln in zip(t_names, l_names, strict=True):
            if tn is None:
                continue
            kinds_all += 1
            got = lt.fields[ln].kind if ln in lt.fields else None
            if got == t["fields"][tn]["kind"]:
                kinds_ok += 1
            else:
                wrong.append((key[0], t["path"], tn, t["fields"][tn]["kind"], got))
        for param, spec in t["query"].items():
            kinds_all += 1
            if lt.query[param].kind == spec["kind"]:
                kinds_ok += 1
            else:
                wrong.append((key[0], t["path"], param, spec["kind"], lt.query[param].kind))
    return {
        "precision": len(matched) / max(1, len(learned)),
        "recall": len(matched) / max(1, len(true_t)),
        "kinds": kinds_ok / max(1, kinds_all),
        "extra": sorted(str(k) for k in set(learned) - matched),
        "missed": sorted(str(k) for k in set(true_t) - matched),
        "wrong_kinds": wrong,
    }


@pytest.fixture(scope="module")
def sim_other(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second world: another seed, more days, fewer events per host."""
    out = tmp_path_factory.mktemp("sim-urls")
    simulate(out, events=12_000, days=5, seed=3)
    return out


def datasets(sim_small: Path, sim_other: Path) -> Iterator[Path]:
    yield sim_small
    yield sim_other


@pytest.mark.parametrize("which", ["sim_small", "sim_other"])
def test_learned_templates_match_ground_truth(which: str, request: pytest.FixtureRequest) -> None:
    sim: Path = request.getfixturevalue(which)
    truth = json.loads((sim / "truth" / "urls.json").read_text())
    kb = learn(read_urls(sim))
    s = score(kb, truth)
    detail = json.dumps(s, indent=1, default=str)
    assert s["precision"] >= 0.95, detail
    assert s["recall"] >= 0.95, detail
    assert s["kinds"] >= 0.95, detail


def test_tracking_parameters_are_counted_never_fields(sim_small: Path) -> None:
    kb = learn(read_urls(sim_small))
    for host in kb.hosts.values():
        assert set(host.tracking) <= TRACKING and {"utm_source", "gclid"} <= set(host.tracking)
        for t in host.templates:
            assert not set(t.query) & TRACKING


def test_dictionaries_attached_to_learned_fields_decode_categories(sim_small: Path) -> None:
    truth_dicts = json.loads((sim_small / "truth" / "dictionaries.json").read_text())
    urls = read_urls(sim_small)
    kb = learn(urls)
    # what a person does in review: attach the site's dictionary, rename to `category`
    items = next(
        t for t in kb.hosts["shop.example.com"].templates if t.pattern.startswith("/items")
    )
    items.fields["item_category"].dictionary = "shop_categories"
    items.fields = {"category" if k == "item_category" else k: v for k, v in items.fields.items()}
    items.pattern = items.pattern.replace(":item_category", ":category")
    kb.dictionaries = {"shop_categories": truth_dicts["shop_categories"]}
    kb = KnowledgeFile.loads(kb.to_yaml())  # the reviewed file round-trips
    kn = UrlKnowledge(kb)
    out = kn.extract(urls).to_pydict()
    seen = {
        (c, code)
        for c, code, t in zip(out["category"], out["category_code"], out["template"], strict=True)
        if t == items.name
    }
    assert seen and all(truth_dicts["shop_categories"][code] == c for c, code in seen)
    assert len({c for c, _ in seen}) == 8


def test_unknown_click_ids_are_suspected_not_made_fields(sim_small: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(5)
    urls = read_urls(sim_small).to_pylist()
    tagged = [
        u + ("&" if "?" in u else "?") + f"xclid={rng.integers(1 << 40):x}"
        if u and u.startswith("https://shop.example.com") and rng.random() < 0.15
        else u
        for u in urls
    ]
    kb = learn(pa.array(tagged))
    shop = kb.hosts["shop.example.com"]
    assert "xclid" in shop.suspected_tracking
    assert not any("xclid" in t.query for t in shop.templates)
    assert all(not h.suspected_tracking for n, h in kb.hosts.items() if n != "shop.example.com")

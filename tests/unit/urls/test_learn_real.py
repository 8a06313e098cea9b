"""Discovery on real request paths from two real web servers (no ground truth: properties).

The data lives beside the repository in ``../shared/data/real-urls`` (see its README);
``REAL_URLS_DIR`` points elsewhere.
"""

from __future__ import annotations

import os
import random
from functools import cache
from pathlib import Path

import pyarrow as pa
import pytest

from clickloop.urls import UrlKnowledge
from clickloop.urls.kbfile import KnowledgeFile
from clickloop.urls.learn import learn
from clickloop.urls.shapes import looks_like_id, shape
from clickloop.urls.templates import parse_path_pattern

DATA = Path(
    os.environ.get("REAL_URLS_DIR")
    or Path(__file__).resolve().parents[3].parent / "shared" / "data" / "real-urls"
)
SITES = {
    "nasa": ("nasa_ksc_19950801_request_paths.txt", "https://www.ksc.nasa.gov"),
    "semicomplete": (
        "elastic_apache_logs_semicomplete_request_paths.txt",
        "http://semicomplete.com",
    ),
}

pytestmark = pytest.mark.skipif(
    not DATA.is_dir(), reason=f"real request paths not found in {DATA} (set REAL_URLS_DIR)"
)


@cache
def urls(site: str) -> list[str]:
    name, host = SITES[site]
    lines = (DATA / name).read_text(encoding="utf-8", errors="replace").splitlines()
    return [host + line for line in lines if line]


@cache
def learned(site: str) -> KnowledgeFile:
    return learn(urls(site))


@pytest.mark.parametrize("site", list(SITES))
def test_learn_and_extract_do_not_crash_and_agree(site: str) -> None:
    kn = UrlKnowledge(learned(site))
    data = urls(site)
    table = kn.extract(pa.array(data))
    assert table.num_rows == len(data)
    sample = random.Random(0).sample(data, 500)
    assert kn.extract(sample).to_pylist() == [kn.extract_one(u) for u in sample]


@pytest.mark.parametrize("site", list(SITES))
def test_few_templates_covering_most_requests(site: str) -> None:
    host = next(iter(learned(site).hosts.values()))
    distinct = len({u.split("?")[0].rstrip("/") for u in urls(site)})
    assert len(host.templates) <= 0.05 * distinct, [t.pattern for t in host.templates]
    assert host.matched is not None and host.matched >= 0.95


@pytest.mark.parametrize("site", list(SITES))
def test_no_template_keeps_an_id_as_a_constant(site: str) -> None:
    for t in next(iter(learned(site).hosts.values())).templates:
        slots, _ = parse_path_pattern(t.pattern)
        constants = [s for s in slots if s is not None and looks_like_id(s)]
        assert not constants, t.pattern
        for name, f in t.fields.items():
            if f.examples and all(e.isdigit() and len(e) >= 5 for e in f.examples):
                assert f.kind == "id", (t.pattern, name, f)


@pytest.mark.parametrize("site", list(SITES))
def test_every_id_like_segment_lands_in_a_variable(site: str) -> None:
    kn = UrlKnowledge(learned(site))
    checked = 0
    for url in set(urls(site)):
        e = kn.explain(url)
        if not e["valid"] or e["template"] is None:
            continue
        slots, _ = parse_path_pattern(e["template"]["pattern"])
        for seg, slot in zip(e["segments"], slots, strict=True):
            if shape(seg) == "id":
                checked += 1
                assert slot is None, (url, e["template"]["pattern"])
    assert checked > 20


@pytest.mark.parametrize("site", list(SITES))
def test_learning_is_stable(site: str) -> None:
    data = urls(site)
    full = learned(site)
    shuffled = data[:]
    random.Random(7).shuffle(shuffled)
    assert learn(shuffled).content_version() == full.content_version()
    big = {t.shape for t in next(iter(full.hosts.values())).templates if (t.share or 0) >= 0.01}
    for half in (data[: len(data) // 2], data[len(data) // 2 :]):
        got = {t.shape for t in next(iter(learn(half).hosts.values())).templates}
        assert len(big & got) >= 0.8 * len(big), sorted(big - got)


def test_templates_a_person_would_agree_with() -> None:
    nasa = UrlKnowledge(learned("nasa"))
    e = nasa.explain("https://www.ksc.nasa.gov/shuttle/missions/sts-69/mission-sts-69.html")
    kinds = {f["value"]: f["kind"] for f in e["fields"].values()}
    assert e["template"]["pattern"].startswith("/shuttle/")
    assert kinds["sts-69"] == "id" and kinds["mission-sts-69.html"] == "file"
    img = nasa.explain("https://www.ksc.nasa.gov/images/NASA-logosmall.gif")
    assert {f["value"]: f["kind"] for f in img["fields"].values()}["NASA-logosmall.gif"] == "file"
    semi = UrlKnowledge(learned("semicomplete"))
    tag = semi.explain("http://semicomplete.com/blog/tags/debugging")
    assert tag["template"]["pattern"] == "/blog/tags/:tag"
    post = semi.explain("http://semicomplete.com/files/blogposts/20091227/screen-titles.png")
    kinds = {f["value"]: f["kind"] for f in post["fields"].values()}
    assert kinds == {"20091227": "id", "screen-titles.png": "file"}

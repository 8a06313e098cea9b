"""Property tests: normalisation is idempotent and faithful, tracking never leaks,
and the vectorised extraction equals the one-URL reference on any input."""

from __future__ import annotations

from urllib.parse import quote

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from clickloop.urls import UrlKnowledge, is_tracking, normalize, try_parse_url
from clickloop.urls.columnar import SMALL
from clickloop.urls.learn import LearnOptions, learn

LABEL = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,6}[A-Za-z0-9])?", fullmatch=True)
HOST = st.builds(
    lambda labels, dot: ".".join(labels) + dot,
    st.lists(LABEL, min_size=1, max_size=3),
    st.sampled_from(["", "", "", "."]),
)
SEGMENT = st.one_of(
    st.text(alphabet="abcXYZ0129-._~!$&'()*+,;=:@ éü%", max_size=8),
    st.sampled_from([".", "..", "", "%7E", "%c3%A9", "%2f", "%", "%4", "a b", "123456", "%41"]),
)
NAMES = ["q", "page", "id", "v", "Q", "a b", "x%41", "utm_source", "gclid", "fbclid", "UTM_Term"]
VALUE = st.text(alphabet="ab 12+%=é/?:~-_.", max_size=8)
PAIR = st.builds(
    lambda n, v, eq: f"{n}={v}" if eq else n, st.sampled_from(NAMES), VALUE, st.booleans()
)


@st.composite
def urls(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["http", "https", "HTTP", "Https", "ftp"]))
    user = draw(st.sampled_from(["", "", "u@", "u:p@"]))
    port = draw(st.sampled_from(["", "", ":80", ":443", ":8080", ":021"]))
    segs = draw(st.lists(SEGMENT, max_size=5))
    path = ("/" + "/".join(segs)) if segs or draw(st.booleans()) else ""
    if segs and draw(st.booleans()):
        path += "/"
    query = draw(st.lists(PAIR, max_size=4))
    q = ("?" + "&".join(query)) if query else ""
    frag = draw(st.sampled_from(["", "", "#top", "#/a?b"]))
    return f"{scheme}://{user}{draw(HOST)}{port}{path}{q}{frag}"


@given(urls())
def test_normalize_is_idempotent(url: str) -> None:
    once = normalize(url)
    assert normalize(once) == once


@given(urls())
def test_normalized_url_means_the_same(url: str) -> None:
    a, b = try_parse_url(url), try_parse_url(normalize(url))
    assert a is not None and b is not None
    assert (a.scheme, a.host, a.port, a.path, a.query) == (
        b.scheme,
        b.host,
        b.port,
        b.path,
        b.query,
    )


@given(urls())
def test_tracking_is_set_apart_never_kept(url: str) -> None:
    p = try_parse_url(url)
    assert p is not None
    assert not any(is_tracking(k) for k, _ in p.query)
    assert all(is_tracking(k) for k, _ in p.tracking)
    assert not any(is_tracking(k) for k, _ in try_parse_url(p.normalized).tracking)  # type: ignore[union-attr]


@given(
    st.lists(st.sampled_from(["a", "b-c", "12", "x y", "é"]), min_size=1, max_size=3),
    st.sampled_from(["red shirt", "café", "a+b", "50%"]),
)
def test_spellings_of_the_same_page_normalise_equal(segs: list[str], value: str) -> None:
    path = "/" + "/".join(quote(s) for s in segs)
    q_plus = quote(value, safe="").replace("%20", "+")
    q_pct = quote(value, safe="")
    spellings = [
        f"https://shop.example.com{path}?q={q_plus}",
        f"HTTPS://SHOP.Example.com:443{path}/?q={q_pct}",
        f"https://shop.example.com.{path}?utm_source=x&q={q_pct}#frag",
        f"https://shop.example.com{path.replace('/', '//')}?q={q_plus}&gclid=1",
    ]
    assert len({normalize(u) for u in spellings}) == 1


# -- vectorised extraction == the scalar reference ---------------------------------------


def _add(url: str, extra: str) -> str:
    if extra.startswith("&"):
        return url + ("&" if "?" in url else "?") + extra[1:]
    return url + extra


SITE_URL = st.builds(
    lambda host, kind, n, extra: _add(
        {
            "item": f"https://{host}/items/{n % 8}/{1000000 + n}",
            "page": f"https://{host}/c/{['shoes', 'hats', 'bags'][n % 3]}?page={n % 5}",
            "search": f"https://{host}/search?q=red+{n % 7}%20x&utm_source=TRKsrc{n}",
            "slug": f"https://{host}/news/{['sport', 'tech'][n % 2]}/story-{n}-wins",
        }[kind],
        extra,
    ),
    st.sampled_from(["shop.example.com", "SHOP.example.com:443", "news.example.org"]),
    st.sampled_from(["item", "page", "search", "slug"]),
    st.integers(0, 400),
    st.sampled_from(["", "", "/", "#f", "&gclid=TRKclick", "&fbclid=TRKfb"]),
)
LEARNED_FROM = [
    f"https://{h}/{p}"
    for h in ("shop.example.com", "news.example.org")
    for i in range(60)
    for p in (
        f"items/{i % 8}/{2000000 + i}",
        f"c/{['shoes', 'hats', 'bags'][i % 3]}?page={i % 5}",
        f"search?q=word{i}&utm_campaign=TRKcmp",
        f"news/{['sport', 'tech'][i % 2]}/story-{i}-wins",
    )
]
KNOWLEDGE = learn(LEARNED_FROM, options=LearnOptions(min_urls_per_host=10))


def _kn() -> UrlKnowledge:
    from clickloop.config import load_config
    from clickloop.urls import from_config

    cfg = load_config(
        text="""
urls:
  rules:
    - pattern: "https://news.example.org/news/:section(sport|tech)/:story"
    - pattern: "http{s}?://shop.example.com/items/:category/:item_id"
      fields: {category: {dictionary: cats}, item_id: {type: int}}
  dictionaries: {cats: {0: zero, 1: one, 2: two}}
"""
    )
    return from_config(cfg.urls, KNOWLEDGE)


KN_LEARNED = UrlKnowledge(KNOWLEDGE)
KN_DECLARED = _kn()


@given(st.lists(st.one_of(SITE_URL, urls(), st.none()), min_size=SMALL + 1, max_size=80))
def test_extract_equals_extract_one(batch: list[str | None]) -> None:
    for kn in (KN_LEARNED, KN_DECLARED):
        table = kn.extract(pa.array(batch, pa.string()))
        assert table.schema == kn.schema
        assert table.to_pylist() == [kn.extract_one(u) for u in batch]


@given(st.lists(SITE_URL, min_size=SMALL + 1, max_size=60))
def test_tracking_values_never_reach_fields(batch: list[str]) -> None:
    table = KN_LEARNED.extract(batch)
    for name in KN_LEARNED.columns:
        assert not any(v and "TRK" in v for v in table.column(name).to_pylist()), name
    learned_params = {p for h in KNOWLEDGE.hosts.values() for t in h.templates for p in t.query}
    assert learned_params and not any(is_tracking(p) for p in learned_params)

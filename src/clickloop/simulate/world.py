"""The simulated world: sites with their URL template families, categories, catalogs, users.

Everything here is ground truth: :func:`url_truth` and :func:`dictionaries`
are written beside the data so URL discovery can be scored against them.

Field kinds (the vocabulary URL discovery must recover):

=========  ===========================================================
kind       meaning
=========  ===========================================================
category   a low-cardinality code or name (``1`` → clothes, ``clo``, ``sports``)
id         a high-cardinality identifier (``1234567``, ``dQw4w9WgXcQ``)
slug       hyphenated words naming one thing (``blue-cotton-shirt``)
page       a pagination number
search     free text typed by a user
=========  ===========================================================
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

Kind = Literal["category", "id", "slug", "page", "search"]

CATEGORIES: Final = ("clothes", "games", "books", "electronics", "home", "sports", "beauty", "toys")
K: Final = len(CATEGORIES)

TRACKING_PARAMS: Final = (
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "gclid",
    "fbclid",
)


@dataclass(frozen=True)
class UrlField:
    name: str
    kind: Kind
    dictionary: str | None = None


@dataclass(frozen=True)
class Template:
    """One URL template family of a site (path in URL Pattern syntax)."""

    name: str
    path: str
    share: float
    fields: tuple[UrlField, ...] = ()
    query: tuple[UrlField, ...] = ()
    impressions: int = 0  # item impressions shown on this page

    def truth(self) -> dict[str, object]:
        return {
            "name": self.name,
            "path": self.path,
            "fields": {f.name: _field_truth(f) for f in self.fields},
            "query": {f.name: _field_truth(f) for f in self.query},
        }


def _field_truth(f: UrlField) -> dict[str, str]:
    out: dict[str, str] = {"kind": f.kind}
    if f.dictionary:
        out["dictionary"] = f.dictionary
    return out


@dataclass(frozen=True)
class Site:
    host: str
    kind: Literal["shop", "news", "video"]
    weight: float
    templates: tuple[Template, ...]
    codes: tuple[str, ...]  # this site's code for each global category
    dictionary: str | None
    items_per_category: int
    https_share: float = 0.97

    @property
    def template_shares(self) -> np.ndarray:
        shares = np.array([t.share for t in self.templates], dtype=np.float64)
        return shares / shares.sum()


SITES: Final[tuple[Site, ...]] = (
    Site(
        host="shop.example.com",
        kind="shop",
        weight=0.40,
        codes=tuple(str(i + 1) for i in range(K)),
        dictionary="shop_categories",
        items_per_category=4000,
        templates=(
            Template("home", "/", 0.10, impressions=4),
            Template(
                "item",
                "/items/:category/:item_id",
                0.42,
                (UrlField("category", "category", "shop_categories"), UrlField("item_id", "id")),
                impressions=3,
            ),
            Template(
                "listing",
                "/c/:category_name",
                0.16,
                (UrlField("category_name", "category"),),
                (UrlField("page", "page"),),
                impressions=4,
            ),
            Template(
                "search",
                "/search",
                0.14,
                query=(UrlField("q", "search"), UrlField("page", "page")),
                impressions=4,
            ),
            Template("brand", "/brand/:brand", 0.10, (UrlField("brand", "slug"),), impressions=4),
            Template("cart", "/cart", 0.05),
            Template("checkout", "/checkout", 0.03),
        ),
    ),
    Site(
        host="www.shop-two.co.uk",
        kind="shop",
        weight=0.25,
        codes=("clo", "gam", "boo", "ele", "hom", "spo", "bea", "toy"),
        dictionary="shop_two_departments",
        items_per_category=2500,
        templates=(
            Template("home", "/", 0.12, impressions=4),
            Template(
                "product",
                "/product/:item_id/:product_slug",
                0.45,
                (UrlField("item_id", "id"), UrlField("product_slug", "slug")),
                impressions=3,
            ),
            Template(
                "department",
                "/dept/:dept",
                0.25,
                (UrlField("dept", "category", "shop_two_departments"),),
                (UrlField("page", "page"),),
                impressions=4,
            ),
            Template(
                "search", "/search", 0.18, query=(UrlField("query", "search"),), impressions=4
            ),
        ),
    ),
    Site(
        host="news.example.org",
        kind="news",
        weight=0.20,
        codes=("fashion", "gaming", "books", "tech", "living", "sport", "beauty", "kids"),
        dictionary="news_sections",
        items_per_category=3000,
        templates=(
            Template("home", "/", 0.15),
            Template(
                "article",
                "/:section/:article_slug",
                0.60,
                (
                    UrlField("section", "category", "news_sections"),
                    UrlField("article_slug", "slug"),
                ),
            ),
            Template(
                "section_page",
                "/:section/page/:page",
                0.15,
                (UrlField("section", "category", "news_sections"), UrlField("page", "page")),
            ),
            Template("search", "/search", 0.10, query=(UrlField("q", "search"),)),
        ),
    ),
    Site(
        host="m.video.example.net",
        kind="video",
        weight=0.15,
        codes=("10", "20", "30", "40", "50", "60", "70", "80"),
        dictionary="video_categories",
        items_per_category=5000,
        templates=(
            Template("home", "/", 0.10),
            Template("watch", "/watch", 0.60, query=(UrlField("v", "id"),)),
            Template("channel", "/channel/:channel_id", 0.15, (UrlField("channel_id", "id"),)),
            Template(
                "category",
                "/c/:category",
                0.15,
                (UrlField("category", "category", "video_categories"),),
                (UrlField("page", "page"),),
            ),
        ),
    ),
)

SEARCH_WORDS: Final = {
    "clothes": ["shirt", "jacket", "jeans", "dress", "sneakers", "scarf", "hoodie", "coat"],
    "games": ["puzzle", "console", "controller", "board game", "chess", "rpg", "cards", "dice"],
    "books": ["novel", "cookbook", "biography", "poetry", "atlas", "comic", "thriller", "café"],
    "electronics": [
        "laptop",
        "headphones",
        "charger",
        "camera",
        "monitor",
        "speaker",
        "tablet",
        "cable",
    ],
    "home": ["lamp", "sofa", "rug", "mug", "kettle", "pillow", "curtains", "shelf"],
    "sports": ["yoga mat", "running shoes", "bike", "racket", "ball", "helmet", "tent", "gloves"],
    "beauty": ["lipstick", "perfume", "serum", "shampoo", "mascara", "lotion", "brush", "crème"],
    "toys": ["lego", "doll", "kite", "robot", "train set", "plush", "blocks", "yo-yo"],
}
ADJECTIVES: Final = (
    "blue",
    "red",
    "classic",
    "vintage",
    "organic",
    "compact",
    "deluxe",
    "smart",
    "light",
    "heavy",
    "soft",
    "bold",
    "tiny",
    "grand",
    "swift",
    "quiet",
)
NOUNS: Final = (
    "river",
    "mountain",
    "city",
    "future",
    "market",
    "season",
    "garden",
    "signal",
    "harbor",
    "forest",
    "window",
    "bridge",
    "story",
    "island",
    "engine",
    "planet",
)
VERBS: Final = (
    "wins",
    "opens",
    "returns",
    "meets",
    "changes",
    "finds",
    "builds",
    "moves",
    "breaks",
    "saves",
    "shapes",
    "leads",
)
BRAND_WORDS: Final = (
    "acme",
    "nordic",
    "alpine",
    "urban",
    "lumen",
    "vertex",
    "zephyr",
    "ember",
    "cobalt",
    "maple",
    "orbit",
    "pixel",
    "atlas",
    "summit",
    "harbor",
    "willow",
)

EXTERNAL_REFERRERS: Final = (
    "https://www.google.com/",
    "https://www.bing.com/",
    "https://www.facebook.com/",
    "https://t.co/",
    "https://duckduckgo.com/",
)


def dictionaries() -> dict[str, dict[str, str]]:
    """Each site's category codes → global category names."""
    return {
        s.dictionary: dict(zip(s.codes, CATEGORIES, strict=True)) for s in SITES if s.dictionary
    }


def url_truth() -> dict[str, object]:
    """Ground truth for URL discovery: per host, its template families and field kinds."""
    return {
        "hosts": {
            s.host: {"kind": s.kind, "templates": [t.truth() for t in s.templates]} for s in SITES
        },
        "tracking_params": list(TRACKING_PARAMS),
        "noise": [
            "host case",
            "trailing slash",
            "default port",
            "http/https",
            "percent-encoding in search",
            "utm_* and click ids on landing pages",
        ],
    }


@dataclass
class Catalog:
    """Per site: stable item ids, slugs and prices for every (category, rank)."""

    site: Site
    ids: pa.Array  # string, K * items_per_category
    slugs: pa.Array  # string
    prices: np.ndarray  # float64
    popularity: np.ndarray  # float64 z-score of log popularity (rank-based)

    def index(self, cat: np.ndarray, rank: np.ndarray) -> np.ndarray:
        return cat * self.site.items_per_category + rank


def build_catalog(site: Site, rng: np.random.Generator) -> Catalog:
    n = K * site.items_per_category
    if site.kind == "video":
        raw = rng.integers(0, 256, size=n * 9, dtype=np.uint8).tobytes()
        text = base64.urlsafe_b64encode(raw)
        ids = _fixed_width(text, 12, n)
        ids = pc.utf8_slice_codeunits(ids, 0, 11)
    else:
        ids = pc.cast(pa.array(_unique_ints(rng, n, 1_000_000, 9_999_999)), pa.string())
    idx = np.arange(n)
    a = pa.array(ADJECTIVES).take(pa.array(rng.integers(0, len(ADJECTIVES), n)))
    b = pa.array(NOUNS).take(pa.array(rng.integers(0, len(NOUNS), n)))
    cat_of = idx // site.items_per_category
    words = [
        w.replace(" ", "-").replace("é", "e").replace("è", "e")
        for c in CATEGORIES
        for w in SEARCH_WORDS[c]
    ]
    noun_idx = cat_of * 8 + rng.integers(0, 8, n)
    c = pa.array(words).take(pa.array(noun_idx))
    if site.kind == "news":
        v = pa.array(VERBS).take(pa.array(rng.integers(0, len(VERBS), n)))
        slugs = pc.binary_join_element_wise(b, v, a, c, "-")
    else:
        slugs = pc.binary_join_element_wise(a, b, c, "-")
    prices = np.round(np.exp(rng.normal(3.3 + 0.15 * (cat_of % 4), 0.6, n)), 2)
    rank = idx % site.items_per_category
    pop = -np.log1p(rank)
    popularity = (pop - pop.mean()) / pop.std()
    return Catalog(site, ids, slugs, prices, popularity)


def _unique_ints(rng: np.random.Generator, n: int, lo: int, hi: int) -> np.ndarray:
    out = np.unique(rng.integers(lo, hi, size=int(n * 1.3) + 16))
    while len(out) < n:  # pragma: no cover - vanishingly rare
        out = np.unique(np.concatenate([out, rng.integers(lo, hi, size=n)]))
    return rng.permutation(out)[:n]


def _fixed_width(text: bytes, width: int, n: int) -> pa.Array:
    offsets = pa.array(np.arange(0, n * width + 1, width, dtype=np.int32))
    return pa.StringArray.from_buffers(n, offsets.buffers()[1], pa.py_buffer(text[: n * width]))


def hex_ids(rng: np.random.Generator, n: int, nbytes: int = 16, dashed: bool = True) -> pa.Array:
    """``n`` random hex identifiers (UUID-shaped when ``dashed``), fully vectorised."""
    raw = rng.integers(0, 256, size=n * nbytes, dtype=np.uint8).tobytes().hex().encode()
    plain = _fixed_width(raw, nbytes * 2, n)
    if not dashed or nbytes != 16:
        return plain
    parts = [
        pc.utf8_slice_codeunits(plain, a, b)
        for a, b in ((0, 8), (8, 12), (12, 16), (16, 20), (20, 32))
    ]
    return pc.binary_join_element_wise(*parts, "-")


@dataclass
class Users:
    """Latent traits of the simulated visitors."""

    n: int
    activity: np.ndarray  # heavy-tailed session rate
    interest: np.ndarray  # (n, K) category preferences, rows sum to 1
    home_site: np.ndarray  # index into SITES
    tz_hours: np.ndarray  # local offset from UTC
    first_day: np.ndarray  # first day the user may appear (negative: before the data)
    mobile: np.ndarray  # bool
    ids: pa.Array = field(repr=False, default=None)


def build_users(n: int, days: int, rng: np.random.Generator) -> Users:
    activity = rng.lognormal(0.0, 1.1, n)
    interest = rng.dirichlet(np.full(K, 0.35), n)
    site_w = np.array([s.weight for s in SITES])
    home_site = rng.choice(len(SITES), size=n, p=site_w / site_w.sum())
    tz_hours = rng.choice(
        np.array([-8.0, -5.0, 0.0, 1.0, 2.0, 5.5, 8.0, 9.0]),
        size=n,
        p=[0.12, 0.2, 0.15, 0.2, 0.1, 0.08, 0.08, 0.07],
    )
    first_day = rng.integers(-3 * days, days, size=n)
    mobile = rng.random(n) < 0.55
    ids = pc.binary_join_element_wise(
        "u", pc.utf8_lpad(pc.cast(pa.array(np.arange(1, n + 1)), pa.string()), 7, "0"), ""
    )
    return Users(n, activity, interest, home_site, tz_hours, first_day, mobile, ids)

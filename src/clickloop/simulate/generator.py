"""Chunked, deterministic clickstream generation.

The generator walks day by day. Each day gets an exact share of the requested
record count (weekends are busier) and is produced in batches of sessions, so
memory is bounded by the batch size, never by the total. Randomness comes from
one ``SeedSequence`` per day, so the same seed gives the same records.

How behaviour is generated (the same parameters are written to
``truth/labels.json``):

* users have heavy-tailed activity, a home site, a time zone (daily cycles are
  local), a device, and latent interests over the categories;
* sessions are sequences of page views whose categories follow those interests;
* shop pages show item impressions; each is clicked with probability
  ``sigmoid(logit)`` where the logit grows with the user's interest in the
  item's category, with how much of that category the user viewed before today
  (decayed daily) and earlier in the session, with item popularity, and falls
  with slot position; a click converts with a probability that falls with price.

The generator knows every impression's true click probability, so the
Bayes-optimal AUC of any model on this data is measured and reported.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from clickloop.simulate.world import (
    BRAND_WORDS,
    CATEGORIES,
    EXTERNAL_REFERRERS,
    SEARCH_WORDS,
    SITES,
    Catalog,
    K,
    Template,
    build_catalog,
    build_users,
    hex_ids,
)

DAY: Final = 86_400.0

CLICK: Final = {
    "intercept": -5.8,
    "interest": 0.85,  # × log(K · interest[user, item category])
    "history": 0.45,  # × log1p(decayed views of the category before today)
    "session": 0.40,  # × log1p(views of the category earlier in this session)
    "position": -0.22,  # × (slot − 1)
    "popularity": 0.30,  # × z-score of the item's log popularity
    "page_match": 0.35,  # item category equals the page's category
    "mobile": -0.15,
}
CONVERSION: Final = {"intercept": -2.8, "interest": 0.5, "log_price": -0.45}
HISTORY_HALF_LIFE_DAYS: Final = 3.0

MALFORMED_KINDS: Final = {  # share of malformed records, and the reason a validator should give
    "bad_ts": 0.22,
    "missing_event_id": 0.14,
    "missing_user_id": 0.14,
    "bad_url": 0.20,
    "ts_in_future": 0.10,
    "duplicate": 0.20,
}
BAD_TS_VALUES: Final = ("2026-13-45T25:61:00Z", "not-a-date", "31/31/2026 99:99")
MAX_SESSIONS_PER_BATCH: Final = 30_000


@dataclass(frozen=True)
class SimSpec:
    """What to simulate. ``events`` is the exact number of records written."""

    events: int
    days: int = 7
    seed: int = 0
    start: date = date(2026, 11, 1)
    users: int | None = None
    malformed: float = 0.005
    late: float = 0.01

    @property
    def n_users(self) -> int:
        return self.users or max(100, self.events // 100)

    @property
    def start_ts(self) -> float:
        return datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC).timestamp()


@dataclass
class Stats:
    """Everything the ground truth reports, accumulated chunk by chunk (constant memory)."""

    records: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    malformed: Counter[str] = field(default_factory=Counter)
    page_views_by_host: Counter[str] = field(default_factory=Counter)
    page_views_by_template: Counter[str] = field(default_factory=Counter)
    sessions: int = 0
    late: int = 0
    very_late: int = 0
    users_seen: np.ndarray | None = None
    click_hist: np.ndarray = field(default_factory=lambda: np.zeros((2, 1 << 16)))
    conv_hist: np.ndarray = field(default_factory=lambda: np.zeros((2, 1 << 16)))
    ts_min: float = float("inf")
    ts_max: float = float("-inf")

    def add_scores(self, hist: np.ndarray, p: np.ndarray, y: np.ndarray) -> None:
        bins = np.minimum((p * (1 << 16)).astype(np.int64), (1 << 16) - 1)
        hist[1] += np.bincount(bins[y], minlength=1 << 16)
        hist[0] += np.bincount(bins[~y], minlength=1 << 16)


def auc_from_hist(hist: np.ndarray) -> float | None:
    """ROC AUC from per-bin negative/positive counts (ties within a bin count ½)."""
    neg, pos = hist[0], hist[1]
    n_neg, n_pos = neg.sum(), pos.sum()
    if n_neg == 0 or n_pos == 0:
        return None
    neg_below = np.cumsum(neg) - neg
    return float((pos * (neg_below + 0.5 * neg)).sum() / (n_pos * n_neg))


class Generator:
    """Yields chunks (Arrow tables of raw records) for :class:`SimSpec`."""

    def __init__(self, spec: SimSpec) -> None:
        if spec.events < 1:
            raise ValueError("events must be at least 1")
        if spec.days < 1:
            raise ValueError("days must be at least 1")
        self.spec = spec
        root = np.random.SeedSequence(spec.seed)
        world_seq, days_seq = root.spawn(2)
        self.day_seqs = days_seq.spawn(spec.days)
        wrng = np.random.default_rng(world_seq)
        self.users = build_users(spec.n_users, spec.days, wrng)
        self.catalogs = [build_catalog(s, wrng) for s in SITES]
        self.channels = hex_ids(wrng, K * 200, nbytes=11, dashed=False)
        self.brands = pc.binary_join_element_wise(
            pa.array(BRAND_WORDS).take(pa.array(np.repeat(np.arange(16), 16))),
            pa.array(BRAND_WORDS).take(pa.array(np.tile(np.arange(16), 16))),
            pa.array(["co", "goods", "works", "supply"] * 64),
            "-",
        )
        self.hist = np.zeros((spec.n_users, K), np.float32)
        self.stats = Stats(users_seen=np.zeros(spec.n_users, bool))
        self.quotas = _quotas(spec)

    # -- driving ----------------------------------------------------------------------

    def chunks(self) -> Iterator[pa.Table]:
        for day in range(self.spec.days):
            yield from self._day(day)

    def _day(self, day: int) -> Iterator[pa.Table]:
        spec = self.spec
        rng = np.random.default_rng(self.day_seqs[day])
        quota = int(self.quotas[day])
        if quota == 0:
            return
        n_dup = round(quota * spec.malformed * MALFORMED_KINDS["duplicate"])
        n_dup = min(n_dup, quota // 2)
        target = quota - n_dup
        active = self.users.activity * (self.users.first_day <= day)
        if active.sum() == 0:
            active = self.users.activity.copy()
        cum = np.cumsum(active)
        hist_add = np.zeros_like(self.hist)
        produced = dup_done = 0
        per_session = 15.0
        while produced < target:
            want = target - produced
            sessions = int(np.clip(np.ceil(want / per_session * 1.02), 1, MAX_SESSIONS_PER_BATCH))
            batch = self._sessions(rng, day, sessions, cum)
            per_session = max(1.0, batch.num_rows / sessions)
            if batch.num_rows > want:
                batch = _trim(batch, want)
            produced += batch.num_rows
            self._learn(batch, hist_add)
            self._score(batch)
            dups = (
                n_dup - dup_done if produced >= target else round(n_dup * batch.num_rows / target)
            )
            dup_done += dups
            yield self._finish(rng, batch, dups)
        decay = np.float32(0.5 ** (1.0 / HISTORY_HALF_LIFE_DAYS))
        self.hist = self.hist * decay + hist_add

    def _score(self, batch: pa.Table) -> None:
        """Account sessions, users and the true probabilities of the kept impressions."""
        stats = self.stats
        sess = batch.column("_sess").to_numpy()
        stats.sessions += len(np.unique(sess))
        stats.users_seen[batch.column("_user").to_numpy()] = True  # type: ignore[index]
        imp = pc.equal(batch.column("type"), "impression").to_numpy(zero_copy_only=False)
        p = batch.column("_p").to_numpy(zero_copy_only=False)[imp]
        q = batch.column("_q").to_numpy(zero_copy_only=False)[imp]
        clicked = batch.column("_clicked").to_numpy(zero_copy_only=False)[imp]
        converted = batch.column("_converted").to_numpy(zero_copy_only=False)[imp]
        stats.add_scores(stats.click_hist, p, clicked)
        stats.add_scores(stats.conv_hist, p * q, converted)

    def _learn(self, batch: pa.Table, hist_add: np.ndarray) -> None:
        cat = batch.column("_cat").to_numpy()
        user = batch.column("_user").to_numpy()
        is_pv = pc.equal(batch.column("type"), "page_view").to_numpy(zero_copy_only=False)
        keep = is_pv & (cat >= 0)
        np.add.at(hist_add, (user[keep], cat[keep]), 1.0)

    # -- one batch of sessions ----------------------------------------------------------

    def _sessions(self, rng: np.random.Generator, day: int, n: int, cum: np.ndarray) -> pa.Table:
        spec, users = self.spec, self.users
        u = np.minimum(np.searchsorted(cum, rng.random(n) * cum[-1], side="right"), users.n - 1)
        site = np.where(
            rng.random(n) < 0.8, users.home_site[u], rng.choice(len(SITES), n, p=_site_weights())
        )
        evening = rng.random(n) < 0.45
        local_hour = np.where(evening, rng.normal(20.5, 2.0, n), rng.normal(12.5, 3.0, n))
        local_sec = np.mod(local_hour * 3600 + rng.uniform(0, 3600, n), DAY)
        start = spec.start_ts + day * DAY + np.mod(local_sec - users.tz_hours[u] * 3600, DAY)
        mobile = np.where(rng.random(n) < 0.9, users.mobile[u], ~users.mobile[u])
        session_ids = pc.binary_join_element_wise("s", hex_ids(rng, n, 8, dashed=False), "")
        n_pv = np.minimum(rng.geometric(1 / 4.5, n), 40)

        # page views ---------------------------------------------------------------------
        total = int(n_pv.sum())
        sess = np.repeat(np.arange(n), n_pv)
        first = np.concatenate([[0], np.cumsum(n_pv)[:-1]])
        is_first = np.zeros(total, bool)
        is_first[first] = True
        gaps = rng.exponential(45.0, total)
        gaps[first] = 0.0
        csum = np.cumsum(gaps)
        t_pv = start[sess] + csum - np.repeat(csum[first], n_pv)
        pu, psite = u[sess], site[sess]
        interest_pick = _categorical(rng, users.interest[pu])
        cat = np.where(rng.random(total) < 0.75, interest_pick, rng.integers(0, K, total))
        tmpl = np.zeros(total, np.int64)
        for s_idx, s in enumerate(SITES):
            m = psite == s_idx
            tmpl[m] = rng.choice(len(s.templates), int(m.sum()), p=s.template_shares)
        url, page_cat, labels = self._urls(rng, psite, tmpl, cat, is_first)
        referrer = self._referrers(rng, url, is_first, first, n_pv)

        # impressions, clicks, conversions ---------------------------------------------------
        shows = _impressions_per_pv(psite, tmpl)
        shop_pv = np.nonzero(shows > 0)[0]
        m_imp = shows[shop_pv]
        imp_pv = np.repeat(shop_pv, m_imp)
        n_imp = len(imp_pv)
        position = np.arange(n_imp) - np.repeat(np.cumsum(m_imp) - m_imp, m_imp) + 1
        iu = pu[imp_pv]
        same = (page_cat[imp_pv] >= 0) & (rng.random(n_imp) < 0.6)
        icat = np.where(
            same,
            page_cat[imp_pv],
            np.where(
                rng.random(n_imp) < 0.75,
                _categorical(rng, users.interest[iu]),
                rng.integers(0, K, n_imp),
            ),
        )
        isite = psite[imp_pv]
        rank = _zipf_rank(rng, n_imp, isite)
        # session views of each category up to and including this page view
        onehot = np.zeros((total, K), np.int32)
        has = page_cat >= 0
        onehot[np.nonzero(has)[0], page_cat[has]] = 1
        ccum = np.cumsum(onehot, axis=0)
        base = ccum[first] - onehot[first]
        sess_views = (ccum - np.repeat(base, n_pv, axis=0))[imp_pv, icat]
        pop = np.empty(n_imp)
        price = np.empty(n_imp)
        item_id = pa.nulls(n_imp, pa.string())
        item_url = pa.nulls(n_imp, pa.string())
        parts_id: list[tuple[np.ndarray, pa.Array, pa.Array]] = []
        for s_idx, cat_obj in enumerate(self.catalogs):
            m = np.nonzero(isite == s_idx)[0]
            if len(m) == 0:
                continue
            gi = cat_obj.index(icat[m], rank[m])
            pop[m] = cat_obj.popularity[gi]
            price[m] = cat_obj.prices[gi]
            ids = cat_obj.ids.take(pa.array(gi))
            parts_id.append((m, ids, self._item_urls(s_idx, icat[m], ids, cat_obj, gi)))
        if parts_id:
            item_id = _scatter(n_imp, [(m, a) for m, a, _ in parts_id])
            item_url = _scatter(n_imp, [(m, b) for m, _, b in parts_id])
        k_int = np.log(np.maximum(K * users.interest[iu, icat], 1e-3))
        logit = (
            CLICK["intercept"]
            + CLICK["interest"] * k_int
            + CLICK["history"] * np.log1p(self.hist[iu, icat])
            + CLICK["session"] * np.log1p(sess_views)
            + CLICK["position"] * (position - 1)
            + CLICK["popularity"] * pop
            + CLICK["page_match"] * (icat == page_cat[imp_pv])
            + CLICK["mobile"] * mobile[sess[imp_pv]]
        )
        p_click = 1.0 / (1.0 + np.exp(-logit))
        clicked = rng.random(n_imp) < p_click
        q_conv = 1.0 / (
            1.0
            + np.exp(
                -(
                    CONVERSION["intercept"]
                    + CONVERSION["interest"] * k_int
                    + CONVERSION["log_price"] * np.log(price / 30.0)
                )
            )
        )
        converted = clicked & (rng.random(n_imp) < q_conv)

        t_imp = t_pv[imp_pv] + 0.4 + 0.05 * position
        t_click = t_imp + np.minimum(rng.lognormal(np.log(6.0), 0.9, n_imp), 1200.0)
        t_conv = t_click + np.minimum(rng.lognormal(np.log(900.0), 1.0, n_imp), 12 * 3600.0)

        # assemble -----------------------------------------------------------------------------
        ci, vi = np.nonzero(clicked)[0], np.nonzero(converted)[0]
        imp_props = _props(
            item_id=item_id, position=pa.array(position).cast(pa.string()), item_url=item_url
        )
        click_props = _props(
            item_id=item_id.take(pa.array(ci)), position=pa.array(position[ci]).cast(pa.string())
        )
        order_ids = hex_ids(rng, len(vi), 6, dashed=False)
        currency = pa.array(np.where(isite[vi] == 1, "GBP", "EUR"))
        conv_props = _props(
            item_id=item_id.take(pa.array(vi)),
            price=pa.array(price[vi]).cast(pa.string()),
            currency=currency,
            order_id=order_ids,
        )
        pv_props = _props(device=pa.array(np.where(mobile[sess], "mobile", "desktop")))
        parts = [
            _part(
                "page_view", t_pv, pu, sess, url, referrer, pv_props, page_cat, session_ids, labels
            ),
            _part(
                "impression",
                t_imp,
                iu,
                sess[imp_pv],
                url.take(pa.array(imp_pv)),
                None,
                imp_props,
                icat,
                session_ids,
            ),
            _part(
                "click",
                t_click[ci],
                iu[ci],
                sess[imp_pv][ci],
                url.take(pa.array(imp_pv[ci])),
                None,
                click_props,
                icat[ci],
                session_ids,
            ),
            _part(
                "conversion",
                t_conv[vi],
                iu[vi],
                sess[imp_pv][vi],
                None,
                None,
                conv_props,
                icat[vi],
                session_ids,
            ),
        ]
        table = pa.concat_tables(parts)
        n_rows = table.num_rows
        truth_cols = {"_p": p_click, "_q": q_conv, "_clicked": clicked, "_converted": converted}
        start_imp = len(t_pv)
        for name, values in truth_cols.items():
            full = np.zeros(n_rows, values.dtype)
            full[start_imp : start_imp + n_imp] = values
            table = table.append_column(name, pa.array(full))
        order = np.argsort(table.column("_t").to_numpy(), kind="stable")
        table = table.take(pa.array(order))
        ts_ms = np.round(table.column("_t").to_numpy() * 1000).astype(np.int64)
        rows = table.num_rows
        table = table.append_column("ts", pa.array(ts_ms, pa.timestamp("ms", tz="UTC")))
        table = table.append_column("event_id", hex_ids(rng, rows))
        table = table.append_column(
            "user_id", users.ids.take(pa.array(table.column("_user").to_numpy()))
        )
        return table.drop(["_t"])

    # -- finishing: arrival times, malformed records, duplicates ---------------------------

    def _finish(self, rng: np.random.Generator, batch: pa.Table, n_dup: int) -> pa.Table:
        spec, stats = self.spec, self.stats
        n = batch.num_rows
        ts_ms = pc.cast(batch.column("ts"), pa.int64()).to_numpy()
        delay = rng.lognormal(np.log(300.0), 0.8, n)  # ms
        late = rng.random(n) < spec.late
        very_late = late & (rng.random(n) < 0.1)
        delay = np.where(late, rng.uniform(60_000, 6 * 3_600_000, n), delay)
        delay = np.where(very_late, rng.uniform(86_400_000, 3 * 86_400_000, n), delay)
        received = ts_ms + np.round(delay).astype(np.int64)
        stats.late += int(late.sum())
        stats.very_late += int(very_late.sum())
        table = batch.append_column("received_at", pa.array(received, pa.timestamp("ms", tz="UTC")))
        table = table.append_column("ts_text", pa.nulls(n, pa.string()))
        for etype, count in Counter(table.column("type").to_pylist()).items():
            stats.by_type[etype] += count
        for host_tmpl, count in Counter(
            table.filter(pc.equal(table.column("type"), "page_view")).column("_tmpl").to_pylist()
        ).items():
            host, _tmpl = host_tmpl.split("|")
            stats.page_views_by_host[host] += count
            stats.page_views_by_template[host_tmpl] += count
        stats.ts_min = min(stats.ts_min, float(ts_ms.min()) / 1000)
        stats.ts_max = max(stats.ts_max, float(ts_ms.max()) / 1000)

        # malformed rows (modified in place) and duplicates (extra rows)
        n_bad = round(n * spec.malformed * (1 - MALFORMED_KINDS["duplicate"]))
        kinds = [k for k in MALFORMED_KINDS if k != "duplicate"]
        shares = np.array([MALFORMED_KINDS[k] for k in kinds])
        bad_rows = rng.choice(n, size=min(n_bad, n), replace=False) if n_bad else np.zeros(0, int)
        bad_kind = rng.choice(len(kinds), size=len(bad_rows), p=shares / shares.sum())
        has_url = pc.is_valid(table.column("url")).to_numpy(zero_copy_only=False)
        # a bad URL needs a URL to break; other rows get a bad timestamp instead
        bad_kind = np.where(
            (np.array(kinds)[bad_kind] == "bad_url") & ~has_url[bad_rows],
            kinds.index("bad_ts"),
            bad_kind,
        )
        cols = {
            name: table.column(name).combine_chunks()
            for name in ("event_id", "user_id", "url", "ts", "ts_text")
        }
        for k_idx, kind in enumerate(kinds):
            rows = np.sort(bad_rows[bad_kind == k_idx])
            if len(rows) == 0:
                continue
            stats.malformed[kind] += len(rows)
            mask = np.zeros(n, bool)
            mask[rows] = True
            pmask = pa.array(mask)
            if kind == "bad_ts":
                vals = pa.array(np.asarray(BAD_TS_VALUES, dtype=object)[rng.integers(0, 3, n)])
                cols["ts_text"] = pc.if_else(pmask, vals, cols["ts_text"])
            elif kind == "missing_event_id":
                cols["event_id"] = pc.if_else(pmask, pa.scalar(None, pa.string()), cols["event_id"])
            elif kind == "missing_user_id":
                cols["user_id"] = pc.if_else(pmask, pa.scalar(None, pa.string()), cols["user_id"])
            elif kind == "bad_url":
                broken = pc.replace_substring_regex(cols["url"], "^(?i:https?)://", "htp:/")
                alt = pc.replace_substring_regex(cols["url"], "^(?i:https?)://", "")
                which = pa.array(rng.random(n) < 0.5)
                cols["url"] = pc.if_else(pmask, pc.if_else(which, broken, alt), cols["url"])
            elif kind == "ts_in_future":
                future = pa.array(received + 3 * 86_400_000, pa.timestamp("ms", tz="UTC"))
                cols["ts"] = pc.if_else(pmask, future, cols["ts"])
        for name, arr in cols.items():
            table = table.set_column(table.schema.get_field_index(name), name, arr)
        order = np.argsort(received, kind="stable")
        table = table.take(pa.array(order))
        if n_dup:
            clean = np.ones(n, bool)
            clean[bad_rows] = False
            clean_rows = np.nonzero(clean[order])[0]
            picks = np.sort(rng.choice(clean_rows, size=min(n_dup, len(clean_rows)), replace=False))
            stats.malformed["duplicate"] += len(picks)
            table = pa.concat_tables([table, table.take(pa.array(picks))])
        stats.records += table.num_rows
        return table

    # -- URLs ---------------------------------------------------------------------------

    def _urls(
        self,
        rng: np.random.Generator,
        psite: np.ndarray,
        tmpl: np.ndarray,
        cat: np.ndarray,
        is_first: np.ndarray,
    ) -> tuple[pa.Array, np.ndarray, pa.Array]:
        total = len(psite)
        page_cat = np.full(total, -1, np.int64)
        pieces: list[tuple[np.ndarray, pa.Array]] = []
        labels: list[tuple[np.ndarray, pa.Array]] = []
        for s_idx, site in enumerate(SITES):
            for t_idx, t in enumerate(site.templates):
                rows = np.nonzero((psite == s_idx) & (tmpl == t_idx))[0]
                if len(rows) == 0:
                    continue
                c = cat[rows]
                values, has_cat = self._field_values(rng, s_idx, t, c)
                if has_cat:
                    page_cat[rows] = c
                pieces.append((rows, _render(t, values, len(rows))))
                labels.append((rows, pa.array([f"{site.host}|{t.name}"] * len(rows))))
        path = _scatter(total, pieces)
        template_labels = _scatter(total, labels)
        host = pa.array([s.host for s in SITES]).take(pa.array(psite))
        # noise: scheme, host case, default port, trailing slash, tracking parameters
        https = rng.random(total) < 0.97
        scheme = pa.array(np.where(https, "https://", "http://"))
        upper = rng.random(total) < 0.02
        host = pc.if_else(pa.array(upper), pc.utf8_upper(host), host)
        port = rng.random(total) < 0.01
        host = pc.if_else(
            pa.array(port),
            pc.binary_join_element_wise(host, pa.array(np.where(https, ":443", ":80")), ""),
            host,
        )
        bare, _, query = _split_query(path)
        slash = (rng.random(total) < 0.04) & ~pc.equal(bare, "/").to_numpy(zero_copy_only=False)
        bare = pc.if_else(pa.array(slash), pc.binary_join_element_wise(bare, "/", ""), bare)
        campaign = is_first & (rng.random(total) < 0.25)
        tracking = _tracking(rng, total)
        query = pc.if_else(
            pa.array(campaign),
            pc.binary_join_element_wise(query, tracking, "&", null_handling="skip"),
            query,
        )
        qpart = pc.fill_null(pc.binary_join_element_wise("?", query, ""), "")
        url = pc.binary_join_element_wise(scheme, host, bare, qpart, "")
        return url, page_cat, template_labels

    def _field_values(
        self, rng: np.random.Generator, s_idx: int, t: Template, c: np.ndarray
    ) -> tuple[dict[str, pa.Array], bool]:
        site, catalog = SITES[s_idx], self.catalogs[s_idx]
        n = len(c)
        values: dict[str, pa.Array] = {}
        has_cat = False
        gi = catalog.index(c, _zipf_rank(rng, n, np.full(n, s_idx)))
        for f in (*t.fields, *t.query):
            name = f.name
            if name in ("category", "dept", "section"):
                values[name] = pa.array(site.codes).take(pa.array(c))
                has_cat = True
            elif name == "category_name":
                values[name] = pa.array(CATEGORIES).take(pa.array(c))
                has_cat = True
            elif name in ("item_id", "v"):
                values[name] = catalog.ids.take(pa.array(gi))
                has_cat = True
            elif name in ("product_slug", "article_slug"):
                values[name] = catalog.slugs.take(pa.array(gi))
                has_cat = True
            elif name == "channel_id":
                ch = c * 200 + np.minimum(rng.zipf(1.6, n) - 1, 199)
                values[name] = pc.binary_join_element_wise(
                    "UC", self.channels.take(pa.array(ch)), ""
                )
                has_cat = True
            elif name == "brand":
                values[name] = self.brands.take(pa.array(np.minimum(rng.zipf(1.3, n) - 1, 255)))
            elif name == "page":
                if t.name == "section_page":
                    pages = 1 + rng.geometric(0.45, n)
                    values[name] = pa.array(pages).cast(pa.string())
                else:
                    pages = rng.geometric(0.6, n)
                    values[name] = pc.if_else(
                        pa.array(pages > 1), pa.array(pages).cast(pa.string()), None
                    )
            elif f.kind == "search":
                values[name] = _search_terms(rng, c)
            else:  # pragma: no cover - every template field is handled above
                raise AssertionError(f"no generator for field {name}")
        return values, has_cat

    def _item_urls(
        self, s_idx: int, c: np.ndarray, ids: pa.Array, catalog: Catalog, gi: np.ndarray
    ) -> pa.Array:
        site = SITES[s_idx]
        base = f"https://{site.host}"
        if s_idx == 0:
            return pc.binary_join_element_wise(
                base, "items", pa.array(site.codes).take(pa.array(c)), ids, "/"
            )
        return pc.binary_join_element_wise(
            base, "product", ids, catalog.slugs.take(pa.array(gi)), "/"
        )

    def _referrers(
        self,
        rng: np.random.Generator,
        url: pa.Array,
        is_first: np.ndarray,
        first: np.ndarray,
        n_pv: np.ndarray,
    ) -> pa.Array:
        total = len(url)
        prev_idx = np.maximum(np.arange(total) - 1, 0)
        prev = url.take(pa.array(prev_idx))
        external = pa.array(
            np.asarray(EXTERNAL_REFERRERS, dtype=object)[
                rng.integers(0, len(EXTERNAL_REFERRERS), total)
            ]
        )
        direct = rng.random(total) < 0.4
        first_ref = pc.if_else(pa.array(direct), pa.scalar(None, pa.string()), external)
        return pc.if_else(pa.array(is_first), first_ref, prev)


# -- helpers ----------------------------------------------------------------------------


def _trim(batch: pa.Table, keep: int) -> pa.Table:
    """Keep ``keep`` rows by dropping whole sessions (sessions are in random time order,
    so the daily cycle is untouched); the last kept session may lose its latest events."""
    sess = batch.column("_sess").to_numpy()
    counts = np.bincount(sess)
    cut = int(np.searchsorted(np.cumsum(counts), keep, side="left"))
    whole = sess < cut
    room = keep - int(whole.sum())
    partial = np.nonzero(sess == cut)[0][:room]  # rows are in time order: the earliest
    mask = whole.copy()
    mask[partial] = True
    return batch.filter(pa.array(mask))


def _quotas(spec: SimSpec) -> np.ndarray:
    weekday = np.array([(spec.start + timedelta(days=d)).weekday() for d in range(spec.days)])
    w = np.where(weekday >= 5, 1.2, 1.0)
    raw = spec.events * w / w.sum()
    q = np.floor(raw).astype(np.int64)
    rest = spec.events - int(q.sum())
    q[np.argsort(-(raw - q), kind="stable")[:rest]] += 1
    return q


def _site_weights() -> np.ndarray:
    w = np.array([s.weight for s in SITES])
    return w / w.sum()


def _impressions_per_pv(psite: np.ndarray, tmpl: np.ndarray) -> np.ndarray:
    width = max(len(s.templates) for s in SITES)
    table = np.zeros((len(SITES), width), np.int64)
    for i, s in enumerate(SITES):
        for j, t in enumerate(s.templates):
            table[i, j] = t.impressions
    return table[psite, tmpl]


def _categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(probs, axis=1)
    draw = rng.random(len(probs))[:, None] * cdf[:, -1:]
    return np.minimum((draw > cdf).sum(axis=1), probs.shape[1] - 1)


def _zipf_rank(rng: np.random.Generator, n: int, site: np.ndarray) -> np.ndarray:
    size = np.array([s.items_per_category for s in SITES])[site]
    return np.mod(rng.zipf(1.35, n) - 1, size)


def _scatter(n: int, parts: list[tuple[np.ndarray, pa.Array]]) -> pa.Array:
    """Place each part's values at its row positions in an array of length ``n``."""
    if not parts:
        return pa.nulls(n, pa.string())
    rows = np.concatenate([r for r, _ in parts])
    values = pa.concat_arrays([v.cast(pa.string()) for _, v in parts])
    inverse = np.empty(n, np.int64)
    inverse[rows] = np.arange(len(rows))
    return values.take(pa.array(inverse))


def _render(t: Template, values: dict[str, pa.Array], n: int) -> pa.Array:
    segments: list[pa.Array | str] = []
    for seg in t.path.split("/"):
        segments.append(values[seg[1:]] if seg.startswith(":") else seg)
    if t.path == "/":
        path: pa.Array = pa.array(["/"] * n)
    else:
        path = pc.binary_join_element_wise(*[_col(s, n) for s in segments], "/")
    if not t.query:
        return path
    params = [pc.binary_join_element_wise(f"{f.name}=", values[f.name], "") for f in t.query]
    # (a lone argument with null_handling="skip" misbehaves in pyarrow: join only pairs)
    query = (
        params[0]
        if len(params) == 1
        else pc.binary_join_element_wise(*params, "&", null_handling="skip")
    )
    query = pc.if_else(pc.equal(query, ""), None, query)
    with_q = pc.binary_join_element_wise(path, query, "?")
    return pc.coalesce(with_q, path)


def _col(value: pa.Array | str, n: int) -> pa.Array:
    return pa.array([value] * n) if isinstance(value, str) else value


def _split_query(url: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array]:
    parts = pc.split_pattern(url, "?", max_splits=1)
    bare = pc.list_element(parts, 0)
    has_q = pc.greater(pc.list_value_length(parts), 1)
    padded = pc.if_else(has_q, parts, pa.scalar(["", ""], parts.type))
    query = pc.if_else(has_q, pc.list_element(padded, 1), pa.scalar(None, pa.string()))
    return bare, has_q, query


def _tracking(rng: np.random.Generator, n: int) -> pa.Array:
    sources = np.array(["newsletter", "facebook", "google", "partner", "twitter"])
    mediums = np.array(["email", "social", "cpc", "referral", "social"])
    campaigns = np.array(["black_friday", "spring_sale", "launch", "retarget", "weekly"])
    s = rng.integers(0, 5, n)
    utm = pc.binary_join_element_wise(
        pc.binary_join_element_wise("utm_source=", pa.array(sources[s]), ""),
        pc.binary_join_element_wise("utm_medium=", pa.array(mediums[s]), ""),
        pc.binary_join_element_wise(
            "utm_campaign=", pa.array(campaigns[rng.integers(0, 5, n)]), ""
        ),
        "&",
    )
    click_id = pc.binary_join_element_wise(
        pa.array(np.where(rng.random(n) < 0.6, "gclid=", "fbclid=")),
        hex_ids(rng, n, 10, dashed=False),
        "",
    )
    return pc.if_else(pa.array(rng.random(n) < 0.7), utm, click_id)


def _search_terms(rng: np.random.Generator, c: np.ndarray) -> pa.Array:
    n = len(c)
    words = [w for cat in CATEGORIES for w in SEARCH_WORDS[cat]]
    noun = pa.array(words).take(pa.array(c * 8 + rng.integers(0, 8, n)))
    adj = pa.array(["", "cheap ", "best ", "red ", "new ", "kids ", "", ""]).take(
        pa.array(rng.integers(0, 8, n))
    )
    text = pc.binary_join_element_wise(adj, noun, "")
    encoded = pc.replace_substring(pc.replace_substring(text, "é", "%C3%A9"), "è", "%C3%A8")
    plus = pc.replace_substring(encoded, " ", "+")
    pct = pc.replace_substring(encoded, " ", "%20")
    return pc.if_else(pa.array(rng.random(n) < 0.7), plus, pct)


def _props(**columns: pa.Array) -> pa.Array:
    """A JSON object text per row from string columns (numbers stay unquoted)."""
    numeric = {"price", "position"}
    pieces = []
    for name, col in columns.items():
        if name in numeric:
            pieces.append(pc.binary_join_element_wise(f'"{name}":', col, ""))
        else:
            pieces.append(pc.binary_join_element_wise(f'"{name}":"', col, '"', ""))
    body = pc.binary_join_element_wise(*pieces, ",", null_handling="skip")
    return pc.binary_join_element_wise("{", body, "}", "")


def _part(
    etype: str,
    t: np.ndarray,
    user: np.ndarray,
    sess: np.ndarray,
    url: pa.Array | None,
    referrer: pa.Array | None,
    props: pa.Array,
    cat: np.ndarray,
    session_ids: pa.Array,
    tmpl_labels: pa.Array | None = None,
) -> pa.Table:
    n = len(t)
    return pa.table(
        {
            "_t": pa.array(t, pa.float64()),
            "type": pa.array([etype] * n, pa.string()),
            "_user": pa.array(user, pa.int64()),
            "_sess": pa.array(sess, pa.int64()),
            "session_id": session_ids.take(pa.array(sess)),
            "url": url if url is not None else pa.nulls(n, pa.string()),
            "referrer": referrer if referrer is not None else pa.nulls(n, pa.string()),
            "props": props,
            "_cat": pa.array(cat, pa.int64()),
            "_tmpl": tmpl_labels if tmpl_labels is not None else pa.nulls(n, pa.string()),
        }
    )

"""URL knowledge: extraction throughput, one-URL latency, learning time on 1M simulator URLs."""

from __future__ import annotations

import statistics
import time
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
from run import Context, timed

from clickloop.simulate import simulate
from clickloop.urls import UrlKnowledge
from clickloop.urls.learn import learn
from clickloop.urls.sources import file_batches

TITLE = "URL knowledge (`clickloop.urls`)"
NOTES = (
    "URLs are the `url` column of a simulated week (impressions repeat their page's URL, "
    "as in real traffic), topped up with referrers to exactly N. `extract` returns host, "
    "domain, template, normalised path and every field (dictionary-decoded) for each row. "
    "Baseline: `urllib.parse.urlsplit(u)` plus `.hostname` and `.path` per URL in a Python "
    "loop over the same URLs — splitting only, no normalisation or templates. Ratios are "
    "our time ÷ baseline time (below 1 means faster than the baseline). The distinct-URL "
    "run has no repetition at all (a worst case). `extract_one` is the request-time path."
)


def _urls(ctx: Context, n: int) -> pa.Array:
    out = ctx.scratch("urls-sim")
    simulate(out, events=n, days=7, seed=7, force=True)
    urls = pa.concat_arrays(list(file_batches([str(out)]))).drop_null()
    if len(urls) < n:
        refs = pa.concat_arrays(list(file_batches([str(out)], column="referrer"))).drop_null()
        urls = pa.concat_arrays([urls, refs.slice(0, n - len(urls))])
    return urls.slice(0, n)


def _baseline(urls: list[str]) -> None:
    for u in urls:
        s = urlsplit(u)
        _ = (s.hostname, s.path)


def run(ctx: Context) -> list[dict]:
    n = 200_000 if ctx.quick else 1_000_000
    urls = _urls(ctx, n)
    py = urls.to_pylist()
    results = []

    t_learn, runs = timed(lambda: learn(urls), repeat=3)
    kb = learn(urls)
    results.append(
        {
            "name": f"learn templates from {n:,} URLs (wall time)",
            "median": t_learn,
            "unit": "s",
            "fmt": "{:,.2f}",
            "runs": runs,
            "target": "≤ 10 s for 1M URLs",
            "ok": t_learn <= 10 if not ctx.quick else None,
        }
    )

    kn = UrlKnowledge(kb)
    kn.extract(urls)  # warm up (allocator, regex compilation)
    t_ex, runs = timed(lambda: kn.extract(urls), repeat=5)
    t_base, _ = timed(lambda: _baseline(py), repeat=3)
    results.append(
        {
            "name": f"extract {n:,} simulator URLs ({len(kn.columns) + 4} columns)",
            "median": n / t_ex,
            "unit": "URLs/s",
            "fmt": "{:,.0f}",
            "runs": [n / x for x in runs],
            "baseline": n / t_base,
            "baseline_name": "urlsplit loop",
            "ratio": t_ex / t_base,
            "target": "faster than urlsplit alone (ratio < 1)",
            "ok": t_ex < t_base,
        }
    )
    t_enc, runs = timed(lambda: kn.extract(urls, encoded=True), repeat=5)
    results.append(
        {
            "name": f"extract {n:,} simulator URLs, dictionary-encoded output",
            "median": n / t_enc,
            "unit": "URLs/s",
            "fmt": "{:,.0f}",
            "runs": [n / x for x in runs],
            "baseline": n / t_base,
            "baseline_name": "urlsplit loop",
            "ratio": t_enc / t_base,
        }
    )

    m = n // 5
    rng = np.random.default_rng(1)
    ids = rng.permutation(m) + 1_000_000
    distinct = [
        f"https://shop.example.com/items/{i % 8 + 1}/{i}?utm_source=x{j}" for j, i in enumerate(ids)
    ]
    darr = pa.array(distinct)
    kn.extract(darr)
    t_d, runs = timed(lambda: kn.extract(darr), repeat=3)
    t_db, _ = timed(lambda: _baseline(distinct), repeat=3)
    results.append(
        {
            "name": f"extract {m:,} URLs that are all distinct",
            "median": m / t_d,
            "unit": "URLs/s",
            "fmt": "{:,.0f}",
            "runs": [m / x for x in runs],
            "baseline": m / t_db,
            "baseline_name": "urlsplit loop",
            "ratio": t_d / t_db,
        }
    )

    sample = py[:20_000]
    for label, fresh in (("repeated URLs (cached)", False), ("never-seen URLs", True)):
        lat = []
        one = UrlKnowledge(kb)
        calls = distinct[:20_000] if fresh else sample
        if not fresh:
            for u in calls:
                one.extract_one(u)
        for u in calls:
            t0 = time.perf_counter()
            one.extract_one(u)
            lat.append(time.perf_counter() - t0)
        us = np.array(lat) * 1e6
        p50, p99 = float(np.percentile(us, 50)), float(np.percentile(us, 99))
        results.append(
            {
                "name": f"extract_one latency, {label}: p50 (p99 {p99:,.1f} µs)",
                "median": p50,
                "unit": "µs",
                "fmt": "{:,.1f}",
                "runs": [statistics.median(us[i::4]) for i in range(4)],
            }
        )
    return results

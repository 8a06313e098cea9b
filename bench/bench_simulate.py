"""Simulator throughput: 10M events in about a minute on the 2-core machine."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from run import Context, timed

from clickloop.simulate import simulate
from clickloop.simulate.writers import string_bytes

TITLE = "Simulator (`clickloop simulate`)"
NOTES = (
    "Baseline: writing the same number of JSONL lines of one fixed event with the same "
    "vectorised string path — the I/O and formatting floor. The ratio is the price of "
    "generating realistic behaviour on top of that floor."
)


def _floor(out, n: int) -> None:
    line = (
        '{"event_id":"7c2af6c4-51b9-9618-6d05-1b4fc8bf7a68","ts":"2026-11-01T00:00:07.715Z",'
        '"received_at":"2026-11-01T00:00:08.113Z","type":"impression","user_id":"u0006754",'
        '"session_id":"s440881282a1efc54","url":"https://shop.example.com/items/6/8011983",'
        '"props":{"item_id":"5293598","position":2}}\n'
    )
    chunk = 500_000
    with open(out / "floor.jsonl", "wb") as f:
        for start in range(0, n, chunk):
            k = min(chunk, n - start)
            ids = pc.cast(pa.array(np.arange(start, start + k)), pa.string())
            lines = pc.binary_join_element_wise(ids, line, "")
            f.write(string_bytes(lines))


def run(ctx: Context) -> list[dict]:
    results = []
    n_small = 200_000 if ctx.quick else 1_000_000
    out = ctx.scratch("sim")
    t_small, runs = timed(lambda: simulate(out, events=n_small, seed=7, force=True), repeat=3)
    floor_dir = ctx.scratch("floor")
    t_floor, _ = timed(lambda: _floor(floor_dir, n_small), repeat=3)
    results.append(
        {
            "name": f"simulate {n_small:,} events (JSONL)",
            "median": n_small / t_small,
            "unit": "events/s",
            "fmt": "{:,.0f}",
            "runs": [n_small / x for x in runs],
            "baseline": n_small / t_floor,
            "baseline_name": "fixed-line floor",
            "ratio": t_small / t_floor,
        }
    )
    n_big = 2_000_000 if ctx.quick else 10_000_000
    t_big, _ = timed(lambda: simulate(out, events=n_big, seed=7, force=True), repeat=1)
    results.append(
        {
            "name": f"simulate {n_big:,} events (JSONL), wall time",
            "median": t_big,
            "unit": "s",
            "fmt": "{:,.1f}",
            "runs": [t_big],
            "target": "about 60 s for 10M",
            "ok": t_big <= 75 if not ctx.quick else None,
        }
    )
    return results

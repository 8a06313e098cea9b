"""The clickstream simulator: realistic, deterministic web events with ground truth.

>>> from clickloop.simulate import simulate
>>> summary = simulate("/tmp/sim", events=100_000, days=3, seed=7)   # doctest: +SKIP
>>> summary["records"]
100000

Writes ``DIR/events/part-DDD-BBB.{jsonl,csv,parquet}`` and ``DIR/truth/``:

* ``urls.json`` — per host, its URL template families and each field's kind;
* ``dictionaries.json`` — category codes per site (``shop_categories: {1: clothes}``);
* ``labels.json`` — how clicks and conversions were generated and the
  Bayes-optimal AUC any model can reach on this data;
* ``summary.json`` — counts by type, malformed records by the reason a
  validator should give, duplicates, late arrivals, time range, files.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson

from clickloop import __version__
from clickloop.errors import UsageError
from clickloop.simulate.generator import (
    CLICK,
    CONVERSION,
    HISTORY_HALF_LIFE_DAYS,
    MALFORMED_KINDS,
    Generator,
    SimSpec,
    auc_from_hist,
)
from clickloop.simulate.world import dictionaries, url_truth
from clickloop.simulate.writers import FORMATS, Format, write_chunk

__all__ = ["FORMATS", "SimSpec", "simulate"]

EXTENSIONS: Final = {"jsonl": "jsonl", "csv": "csv", "parquet": "parquet"}


def expected_reason(kind: str, fmt: str) -> str:
    """The quarantine reason a correct validator gives a malformed record of ``kind``."""
    if kind == "bad_ts" and fmt == "parquet":
        return "missing_ts"  # typed Parquet cannot hold the bad text: it is written as null
    return kind


def simulate(
    out: str | Path,
    *,
    events: int,
    days: int = 7,
    seed: int = 0,
    fmt: Format = "jsonl",
    start: date = date(2026, 11, 1),
    users: int | None = None,
    malformed: float = 0.005,
    late: float = 0.01,
    compress: bool = False,
    force: bool = False,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Generate ``events`` records into ``out``; return the summary (also in truth/)."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")
    if compress and fmt == "parquet":
        raise UsageError("--gzip applies to jsonl and csv; Parquet is compressed already")
    if not 0 <= malformed < 0.5:
        raise UsageError(f"malformed must be in [0, 0.5), got {malformed}")
    root = Path(out)
    events_dir, truth_dir = root / "events", root / "truth"
    for d in (events_dir, truth_dir):
        if d.exists() and any(d.iterdir()):
            if not force:
                raise UsageError(
                    f"{d} already holds data",
                    hint="choose an empty directory or pass --force to replace it",
                )
            shutil.rmtree(d)
        d.mkdir(parents=True, exist_ok=True)

    spec = SimSpec(
        events=events,
        days=days,
        seed=seed,
        start=start,
        users=users,
        malformed=malformed,
        late=late,
    )
    gen = Generator(spec)
    files: list[dict[str, Any]] = []
    ext = EXTENSIONS[fmt] + (".gz" if compress else "")
    for chunk in gen.chunks():
        name = f"part-{len(files):05d}.{ext}"
        size = write_chunk(chunk, events_dir / name, fmt, compress=compress)
        files.append({"file": f"events/{name}", "records": chunk.num_rows, "bytes": size})
        if progress:
            progress(chunk.num_rows)

    stats = gen.stats
    assert stats.records == events, (stats.records, events)  # exact by construction
    click_auc = auc_from_hist(stats.click_hist)
    conv_auc = auc_from_hist(stats.conv_hist)
    impressions = int(stats.click_hist.sum())
    malformed_counts = {k: int(stats.malformed.get(k, 0)) for k in MALFORMED_KINDS}
    expected: dict[str, int] = {}
    for kind, count in malformed_counts.items():
        if kind != "duplicate" and count:
            reason = expected_reason(kind, fmt)
            expected[reason] = expected.get(reason, 0) + count
    summary: dict[str, Any] = {
        "generator": f"clickloop {__version__}",
        "seed": seed,
        "format": fmt,
        "compressed": compress,
        "records": stats.records,
        "days": days,
        "start": start.isoformat(),
        "ts_min": _iso(stats.ts_min),
        "ts_max": _iso(stats.ts_max),
        "users": spec.n_users,
        "users_active": int(stats.users_seen.sum()) if stats.users_seen is not None else 0,
        "sessions": stats.sessions,
        "by_type": dict(sorted(stats.by_type.items())),
        "malformed": malformed_counts,
        "expected": {
            "valid": stats.records - sum(malformed_counts.values()),
            "quarantined": dict(sorted(expected.items())),
            "duplicates": malformed_counts["duplicate"],
        },
        "bayes_auc": {"click": click_auc, "conversion": conv_auc},
        "late_arrivals": stats.late,
        "very_late_arrivals": stats.very_late,
        "page_views_by_host": dict(sorted(stats.page_views_by_host.items())),
        "page_views_by_template": dict(sorted(stats.page_views_by_template.items())),
        "files": files,
    }
    labels = {
        "click": {
            "definition": "a click by the same user on the same props.item_id after an "
            "impression (within 20 minutes)",
            "model": "p = sigmoid(intercept + Σ coefficient × term)",
            "coefficients": CLICK,
            "history_half_life_days": HISTORY_HALF_LIFE_DAYS,
            "impressions": impressions,
            "positives": int(stats.click_hist[1].sum()),
            "rate": float(stats.click_hist[1].sum() / impressions) if impressions else None,
            "bayes_auc": click_auc,
        },
        "conversion": {
            "definition": "a conversion by the same user on the same props.item_id after a "
            "click (within 12 hours)",
            "model": "q = sigmoid(intercept + interest × log(K·interest) + log_price × "
            "log(price/30)), given a click",
            "coefficients": CONVERSION,
            "positives": int(stats.conv_hist[1].sum()),
            "rate_per_impression": float(stats.conv_hist[1].sum() / impressions)
            if impressions
            else None,
            "bayes_auc": conv_auc,
        },
    }
    _dump(truth_dir / "summary.json", summary)
    _dump(truth_dir / "labels.json", labels)
    _dump(truth_dir / "urls.json", url_truth())
    _dump(truth_dir / "dictionaries.json", dictionaries())
    return summary


def _iso(ts: float) -> str | None:
    if not np.isfinite(ts):
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _dump(path: Path, obj: Any) -> None:
    path.write_bytes(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")

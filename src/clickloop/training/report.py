"""The evaluation report: the same numbers as JSON and as one static HTML file.

The HTML embeds its plots as SVG and its style inline, so it opens from disk
in any browser with no server and can be attached to a ticket or an email.

>>> paths = write_report(report, Path("reports/ctr-v3"))       # doctest: +SKIP
>>> paths["html"], paths["json"]
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from clickloop.training import plots

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;
background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;
padding-bottom:4px}.sub{color:#666;margin-bottom:16px}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{background:#fff;border:1px solid #e2e4e8;
border-radius:6px;padding:10px 14px;min-width:120px}.card b{display:block;font-size:20px}
.card span{color:#666;font-size:12px}
table{border-collapse:collapse;background:#fff;margin:6px 0;font-size:13px}
th,td{border:1px solid #e2e4e8;padding:4px 8px;text-align:right}th{background:#eef0f3}
td.l,th.l{text-align:left}.ok{color:#2e7d32;font-weight:600}.bad{color:#c62828;font-weight:600}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:12px}
.fig{background:#fff;border:1px solid #e2e4e8;border-radius:6px;padding:6px}
.fig svg{width:100%;height:auto}.note{color:#555;font-size:13px}
details{margin:6px 0}code{background:#eef0f3;padding:1px 4px;border-radius:3px}
"""

MAIN_METRICS = (
    "roc_auc",
    "pr_auc",
    "log_loss",
    "brier",
    "ece",
    "precision",
    "recall",
    "f1",
    "accuracy",
)


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v):
            return "—"
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def _table(headers: list[str], rows: list[list[Any]], left: int = 1) -> str:
    head = "".join(
        f"<th class='{'l' if i < left else ''}'>{html.escape(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='{'l' if i < left else ''}'>{c if isinstance(c, _Raw) else _fmt(c)}</td>"
            for i, c in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


class _Raw(str):
    """Already-escaped HTML for a table cell."""


def _status(ok: bool | None) -> _Raw:
    if ok is None:
        return _Raw("—")
    return _Raw("<span class='ok'>pass</span>" if ok else "<span class='bad'>fail</span>")


def make_figures(r: dict[str, Any]) -> dict[str, str]:
    """Every plot of the report as SVG text (rendered once, reused by each HTML copy)."""
    t, champ, cur = r["test"], r.get("champion"), r["curves"]
    ch_curves = champ.get("curves") if champ else None
    figs = {}
    if "roc" in cur:
        figs["roc"] = plots.roc(cur, ch_curves)
        figs["pr"] = plots.pr(cur, t["rate"], ch_curves)
    figs["calibration"] = plots.calibration(cur["calibration"])
    figs["distribution"] = plots.distribution(cur["distribution"])
    figs["gain"] = plots.gain(cur["lift"])
    if r["importances"]:
        figs["importances"] = plots.importances(r["importances"])
    return figs


def render_html(r: dict[str, Any], figures: dict[str, str] | None = None) -> str:
    t, base, champ = r["test"], r["baseline"], r.get("champion")
    title = f"{r['model']}" + (f" version {r['version']}" if r.get("version") else "")
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>clickloop report — {html.escape(title)}</title><style>{CSS}</style></head>"
        f"<body><main><h1>Model report: {html.escape(title)}</h1>"
        f"<div class='sub'>{html.escape(r['algorithm'])} · trained {html.escape(r['created_at'])}"
        f" · project {html.escape(r.get('project', ''))}</div>"
    ]
    cards = [
        ("ROC-AUC", t["roc_auc"]),
        ("PR-AUC", t["pr_auc"]),
        ("log loss", t["log_loss"]),
        ("ECE", t["ece"]),
        ("F1 @ threshold", t["f1"]),
        ("test examples", t["examples"]),
    ]
    if champ:
        cards.append((f"champion v{champ['version']} ROC-AUC", champ["test"].get("roc_auc")))
    parts.append(
        "<div class='cards'>"
        + "".join(
            f"<div class='card'><b>{_fmt(v)}</b><span>{html.escape(k)}</span></div>"
            for k, v in cards
        )
        + "</div>"
    )
    if r.get("gates"):
        g = r["gates"]
        parts.append(f"<h2>Promotion gates: {_status(g['passed'])}</h2>")
        parts.append(
            _table(
                ["check", "result", "detail"],
                [[c["check"], _status(c["passed"]), c["detail"]] for c in g["checks"]],
            )
        )

    parts.append("<h2>Test slice</h2>")
    headers = ["measure", "this model", "trivial baseline"] + (
        [f"champion (v{champ['version']})"] if champ else []
    )
    rows = []
    for m in MAIN_METRICS:
        row = [m, t.get(m), base.get(m)]
        if champ:
            row.append(champ["test"].get(m))
        rows.append(row)
    parts.append(_table(headers, rows))
    parts.append(
        f"<p class='note'>Baseline: {html.escape(base.get('name', ''))}. "
        f"Threshold {t['threshold']:.4f}: {html.escape(r['threshold']['how'])}; "
        "precision, recall, F1 and accuracy are measured at it. ECE is the expected "
        "calibration error over 15 equal-mass bins. The test slice is the latest "
        f"{_fmt(t['examples'])} examples, never used for fitting, selection, search, "
        "calibration or the threshold.</p>"
    )
    c = t["confusion"]
    parts.append("<h2>Confusion matrix (test, at the threshold)</h2>")
    parts.append(
        _table(
            ["", "predicted positive", "predicted negative"],
            [["actual positive", c["tp"], c["fn"]], ["actual negative", c["fp"], c["tn"]]],
        )
    )

    cur = r["curves"]
    figures = figures if figures is not None else make_figures(r)
    figs = [
        figures[k] for k in ("roc", "pr", "calibration", "distribution", "gain") if k in figures
    ]
    parts.append(
        "<h2>Curves</h2><div class='grid'>"
        + "".join(f"<div class='fig'>{f}</div>" for f in figs)
        + "</div>"
    )
    parts.append("<h2>Lift and gain by decile</h2>")
    parts.append(
        _table(
            ["decile", "examples", "positives", "rate", "lift", "cumulative gain"],
            [
                [x["decile"], x["examples"], x["positives"], x["rate"], x["lift"], x["gain"]]
                for x in cur["lift"]
            ],
        )
    )

    parts.append("<h2>Slices</h2>")
    for col, srows in r.get("slices", {}).items():
        hdr = ["value", "examples", "positives", "rate", "mean score", "ROC-AUC", "log loss"]
        has_ref = any("reference_roc_auc" in s for s in srows)
        if has_ref:
            hdr += ["champion ROC-AUC", "Δ ROC-AUC"]
        body = []
        for s in srows:
            row = [
                s["value"],
                s["examples"],
                s["positives"],
                s["rate"],
                s["mean_score"],
                s["roc_auc"],
                s["log_loss"],
            ]
            if has_ref:
                row += [s.get("reference_roc_auc"), s.get("delta_roc_auc")]
            body.append(row)
        parts.append(f"<h3>{html.escape(col)}</h3>" + _table(hdr, body))
    if not r.get("slices"):
        parts.append("<p class='note'>No slice columns were available.</p>")

    parts.append("<h2>Feature importance</h2>")
    if "importances" in figures:
        parts.append(f"<div class='fig' style='max-width:720px'>{figures['importances']}</div>")
    parts.append("<h2>Feature selection</h2>")
    sel = r["selection"]
    kept = sum(1 for s in sel if s["kept"])
    parts.append(f"<p class='note'>{kept} of {len(sel)} candidates kept.</p>")
    parts.append(
        _table(
            [
                "feature",
                "kept",
                "reason",
                "missing",
                "single-feature AUC",
                "mutual info",
                "gain share",
                "permutation Δ AUC",
                "stability",
            ],
            [
                [
                    s["feature"],
                    s["kept"],
                    s["reason"] + (f" ({s['note']})" if s.get("note") else ""),
                    s.get("missing"),
                    s.get("single_auc"),
                    s.get("mutual_info"),
                    s.get("gain"),
                    s.get("permutation"),
                    s.get("stability"),
                ]
                for s in sel
            ],
            left=3,
        )
    )

    parts.append("<h2>Data, split and sampling</h2>")
    d = r["data"]
    parts.append(_table(["", "value"], [[k, v] for k, v in d.items()]))
    parts.append(_table(["", "value"], [[k, v] for k, v in r["split"].items()]))
    parts.append(
        _table(
            ["sampling step", "rows", "positives", "rate"],
            [[s["step"], s.get("rows"), s.get("positives"), s.get("rate")] for s in r["sampling"]],
        )
    )
    cal = r.get("calibration", {})
    parts.append(
        f"<p class='note'>Scores are corrected for the training prior (negative rate "
        f"{_fmt(cal.get('rate'))}) with method <code>{html.escape(str(cal.get('method')))}"
        "</code>.</p>"
    )
    if r.get("search"):
        parts.append("<h2>Hyperparameter search (validation slice)</h2>")
        parts.append(
            _table(
                ["trial", "parameters", "score", "seconds", "best"],
                [
                    [i + 1, json.dumps(x["params"]), x["score"], x["seconds"], x.get("best")]
                    for i, x in enumerate(r["search"])
                ],
            )
        )
    parts.append("<h2>Parameters and lineage</h2>")
    parts.append(
        "<details open><summary>parameters</summary><pre>"
        + html.escape(json.dumps(r["params"], indent=2, sort_keys=True, default=str))
        + "</pre></details>"
    )
    if r.get("lineage"):
        parts.append(
            "<details><summary>lineage</summary><pre>"
            + html.escape(json.dumps(r["lineage"], indent=2, sort_keys=True, default=str))
            + "</pre></details>"
        )
    parts.append(_table(["stage", "seconds"], [[k, v] for k, v in r.get("timings", {}).items()]))
    parts.append("</main></body></html>")
    return "\n".join(parts)


def write_report(
    report: dict[str, Any],
    directory: Path,
    stem: str = "report",
    *,
    figures: dict[str, str] | None = None,
) -> dict[str, Path]:
    """Write ``<stem>.json`` and ``<stem>.html`` into ``directory``; return both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    j = directory / f"{stem}.json"
    h = directory / f"{stem}.html"
    j.write_text(json.dumps(report, indent=2, sort_keys=True, default=_json_default) + "\n")
    h.write_text(render_html(report, figures), encoding="utf-8")
    return {"json": j, "html": h}


def _json_default(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    if hasattr(v, "tolist"):
        return v.tolist()
    return str(v)

"""Plots for the evaluation report, rendered as inline SVG (no server, no external files)."""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable
from typing import Any

import matplotlib
from matplotlib.figure import Figure

BLUE, GREY, ORANGE, GREEN = "#2f6db5", "#8a8a8a", "#d9822b", "#2e9d5b"


def _svg(
    draw: Callable[[Any], None], size: tuple[float, float] = (4.6, 3.4), left: float = 0.16
) -> str:
    with matplotlib.rc_context({"svg.fonttype": "none", "font.size": 9, "svg.hashsalt": "cl"}):
        fig = Figure(figsize=size)
        fig.subplots_adjust(left=left, right=0.86, bottom=0.15, top=0.9)  # fixed: fast
        ax = fig.add_subplot()
        draw(ax)
        ax.grid(alpha=0.25)
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg") :]


def roc(curves: dict[str, Any], champion: dict[str, Any] | None) -> str:
    def draw(ax: Any) -> None:
        ax.plot(curves["roc"]["fpr"], curves["roc"]["tpr"], color=BLUE, label="this model")
        if champion and "roc" in champion:
            ax.plot(champion["roc"]["fpr"], champion["roc"]["tpr"], color=ORANGE, label="champion")
        ax.plot([0, 1], [0, 1], color=GREY, ls="--", label="chance")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve")
        ax.legend(loc="lower right")

    return _svg(draw)


def pr(curves: dict[str, Any], rate: float, champion: dict[str, Any] | None) -> str:
    def draw(ax: Any) -> None:
        ax.plot(curves["pr"]["recall"], curves["pr"]["precision"], color=BLUE, label="this model")
        if champion and "pr" in champion:
            ax.plot(
                champion["pr"]["recall"],
                champion["pr"]["precision"],
                color=ORANGE,
                label="champion",
            )
        ax.axhline(rate, color=GREY, ls="--", label=f"base rate {rate:.3f}")
        ax.set(xlabel="recall", ylabel="precision", title="Precision–recall", ylim=(0, 1.02))
        ax.legend(loc="upper right")

    return _svg(draw)


def calibration(rows: list[dict[str, float]]) -> str:
    def draw(ax: Any) -> None:
        x = [r["mean_score"] for r in rows]
        y = [r["rate"] for r in rows]
        top = max([*x, *y, 1e-3]) * 1.05
        ax.plot([0, top], [0, top], color=GREY, ls="--", label="perfect")
        ax.plot(x, y, marker="o", color=BLUE, label="this model")
        ax.set(
            xlabel="mean predicted probability (equal-mass bins)",
            ylabel="observed rate",
            title="Calibration",
            xlim=(0, top),
            ylim=(0, top),
        )
        ax.legend(loc="upper left")

    return _svg(draw)


def distribution(dist: dict[str, Any]) -> str:
    def draw(ax: Any) -> None:
        edges = dist["edges"]
        mids = [(a + b) / 2 for a, b in itertools.pairwise(edges)]
        widths = [b - a for a, b in itertools.pairwise(edges)]
        neg, pos = dist["negatives"], dist["positives"]
        tn, tp = max(sum(neg), 1), max(sum(pos), 1)
        ax.bar(
            mids,
            [v / tn / max(w, 1e-12) for v, w in zip(neg, widths, strict=True)],
            width=widths,
            alpha=0.5,
            color=GREY,
            label="negatives",
        )
        ax.bar(
            mids,
            [v / tp / max(w, 1e-12) for v, w in zip(pos, widths, strict=True)],
            width=widths,
            alpha=0.5,
            color=BLUE,
            label="positives",
        )
        ax.set(
            xlabel="score (last bin holds the top 0.5%)",
            ylabel="density",
            title="Score distributions",
            xlim=(0, edges[-2] * 1.02),
        )
        ax.legend(loc="upper right")

    return _svg(draw)


def gain(lift: list[dict[str, float]]) -> str:
    def draw(ax: Any) -> None:
        xs = [0.0] + [r["decile"] / len(lift) for r in lift]
        ax.plot(xs, [0.0] + [r["gain"] for r in lift], marker="o", color=BLUE, label="this model")
        ax.plot([0, 1], [0, 1], color=GREY, ls="--", label="random")
        ax2 = ax.twinx()
        ax2.bar(
            [x - 0.05 for x in xs[1:]],
            [r["lift"] for r in lift],
            width=0.08,
            alpha=0.3,
            color=GREEN,
            label="lift",
        )
        ax2.set_ylabel("lift per decile")
        ax.set(
            xlabel="share of examples (highest scores first)",
            ylabel="share of positives",
            title="Cumulative gain and lift",
        )
        ax.legend(loc="lower right")

    return _svg(draw)


def importances(rows: list[dict[str, Any]], top: int = 25) -> str:
    rows = rows[:top][::-1]

    def draw(ax: Any) -> None:
        ax.barh([r["feature"] for r in rows], [r["importance"] for r in rows], color=BLUE)
        ax.set(xlabel="share of total gain", title="Feature importance")
        ax.tick_params(axis="y", labelsize=7)

    return _svg(draw, size=(6.4, max(2.4, 0.22 * len(rows) + 0.9)), left=0.42)

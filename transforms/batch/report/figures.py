"""The report's figures: plain data in, PNG bytes out, one function per kind of chart.

Each function takes the numbers it draws (no SQL, no file paths), so the same figure can be drawn from
a fixture in a test or from the warehouse in :mod:`.build`. Matplotlib runs on its Agg backend (no
display), and every figure is closed after saving, so a report of many plants does not accumulate
figures in memory.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from datetime import timedelta

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402

DPI = 110
#: One colour per plant, in the order plants are given, so the reference and the legacy plant keep
#: their colours across figures.
PALETTE = ("#1f6f8b", "#d1495b", "#edae49", "#66a182", "#8d96a3")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _empty(title: str, why: str) -> bytes:
    """A figure saying why there is nothing to draw, rather than a blank square."""
    fig, ax = plt.subplots(figsize=(6, 1.6))
    ax.axis("off")
    ax.text(0.5, 0.62, title, ha="center", va="center", fontsize=12, weight="bold")
    ax.text(0.5, 0.25, why, ha="center", va="center", fontsize=10, color="#555555")
    return _png(fig)


def radar(scores: Mapping[str, Mapping[str, float | None]], title: str, top: float = 5.0) -> bytes:
    """One polygon per plant over the same axes (dimensions), scores from 0 to ``top``.

    Missing dimensions of a plant are drawn at 0 and named in the legend, so a gap in the evidence is
    not mistaken for a low score without saying so.
    """
    dims = list(dict.fromkeys(d for s in scores.values() for d in s))
    if not dims:
        return _empty(title, "no readiness scores yet")
    angles = [2 * math.pi * i / len(dims) for i in range(len(dims))]
    fig = plt.figure(figsize=(6.4, 6.4))
    ax = fig.add_subplot(polar=True)
    for (plant, s), color in zip(scores.items(), PALETTE, strict=False):
        values = [s.get(d) for d in dims]
        missing = [d for d, v in zip(dims, values, strict=True) if v is None]
        vals = [0.0 if v is None else float(v) for v in values]
        label = plant + (f" (no evidence: {', '.join(missing)})" if missing else "")
        ax.plot(angles + angles[:1], vals + vals[:1], color=color, linewidth=2, label=label)
        ax.fill(angles + angles[:1], vals + vals[:1], color=color, alpha=0.15)
    ax.set_xticks(angles)
    ax.set_xticklabels([d.replace("_", " ") for d in dims], fontsize=9)
    ax.set_ylim(0, top)
    ax.set_yticks(range(int(top) + 1))
    ax.set_title(title, pad=18, weight="bold")
    ax.legend(loc="upper right", bbox_to_anchor=(1.35, 1.12), fontsize=9)
    return _png(fig)


def heatmap(rows: Sequence[str], cols: Sequence[str], values: Sequence[Sequence[float | None]], title: str,
            label: str, vmax: float = 1.0) -> bytes:
    """A grid of shares (0..``vmax``); empty cells (no station of that stage) are left white."""
    if not rows or not cols:
        return _empty(title, "nothing to draw")
    grid = np.array([[np.nan if v is None else float(v) for v in r] for r in values], dtype=float)
    fig, ax = plt.subplots(figsize=(1.1 + 0.55 * len(cols), 1.2 + 0.32 * len(rows)))
    cmap = matplotlib.colormaps["RdYlGn"].with_extremes(bad="white")
    im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(cols)), [c.replace("_", " ") for c in cols], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    for i in range(len(rows)):
        for j in range(len(cols)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.0%}" if vmax == 1.0 else f"{grid[i, j]:.1f}", ha="center",
                        va="center", fontsize=7)
    fig.colorbar(im, ax=ax, label=label, shrink=0.8)
    ax.set_title(title, weight="bold")
    return _png(fig)


def pareto(labels: Sequence[str], counts: Sequence[float], title: str, ylabel: str, top: int = 12) -> bytes:
    """Bars sorted from the largest, with the cumulative share on a second axis (the 80% line drawn)."""
    pairs = sorted(((float(c), str(label)) for label, c in zip(labels, counts, strict=True) if c), reverse=True)
    if not pairs:
        return _empty(title, "no scrap recorded")
    if len(pairs) > top:
        pairs = pairs[:top - 1] + [(sum(c for c, _ in pairs[top - 1:]), f"other ({len(pairs) - top + 1})")]
    vals = [c for c, _ in pairs]
    cum = np.cumsum(vals) / sum(vals)
    fig, ax = plt.subplots(figsize=(7.5, 4))
    ax.bar(range(len(vals)), vals, color=PALETTE[0])
    ax.set_xticks(range(len(vals)), [lbl for _, lbl in pairs], rotation=40, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax2 = ax.twinx()
    ax2.plot(range(len(vals)), cum, color=PALETTE[1], marker="o")
    ax2.axhline(0.8, color="#999999", linestyle=":", linewidth=1)
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel("cumulative share")
    ax2.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set_title(title, weight="bold")
    return _png(fig)


def grouped_bars(groups: Sequence[str], series: Mapping[str, Sequence[float]], title: str, ylabel: str) -> bytes:
    """Bars per group (e.g. element), one bar per series (e.g. plant) side by side."""
    if not groups or not series or not any(any(v for v in vals) for vals in series.values()):
        return _empty(title, "nothing recorded")
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(7.5, 4))
    for k, ((name, vals), color) in enumerate(zip(series.items(), PALETTE, strict=False)):
        ax.bar([i + k * width for i in range(len(groups))], vals, width, label=name, color=color)
    ax.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(groups))], groups, fontsize=9)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=9)
    ax.set_title(title, weight="bold")
    return _png(fig)


def series_with_share(x: Sequence, series: Mapping[str, Sequence[float | None]],
                      shares: Mapping[str, Sequence[float | None]], title: str, ylabel: str,
                      share_label: str) -> bytes:
    """Lines over time (e.g. kWh per good cell per plant) with a share per series on a second axis.

    The share (e.g. the metered share of the plant) is drawn dashed in the series' colour, so a low
    value on the left axis reads together with how much of the plant it covers.
    """
    if not x or not series:
        return _empty(title, "no days to draw")
    fig, ax = plt.subplots(figsize=(7.5, 4))
    ax2 = ax.twinx()
    for (name, vals), color in zip(series.items(), PALETTE, strict=False):
        ys = [np.nan if v is None else float(v) for v in vals]
        ax.plot(list(x), ys, color=color, marker="o", label=name)
        if name in shares:
            ss = [np.nan if v is None else float(v) for v in shares[name]]
            ax2.plot(list(x), ss, color=color, linestyle="--", marker="s", markerfacecolor="none",
                     label=f"{name}: {share_label}")
    if len(x) == 1:  # one day: a day either side, not the years matplotlib picks for a single point
        ax.set_xlim(x[0] - timedelta(days=1), x[0] + timedelta(days=1))
    ax.set_ylabel(ylabel)
    ax2.set_ylabel(share_label)
    ax2.set_ylim(0, 1.05)
    ax2.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="upper left")
    fig.autofmt_xdate()
    ax.set_title(title, weight="bold")
    return _png(fig)


def roc(fpr: Sequence[float], tpr: Sequence[float], auc: float | None, title: str) -> bytes:
    """A ROC curve (true against false positive rate) with the chance diagonal and the AUC in the legend."""
    if len(fpr) < 2:
        return _empty(title, "no ROC curve recorded")
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.plot([0, 1], [0, 1], color="#999999", linestyle=":", linewidth=1, label="chance (AUC 0.5)")
    ax.plot(list(fpr), list(tpr), color=PALETTE[0], linewidth=2,
            label="model" + (f" (AUC {auc:.3f})" if auc is not None else ""))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positive rate (good cells flagged)")
    ax.set_ylabel("true positive rate (bad cells flagged)")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title, weight="bold", fontsize=10)
    return _png(fig)


def reliability(mean_score: Sequence[float], observed: Sequence[float], cells: Sequence[int], title: str) -> bytes:
    """Observed bad rate against mean score per score bin, marker area by cells, with the diagonal of a
    calibrated score: points under it mean the score overstates the risk."""
    if not mean_score:
        return _empty(title, "no reliability curve recorded")
    top = max(max(mean_score), max(observed), 1e-3) * 1.1
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.plot([0, top], [0, top], color="#999999", linestyle=":", linewidth=1, label="calibrated")
    n = np.asarray(cells, dtype=float)
    ax.plot(list(mean_score), list(observed), color=PALETTE[1], linewidth=1)
    ax.scatter(list(mean_score), list(observed), s=20 + 180 * n / max(n.max(), 1), color=PALETTE[1], zorder=3,
               label="score decile (area: cells)")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("mean score")
    ax.set_ylabel("observed share bad")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title, weight="bold", fontsize=10)
    return _png(fig)


def ranked_bars(labels: Sequence[str], values: Sequence[float], errors: Sequence[float] | None, title: str,
                xlabel: str) -> bytes:
    """Horizontal bars, largest on top, with an error bar each (e.g. permutation importance and its spread)."""
    if not labels:
        return _empty(title, "nothing recorded")
    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.32 * len(labels)))
    y = list(range(len(labels)))[::-1]
    ax.barh(y, list(values), xerr=list(errors) if errors is not None else None, color=PALETTE[0],
            error_kw={"ecolor": "#555555", "capsize": 2})
    ax.set_yticks(y, list(labels), fontsize=8)
    ax.axvline(0, color="#999999", linewidth=0.8)
    ax.set_xlabel(xlabel)
    ax.set_title(title, weight="bold")
    return _png(fig)


def ink_share(png: bytes) -> float:
    """Share of pixels that differ from the most common (background) colour: 0 for a blank image."""
    img = plt.imread(io.BytesIO(png))
    flat = (img[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    colours, counts = np.unique(flat, axis=0, return_counts=True)
    del colours
    return 1.0 - counts.max() / counts.sum()

"""Self-contained HTML reports: tables and matplotlib figures embedded as PNG."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from neuroplastic.io import write_text

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
td, th { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; } .note { color: #555; }
.banner { background: #fff4d6; border-left: 4px solid #d99a00; padding: 0.5rem 0.8rem; }
"""


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "—" if value != value else f"{value:.4g}"
    return html.escape(str(value))


class Report:
    """Collects sections and writes one HTML file with no external resources."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.parts: list[str] = []

    def text(self, text: str) -> Report:
        self.parts.append(f"<p class='note'>{html.escape(text)}</p>")
        return self

    def banner(self, text: str, *, top: bool = False) -> Report:
        """A sentence the reader must not miss (a missed target, an uninformative figure);
        ``top`` puts it before everything added so far."""
        part = f"<p class='banner'>{html.escape(text)}</p>"
        if top:
            self.parts.insert(0, part)
        else:
            self.parts.append(part)
        return self

    def table(self, heading: str, columns: list[str], rows: list[list[object]]) -> Report:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>"
                       for row in rows)
        self.parts.append(f"<h2>{html.escape(heading)}</h2><table><tr>{head}</tr>{body}</table>")
        return self

    def figure(self, heading: str, fig: Figure) -> Report:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        data = base64.b64encode(buffer.getvalue()).decode()
        self.parts.append(f"<h2>{html.escape(heading)}</h2>"
                          f"<img alt='{html.escape(heading)}' src='data:image/png;base64,{data}'>")
        return self

    def html(self) -> str:
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>"
                f"{html.escape(self.title)}</title><style>{_STYLE}</style></head><body>"
                f"<h1>{html.escape(self.title)}</h1>{''.join(self.parts)}</body></html>\n")

    def write(self, path: str | Path) -> None:
        write_text(path, self.html())


def _legend_outside(ax: plt.Axes) -> None:
    """The legend right of the axes, where it covers no data; none if nothing is labelled."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
                  frameon=False)


def grouped_bars(series: dict[str, list[float]], labels: list[str], *, ylabel: str,
                 ylim: tuple[float, float] | None = (0, 1.05),
                 marked: list[int] | None = None, mark_label: str = "forgotten") -> Figure:
    """One group of bars per label, one bar per series (e.g. per-class accuracy per model);
    the groups at ``marked`` positions are shaded and their tick labels say ``mark_label``."""
    fig, ax = plt.subplots(figsize=(8, 3.2))
    width = 0.8 / max(len(series), 1)
    for j in marked or []:
        ax.axvspan(j - 0.1, j + 0.9 - 0.1, color="#f2d7d5", zorder=0)
    for i, (name, values) in enumerate(series.items()):
        ax.bar([j + i * width for j in range(len(values))], values, width, label=name, zorder=2)
    ticks = [f"{label}\n({mark_label})" if j in (marked or []) else label
             for j, label in enumerate(labels)]
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))], ticks,
                  rotation=30 if max(map(len, labels), default=0) > 3 else 0,
                  ha="right" if max(map(len, labels), default=0) > 3 else "center")
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    _legend_outside(ax)
    return fig


def tradeoff(points: dict[str, list[tuple[float, float, float]]], *, xlabel: str, ylabel: str,
             chosen: tuple[float, float, str] | None = None) -> Figure:
    """Forget accuracy (x) against retained accuracy (y), one curve per named list of
    (alpha, forget, retained) candidates, each point labelled by its alpha; ``chosen`` =
    (forget, retained, label) is drawn as a star."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, rows in points.items():
        rows = sorted((r for r in rows if r[1] == r[1] and r[2] == r[2]), key=lambda r: r[0])
        if not rows:
            continue
        ax.plot([r[1] for r in rows], [r[2] for r in rows], marker="o", label=name)
        for alpha, x, y in rows[:: max(1, len(rows) // 6)]:
            ax.annotate(f"{alpha:.3g}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
    if chosen is not None:
        ax.plot([chosen[0]], [chosen[1]], marker="*", markersize=16, color="crimson",
                linestyle="none", label=chosen[2], zorder=5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("numbers on the points: alpha", fontsize=8)
    _legend_outside(ax)
    return fig


def line_plot(curves: dict[str, tuple[list[float], list[float]]], *, xlabel: str, ylabel: str,
              step: bool = False) -> Figure:
    """One line per named (x, y) curve; ``step`` draws a staircase (values hold until changed)."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for name, (xs, ys) in curves.items():
        if step:
            ax.step(xs, ys, where="post", label=name)
        else:
            ax.plot(xs, ys, marker=".", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _legend_outside(ax)
    return fig


def histograms(samples: dict[str, list[float]], *, xlabel: str, bins: int = 30,
               threshold: float | None = None, threshold_label: str = "threshold") -> Figure:
    """Overlaid histograms on shared bins, one per named sample (e.g. key scores per skill);
    ``threshold`` draws the decision line."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    values = [v for sample in samples.values() for v in sample if math.isfinite(v)]
    edges = np.linspace(min(values, default=0.0), max(values, default=1.0), bins + 1)
    for name, sample in samples.items():
        ax.hist([v for v in sample if math.isfinite(v)], bins=edges, alpha=0.5, label=name)
    if threshold is not None and math.isfinite(threshold):
        ax.axvline(threshold, color="black", linestyle="--", label=threshold_label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("prompts")
    _legend_outside(ax)
    return fig


def heatmap(values: list[list[float]], *, rows: list[str], columns: list[str], xlabel: str,
            ylabel: str, vmin: float = 0.0, vmax: float = 1.0) -> Figure:
    """A matrix as coloured cells with their values written in (e.g. the continual accuracy
    matrix R[t, j])."""
    data = np.asarray(values, dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * len(columns), 1.0 + 0.55 * len(rows)))
    image = ax.imshow(data, vmin=vmin, vmax=vmax, cmap="viridis")
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if data[i, j] < (vmin + vmax) / 2 else "black")
    ax.set_xticks(range(len(columns)), columns)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return fig


def duration(seconds: float) -> str:
    """Seconds in the unit a reader expects: µs, ms or s."""
    if seconds != seconds:
        return "—"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"

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


def grouped_bars(series: dict[str, list[float]], labels: list[str], *, ylabel: str,
                 ylim: tuple[float, float] | None = (0, 1.05)) -> Figure:
    """One group of bars per label, one bar per series (e.g. per-class accuracy per model)."""
    fig, ax = plt.subplots(figsize=(8, 3.2))
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        ax.bar([j + i * width for j in range(len(values))], values, width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))], labels,
                  rotation=30 if max(map(len, labels), default=0) > 3 else 0, ha="right")
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def tradeoff(points: dict[str, list[tuple[float, float, float]]], *, xlabel: str,
             ylabel: str) -> Figure:
    """Curves of (alpha, forget accuracy, retained accuracy): one panel per quantity."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for name, rows in points.items():
        rows = sorted(rows)
        alphas = [r[0] for r in rows]
        axes[0].plot(alphas, [r[1] for r in rows], marker="o", label=name)
        axes[1].plot(alphas, [r[2] for r in rows], marker="o", label=name)
    for ax, what in zip(axes, (xlabel, ylabel), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("alpha")
        ax.set_ylabel(what)
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=8)
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
    ax.legend(fontsize=8)
    return fig


def histograms(samples: dict[str, list[float]], *, xlabel: str, bins: int = 30) -> Figure:
    """Overlaid histograms on shared bins, one per named sample (e.g. key scores per skill)."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    values = [v for sample in samples.values() for v in sample if math.isfinite(v)]
    edges = np.linspace(min(values, default=0.0), max(values, default=1.0), bins + 1)
    for name, sample in samples.items():
        ax.hist([v for v in sample if math.isfinite(v)], bins=edges, alpha=0.5, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("prompts")
    ax.legend(fontsize=8)
    return fig

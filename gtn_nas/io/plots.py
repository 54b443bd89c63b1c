"""PNG figures: curriculum grids, learning curves, rank-correlation scatters.

matplotlib is imported lazily with the Agg backend so that headless machines and tests work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> None:
    """Writes the PNG through ``write_atomic`` (no special file replaced, one error line)."""
    import io

    from gtn_nas.io.files import write_atomic

    fig.tight_layout()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=120)
    finally:
        plt.close(fig)
    write_atomic(Path(path), buf.getvalue())


def to_pixels(x: np.ndarray, mean, std) -> np.ndarray:
    """Normalised float images -> [0, 1] for display."""
    return np.clip(np.asarray(x) * np.asarray(std) + np.asarray(mean), 0.0, 1.0)


def curriculum_grid(images: np.ndarray, labels: np.ndarray, path: Path, mean, std,
                    per_step: int = 10, title: str = "") -> None:
    """One row per inner step, ``per_step`` images each: the paper's Figure 3 layout.

    images [T, B, H, W, C], labels [T, B] (hard labels).
    """
    plt = _plt()
    t, b = images.shape[:2]
    k = min(per_step, b)
    pix = to_pixels(images[:, :k], mean, std)
    h, w, c = pix.shape[2:]
    canvas = np.ones((t * (h + 1), k * (w + 1), c))
    for i in range(t):
        for j in range(k):
            canvas[i * (h + 1):i * (h + 1) + h, j * (w + 1):j * (w + 1) + w] = pix[i, j]
    fig, ax = plt.subplots(figsize=(k * 0.45 + 0.8, t * 0.45 + 0.6))
    ax.imshow(canvas.squeeze(-1) if c == 1 else canvas, cmap="gray" if c == 1 else None,
              interpolation="nearest")
    ax.set_yticks([i * (h + 1) + h / 2 for i in range(t)], [str(i) for i in range(t)], fontsize=6)
    ax.set_xticks([j * (w + 1) + w / 2 for j in range(k)], [str(int(l)) for l in labels[0, :k]], fontsize=6)
    ax.set_ylabel("inner step")
    ax.set_xlabel("label")
    if title:
        ax.set_title(title, fontsize=8)
    _save(plt, fig, path)


def curves(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: Path, xlabel: str,
           ylabel: str, title: str = "", logy: bool = False, logx: bool = False) -> None:
    """Line plot of named (x, y) series."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (x, y) in series.items():
        ax.plot(x, y, label=name, marker="o" if len(x) < 30 else None, ms=3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log", base=2)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    _save(plt, fig, path)


def scatter(x: Sequence[float], y: Sequence[float], path: Path, xlabel: str, ylabel: str,
            title: str = "") -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.scatter(x, y, s=10, alpha=0.7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    _save(plt, fig, path)


def bars(values: Mapping[str, Mapping[str, float]], path: Path, title: str = "") -> None:
    """Bars of {'mean', 'std'} accuracies (fractions), drawn in percent with error bars."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4))
    names = list(values)
    means = [100 * values[n]["mean"] for n in names]
    ax.bar(names, means, yerr=[100 * values[n].get("std", 0.0) for n in names], capsize=6,
           color=["tab:orange", "tab:blue", "tab:green"][:len(names)])
    for i, (n, m) in enumerate(zip(names, means)):
        ax.text(i, m + 100 * values[n].get("std", 0.0) + 0.3, f"{m:.2f}", ha="center", va="bottom")
    ax.set_ylabel("accuracy %")
    ax.set_ylim(max(0.0, min(means) - 10), min(100.0, max(means) + 5))
    if title:
        ax.set_title(title, fontsize=9)
    _save(plt, fig, path)

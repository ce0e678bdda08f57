"""Plots of the MTL-MoE notebook: test curves with their spread over seeds, the experts each
class is routed to, and images with their true and predicted boxes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from vipnb.report.header import ReportHeader
from vipnb.report.plots import _short, save_figure


def seed_curves_plot(curves: dict[str, Sequence[Sequence[float]]], out_path: str | os.PathLike,
                     header: ReportHeader, ylabel: str, title: str) -> Path:
    """Per label, the mean curve over seeds (one sequence per seed, one value per epoch) with
    a band of ± one standard deviation. Epochs that are NaN (not measured) are left out."""
    figure = Figure(figsize=(7.0, 4.5))
    axes = figure.add_subplot()
    for label, per_seed in curves.items():
        values = np.asarray(per_seed, dtype=float)
        epochs = np.arange(1, values.shape[1] + 1)
        measured = np.isfinite(values).all(0)
        values, epochs = values[:, measured], epochs[measured]
        mean, std = values.mean(0), values.std(0, ddof=1) if len(values) > 1 else 0 * values[0]
        axes.plot(epochs, mean, marker="." if len(epochs) < 30 else None,
                  label=f"{label} (n={len(values)})")
        axes.fill_between(epochs, mean - std, mean + std, alpha=0.2)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("epoch")
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    axes.set_title(title)
    return save_figure(figure, out_path, header)


def routing_heatmap(routing: dict[str, np.ndarray], classes: Sequence[str],
                    out_path: str | os.PathLike, header: ReportHeader, title: str) -> Path:
    """Per gate, the mean gate weight [classes, experts] each class sends to each expert."""
    figure = Figure(figsize=(3.2 * len(routing) + 1.5, 0.35 * len(classes) + 1.8))
    axes = figure.subplots(1, len(routing), squeeze=False)[0]
    for ax, (gate, weights) in zip(axes, routing.items(), strict=True):
        image = ax.imshow(weights, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(weights.shape[1]), [str(e) for e in range(weights.shape[1])])
        ax.set_yticks(range(len(classes)), [_short(c) for c in classes], fontsize=7)
        ax.set_xlabel("expert")
        ax.set_title(f"{gate} gate", fontsize=9)
    figure.colorbar(image, ax=axes[-1], label="mean gate weight")
    figure.suptitle(title)
    return save_figure(figure, out_path, header)


def boxes_grid(images: np.ndarray, true_boxes: np.ndarray, predicted: np.ndarray | None,
               out_path: str | os.PathLike, header: ReportHeader, title: str) -> Path:
    """uint8 images [N, 3, S, S] with their true (green) and predicted (red) boxes, given as
    x1 y1 x2 y2 in [0, 1]."""
    figure = Figure(figsize=(1.4 * len(images) + 0.4, 1.9))
    axes = figure.subplots(1, len(images), squeeze=False)[0]
    size = images.shape[-1]
    for i, ax in enumerate(axes):
        ax.imshow(np.transpose(images[i], (1, 2, 0)))
        ax.set_axis_off()
        for boxes, colour in ((true_boxes, "#2ca02c"), (predicted, "#d62728")):
            if boxes is not None:
                x1, y1, x2, y2 = boxes[i] * size
                ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False,
                                       edgecolor=colour, linewidth=1.2))
    figure.suptitle(title, fontsize=9)
    return save_figure(figure, out_path, header)

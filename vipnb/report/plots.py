"""Report plots: per-class accuracy, confusion heatmap, learning curves.

Figures are built on `matplotlib.figure.Figure` and rendered by Agg, never through pyplot, so
they work headless, leave a notebook's inline backend alone and hold no global state. Each PNG
carries the report header in its footer (short form) and in its PNG text chunks (all fields).
Notebooks show the result with `IPython.display.Image(path)`.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from vipnb.atomic import atomic_file
from vipnb.errors import VipnbError
from vipnb.report.csv_file import write_csv
from vipnb.report.header import ReportHeader

#: Above this many classes, bars become unreadable: plot the sorted distribution instead.
MAX_LABELLED_CLASSES = 60
HARD_COLOUR = "#d62728"


def per_class_accuracy_plot(
    per_class: dict[str, np.ndarray] | np.ndarray,
    class_names: Sequence[str],
    out_path: str | os.PathLike,
    header: ReportHeader,
    threshold: float = 0.5,
    title: str | None = None,
) -> Path:
    """Per-class accuracy (fractions in [0, 1]); several series side by side on one axes.
    The values of every class are also written as a CSV beside the PNG (same stem).

    Up to MAX_LABELLED_CLASSES classes: grouped bars, hard classes (below `threshold`) outlined
    and their labels in red. More classes: each series sorted, plus a histogram.
    """
    series = _as_series(per_class, len(class_names))
    write_csv(Path(out_path).with_suffix(".csv"), ["class_index", "class_name", *series],
              [{"class_index": i, "class_name": name,
                **{label: f"{values[i]:.4f}" for label, values in series.items()}}
               for i, name in enumerate(class_names)])
    if len(class_names) <= MAX_LABELLED_CLASSES:
        figure = _per_class_bars(series, class_names, threshold)
    else:
        figure = _per_class_distribution(series, threshold)
    figure.suptitle(title or "Per-class accuracy")
    return save_figure(figure, out_path, header)


def confusion_heatmap(
    confusion: np.ndarray,
    class_names: Sequence[str],
    out_path: str | os.PathLike,
    header: ReportHeader,
    normalize: bool = True,
) -> Path:
    """Confusion matrix (rows true, columns predicted), row-normalised; annotated up to 20
    classes. The matrix as given is also written as a CSV beside the PNG (same stem)."""
    import seaborn as sns

    confusion = np.asarray(confusion, dtype=float)
    n = len(class_names)
    if confusion.shape != (n, n):
        raise VipnbError(
            f"confusion matrix has shape {confusion.shape} but there are {n} class names; "
            "pass a square matrix with one row and column per class."
        )
    write_csv(Path(out_path).with_suffix(".csv"), ["true_class", *class_names],
              [{"true_class": name, **{c: f"{v:g}" for c, v in zip(class_names, row, strict=True)}}
               for name, row in zip(class_names, confusion, strict=True)])
    if normalize:
        totals = confusion.sum(axis=1, keepdims=True)
        confusion = np.divide(confusion, totals, out=np.zeros_like(confusion), where=totals > 0)
    side = min(max(4.0, 0.45 * n + 2.0), 16.0)
    figure = Figure(figsize=(side + 1.5, side))
    axes = figure.add_subplot()
    labelled = n <= MAX_LABELLED_CLASSES
    sns.heatmap(
        confusion, ax=axes, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None,
        annot=n <= 20, fmt=".2f" if normalize else ".0f", annot_kws={"fontsize": 7},
        xticklabels=[_short(c) for c in class_names] if labelled else False,
        yticklabels=[_short(c) for c in class_names] if labelled else False,
        square=True, cbar_kws={"label": "fraction of true class" if normalize else "count"},
    )
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title("Confusion matrix" + (" (row-normalised)" if normalize else ""))
    return save_figure(figure, out_path, header)


def learning_curves_plot(
    curves: dict[str, list[dict]],
    out_path: str | os.PathLike,
    header: ReportHeader,
    metric: str = "val_top1",
) -> Path:
    """One line per run of `metric` against epoch, from metrics.jsonl records."""
    figure = Figure(figsize=(7.0, 4.5))
    axes = figure.add_subplot()
    plotted = 0
    for run_name, records in curves.items():
        points = [(record.get("epoch", index), record[metric])
                  for index, record in enumerate(records) if record.get(metric) is not None]
        if points:
            epochs, values = zip(*points, strict=True)
            axes.plot(epochs, values, marker="o" if len(points) < 30 else None, label=run_name)
            plotted += 1
    if plotted == 0:
        available = sorted({key for records in curves.values() for r in records for key in r})
        raise VipnbError(
            f"no run has the metric {metric!r}; the records hold {', '.join(available) or 'nothing'}."
            " Pass one of those as metric=."
        )
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("epoch")
    axes.set_ylabel(metric)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    axes.set_title(f"Learning curves: {metric}")
    return save_figure(figure, out_path, header)


def _as_series(per_class: dict[str, np.ndarray] | np.ndarray, n_classes: int) -> dict:
    series = per_class if isinstance(per_class, dict) else {"accuracy": per_class}
    series = {name: np.asarray(values, dtype=float) for name, values in series.items()}
    for name, values in series.items():
        if values.shape != (n_classes,):
            raise VipnbError(f"per-class series {name!r} has shape {values.shape}, expected "
                             f"({n_classes},): one accuracy per class name.")
        if values.size and (values.min() < 0.0 or values.max() > 1.0):
            raise VipnbError(f"per-class series {name!r} runs from {values.min():g} to "
                             f"{values.max():g}; pass fractions in [0, 1] (divide percent by 100).")
    return series


def _per_class_bars(series: dict, class_names: Sequence[str], threshold: float) -> Figure:
    n = len(class_names)
    figure = Figure(figsize=(max(6.0, 0.28 * n * len(series) + 2.0), 4.8))
    axes = figure.add_subplot()
    positions = np.arange(n)
    width = 0.8 / len(series)
    legend_handles = []
    for offset, (name, values) in enumerate(series.items()):
        hard = values < threshold
        bars = axes.bar(positions - 0.4 + width * (offset + 0.5), values, width)
        legend_handles.append(Patch(facecolor=bars.patches[0].get_facecolor(), label=name))
        for bar, is_hard in zip(bars, hard, strict=True):
            if is_hard:
                bar.set_edgecolor(HARD_COLOUR)
                bar.set_linewidth(1.5)
                bar.set_hatch("//")
    threshold_line = axes.axhline(threshold, color="0.3", linestyle="--", linewidth=1,
                                  label=f"threshold {threshold:g}")
    legend_handles += [threshold_line, Patch(facecolor="white", edgecolor=HARD_COLOUR, hatch="//",
                                             label="below threshold")]
    axes.set_xticks(positions, [_short(c) for c in class_names], rotation=45 if n > 8 else 0,
                    ha="right" if n > 8 else "center", fontsize=8)
    # A class is hard when the last series (the newest model) is below the threshold.
    last_hard = list(series.values())[-1] < threshold
    for label, is_hard in zip(axes.get_xticklabels(), last_hard, strict=True):
        if is_hard:
            label.set_color(HARD_COLOUR)
    # Headroom above 1.0 keeps the legend off the bars.
    axes.set_ylim(0.0, 1.18)
    axes.set_yticks(np.linspace(0.0, 1.0, 6))
    axes.set_ylabel("accuracy")
    axes.legend(handles=legend_handles, fontsize=8, loc="upper center",
                ncols=len(legend_handles), frameon=False)
    return figure


def _per_class_distribution(series: dict, threshold: float) -> Figure:
    figure = Figure(figsize=(11.0, 4.5))
    sorted_axes, histogram_axes = figure.subplots(1, 2, gridspec_kw={"width_ratios": [2, 1]})
    bins = np.linspace(0.0, 1.0, 21)
    for name, values in series.items():
        n_hard = int((values < threshold).sum())
        label = f"{name} ({n_hard} below {threshold:g})"
        sorted_axes.plot(np.sort(values)[::-1], label=label)
        histogram_axes.hist(values, bins=bins, alpha=0.5, label=name)
    for axes in (sorted_axes, histogram_axes):
        axes.grid(alpha=0.3)
    sorted_axes.axhline(threshold, color=HARD_COLOUR, linestyle="--", linewidth=1)
    sorted_axes.set_xticks([])
    sorted_axes.set_xlabel("classes, sorted by accuracy")
    sorted_axes.set_ylabel("accuracy")
    sorted_axes.set_ylim(0.0, 1.02)
    sorted_axes.legend(fontsize=8)
    histogram_axes.axvline(threshold, color=HARD_COLOUR, linestyle="--", linewidth=1)
    histogram_axes.set_xlabel("accuracy")
    histogram_axes.set_ylabel("classes")
    return figure


def save_figure(figure: Figure, out_path: str | os.PathLike, header: ReportHeader) -> Path:
    """Add the footer, write the PNG atomically with the header as metadata, free the figure."""
    out_path = Path(out_path)
    footer = textwrap.fill(header.as_footer(), width=int(figure.get_figwidth() * 16))
    figure.text(0.01, 0.005, footer, fontsize=6, color="0.4", va="bottom", ha="left")
    figure.tight_layout(rect=(0.0, 0.04 + 0.015 * footer.count("\n"), 1.0, 1.0))
    metadata = {"Software": f"vipnb {header.vipnb_version}", "Comment": header.as_text()}
    metadata.update({key: str(value) for key, value in header.as_dict().items()
                     if key != "extra"})
    try:
        with atomic_file(out_path, "wb") as stream:
            figure.savefig(stream, format="png", dpi=120, metadata=metadata)
    finally:
        figure.clear()
    return out_path


def _short(name: str, limit: int = 18) -> str:
    name = str(name)
    return name if len(name) <= limit else name[: limit - 1] + "…"


def image_grid(images, out_path: str | os.PathLike, header: ReportHeader,
               per_class: int = 5) -> Path:
    """The first `per_class` images of every class of an `ImageList`, one row per class."""
    from PIL import Image as PILImage

    rows = []
    for label, name in enumerate(images.classes):
        members = [p for p, y in zip(images.paths, images.labels, strict=True) if y == label]
        rows.append((name, members[:per_class]))
    figure = Figure(figsize=(1.1 * per_class + 1.5, 1.1 * len(rows) + 0.4))
    axes = figure.subplots(len(rows), per_class, squeeze=False)
    for (name, members), row_axes in zip(rows, axes, strict=True):
        for i, ax in enumerate(row_axes):
            ax.set_axis_off()
            if i < len(members):
                with PILImage.open(members[i]) as image:
                    ax.imshow(np.asarray(image.convert("RGB")))
        row_axes[0].text(-0.1, 0.5, _short(name), transform=row_axes[0].transAxes,
                         ha="right", va="center", fontsize=8)
    return save_figure(figure, out_path, header)

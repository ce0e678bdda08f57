"""Class-hierarchy plot: a `Hierarchy` (vipnb.losses.tree) drawn as a horizontal dendrogram,
leaves (class names) on the left, the root on the right, elbow connectors as in scipy's
`dendrogram` (drawn by hand: scipy is not a dependency)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure

from vipnb.errors import VipnbError
from vipnb.losses.tree import Hierarchy
from vipnb.report.header import ReportHeader
from vipnb.report.plots import _short, save_figure

#: Above this many classes the leaf labels would overlap: draw the tree without them.
MAX_LABELLED_LEAVES = 200
LINE_COLOUR = "#1f77b4"
NAME_COLOUR = "#d62728"


def dendrogram_layout(hierarchy: Hierarchy) -> tuple[list[int], dict[int, tuple[float, float]]]:
    """Leaf order and node positions.

    Leaves come in in-order (left-to-right traversal) order, so branches never cross; leaf k
    sits at (0, k). An inner node's x is its height (1 + its tallest child's height: depth from
    the leaves, which reads better than merge order when a 1000-class tree has 999 merges) and
    its y the midpoint of its first and last child.
    """
    leaf_order: list[int] = []
    xy: dict[int, tuple[float, float]] = {}
    # Iterative post-order: a degenerate (chain) tree of 1000 classes would overflow recursion.
    stack: list[tuple[int, bool]] = [(hierarchy.root, False)]
    while stack:
        node, expanded = stack.pop()
        if node < hierarchy.num_classes:
            xy[node] = (0.0, float(len(leaf_order)))
            leaf_order.append(node)
        elif expanded:
            kids = hierarchy.children[node]
            height = 1.0 + max(xy[k][0] for k in kids)
            xy[node] = (height, (xy[kids[0]][1] + xy[kids[-1]][1]) / 2.0)
        else:
            stack.append((node, True))
            stack.extend((k, False) for k in reversed(hierarchy.children[node]))
    return leaf_order, xy


def hierarchy_plot(
    hierarchy: Hierarchy,
    class_names: Sequence[str],
    out_path: str | os.PathLike,
    header: ReportHeader,
    node_names: Mapping[int, str] | None = None,
    title: str | None = None,
) -> Path:
    """Draw `hierarchy` as a dendrogram; `node_names` (inner node id -> name, e.g. from
    `wordnet_node_names`) are written next to their nodes."""
    n = hierarchy.num_classes
    if len(class_names) != n:
        raise VipnbError(f"hierarchy_plot got {len(class_names)} class names for a hierarchy of "
                         f"{n} classes; pass one name per class, in class-index order.")
    node_names = dict(node_names or {})
    unknown = sorted(set(node_names) - set(hierarchy.children))
    if unknown:
        raise VipnbError(f"node_names has ids {unknown[:10]} that are not inner nodes of the "
                         f"hierarchy; use ids from hierarchy.children.")
    leaf_order, xy = dendrogram_layout(hierarchy)
    labelled = n <= MAX_LABELLED_LEAVES
    # ~0.2 in per leaf keeps 8-pt labels apart; unlabelled big trees only need a readable shape.
    height = max(3.0, 0.2 * n + 1.0) if labelled else 20.0
    top = max(x for x, _ in xy.values())
    figure = Figure(figsize=(8.0 + (2.0 if node_names else 0.0), height))
    axes = figure.add_subplot()
    for node, kids in hierarchy.children.items():
        x, _ = xy[node]
        ys = [xy[k][1] for k in kids]
        axes.plot([x, x], [min(ys), max(ys)], color=LINE_COLOUR, linewidth=1)
        for k in kids:
            axes.plot([xy[k][0], x], [xy[k][1]] * 2, color=LINE_COLOUR, linewidth=1)
    # On big trees only the names of big subtrees fit; small ones would pile up on the left.
    min_leaves = 1 if labelled else max(2, n // 40)
    for node, name in node_names.items():
        if len(hierarchy.leaves[node]) < min_leaves:
            continue
        x, y = xy[node]
        axes.plot([x], [y], "o", color=NAME_COLOUR, markersize=3)
        axes.annotate(_short(name, 24), (x, y), xytext=(3, 2), textcoords="offset points",
                      fontsize=7, color=NAME_COLOUR, ha="left", va="bottom")
    if labelled:
        axes.set_yticks(range(n), [_short(class_names[c], 28) for c in leaf_order], fontsize=8)
    else:
        axes.set_yticks([])
        axes.set_ylabel(f"{n} classes (in tree order)")
    axes.set_ylim(n - 0.5, -0.5)  # first leaf at the top, reading order
    # Room right of the root for its name.
    axes.set_xlim(-0.2, top + (1.5 if node_names else 0.3))
    axes.set_xticks([])
    axes.set_xlabel("levels above the leaves")
    for side in ("top", "right", "bottom"):
        axes.spines[side].set_visible(False)
    axes.set_title(title or f"Class hierarchy ({n} classes)")
    return save_figure(figure, out_path, header)

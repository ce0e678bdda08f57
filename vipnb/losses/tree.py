"""Tree supervision loss over an induced class hierarchy (VIPF paper eq. 7; Wan et al., ICLR
2021, "NBDT: Neural-Backed Decision Trees", arXiv 2004.00221).

Hierarchy (NBDT's "induced hierarchy"): the rows w_c of the trained classifier's weight are
clustered agglomeratively with Ward linkage; leaves are classes, each inner node the union of
its two children. NBDT's released code (nbdt/graph.py, `build_induced_graph`) clusters the raw
fc rows with sklearn's Ward/Euclidean AgglomerativeClustering, so that is our default;
`normalize=True` clusters the L2-normalised rows (directions only) instead. Ward linkage is
computed here in numpy (scipy is not a dependency): Lance–Williams updates of squared
Euclidean distances, i.e. Ward's minimum-variance merges as in
scipy.cluster.hierarchy.linkage(method="ward") (tests check them against a brute-force search).

Loss (NBDT's soft inference + "tree supervision loss"): an inner node's representative is
the mean of its leaves' weight vectors; for a linear classifier ⟨mean_c w_c, x⟩ = mean_c ⟨w_c, x⟩,
so a node's logit is the mean of its leaves' logits (with a bias, this is the averaged
classifier, bias included). A softmax over a node's children gives p(child | node); a class's
path probability is the product along its root-to-leaf path; the loss is the cross-entropy
−Σ_c t_c log p_path(c), averaged over the batch. NBDT trains with CE + ω·this term; VIPF's eq. 3
weights it by γ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from vipnb.errors import VipnbError
from vipnb.losses._reduction import check_reduction, compute_dtype, reduce


@dataclass
class Hierarchy:
    """A rooted tree over classes 0..C−1 (nodes 0..C−1 are the leaves).

    `children[n]` lists inner node n's children; `leaves[n]` is the sorted tuple of classes under
    node n (every node); `paths[c]` is class c's root-to-leaf list of (node, child index)
    decisions. Inner nodes may have any number (≥ 2) of children; `induce_hierarchy` gives
    binary ones.
    """

    num_classes: int
    root: int
    children: dict[int, tuple[int, ...]]
    leaves: dict[int, tuple[int, ...]] = field(init=False)
    paths: list[list[tuple[int, int]]] = field(init=False)

    def __post_init__(self) -> None:
        self.leaves = {c: (c,) for c in range(self.num_classes)}
        self.paths = [[] for _ in range(self.num_classes)]
        seen: set[int] = set()
        order: list[int] = []  # inner nodes, parents before children
        stack: list[tuple[int, list[tuple[int, int]]]] = [(self.root, [])]
        while stack:
            node, path = stack.pop()
            if node < self.num_classes:
                if node in seen:
                    raise VipnbError(f"class {node} appears twice in the hierarchy")
                seen.add(node)
                self.paths[node] = path
                continue
            if len(self.children.get(node, ())) < 2:
                raise VipnbError(f"inner node {node} needs at least 2 children")
            order.append(node)
            for k, child in enumerate(self.children[node]):
                stack.append((child, path + [(node, k)]))
        if len(seen) != self.num_classes:
            missing = sorted(set(range(self.num_classes)) - seen)
            raise VipnbError(f"hierarchy misses classes {missing[:10]}; every class needs a leaf")
        for node in reversed(order):
            self.leaves[node] = tuple(sorted(c for ch in self.children[node]
                                             for c in self.leaves[ch]))
        self._cache: dict = {}

    @classmethod
    def from_nested(cls, nested: list) -> Hierarchy:
        """Build from nested lists of class indices, e.g. [[0, 1], [2, [3, 4]]] (a hand-made,
        semantic hierarchy such as the VIPF paper's WordNet-like superclasses)."""
        flat: list[int] = []

        def walk(item) -> None:
            if isinstance(item, (list, tuple)):
                for sub in item:
                    walk(sub)
            else:
                flat.append(int(item))
        walk(nested)
        num_classes = len(flat)
        if sorted(flat) != list(range(num_classes)):
            raise VipnbError(f"nested hierarchy must hold each of 0..{num_classes - 1} once, "
                             f"got {sorted(flat)[:20]}")
        children: dict[int, tuple[int, ...]] = {}
        next_id = [num_classes]

        def build(item) -> int:
            if not isinstance(item, (list, tuple)):
                return int(item)
            kids = tuple(build(sub) for sub in item)
            if len(kids) == 1:
                return kids[0]
            node, next_id[0] = next_id[0], next_id[0] + 1
            children[node] = kids
            return node
        root = build(nested)
        return cls(num_classes, root, children)

    def smallest_subtree(self, classes: Sequence[int]) -> tuple[int, ...]:
        """The classes under the smallest subtree that holds every one of `classes`."""
        wanted = set(classes)
        if not wanted or not wanted <= set(range(self.num_classes)):
            raise VipnbError(f"smallest_subtree needs classes among 0..{self.num_classes - 1}, "
                             f"got {sorted(wanted)}")
        return min((leaves for leaves in self.leaves.values() if wanted <= set(leaves)), key=len)

    def to_nested(self, node: int | None = None) -> int | list:
        """The tree as nested lists of class indices (leaves are ints)."""
        node = self.root if node is None else node
        if node < self.num_classes:
            return node
        return [self.to_nested(ch) for ch in self.children[node]]

    def describe(self, class_names: Sequence[str] | None = None) -> str:
        """An indented text tree; inner nodes show their id and leaf count."""
        if class_names is not None and len(class_names) != self.num_classes:
            raise VipnbError(f"describe got {len(class_names)} class names for "
                             f"{self.num_classes} classes")
        lines: list[str] = []

        def walk(node: int, depth: int) -> None:
            pad = "  " * depth
            if node < self.num_classes:
                lines.append(pad + (class_names[node] if class_names else str(node)))
                return
            lines.append(f"{pad}node {node} ({len(self.leaves[node])} classes)")
            for ch in self.children[node]:
                walk(ch, depth + 1)
        walk(self.root, 0)
        return "\n".join(lines)

    def _tensors(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        """Cached index tensors: leaf-mean matrix [nodes, C], padded children [I, K], mask,
        and the path matrix [C, I·K] (1 where class c's path takes child k of inner node i)."""
        if device in self._cache:
            return self._cache[device]
        inner = sorted(self.children)
        n_nodes = max([self.root, *self.children.keys(), self.num_classes - 1]) + 1
        mean = np.zeros((n_nodes, self.num_classes), dtype=np.float32)
        for node, lv in self.leaves.items():
            mean[node, list(lv)] = 1.0 / len(lv)
        width = max(len(self.children[n]) for n in inner)
        kids = np.zeros((len(inner), width), dtype=np.int64)
        mask = np.zeros((len(inner), width), dtype=bool)
        row = {n: i for i, n in enumerate(inner)}
        for n in inner:
            ch = self.children[n]
            kids[row[n], :len(ch)] = ch
            mask[row[n], :len(ch)] = True
        path = np.zeros((self.num_classes, len(inner) * width), dtype=np.float32)
        for c, steps in enumerate(self.paths):
            for node, k in steps:
                path[c, row[node] * width + k] = 1.0
        out = tuple(torch.as_tensor(a, device=device) for a in (mean, kids, mask, path))
        self._cache[device] = out
        return out


def _ward_merges(points: np.ndarray) -> list[tuple[int, int]]:
    """Ward agglomeration: the pairs of cluster ids merged, in order (scipy's numbering:
    leaves 0..n−1, the k-th merge makes cluster n + k)."""
    n = points.shape[0]
    sq = (points * points).sum(1)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2 * points @ points.T, 0.0)  # squared Euclid.
    np.fill_diagonal(dist, np.inf)
    size = np.ones(n)
    ids = np.arange(n)
    active = np.ones(n, dtype=bool)
    merges = []
    for step in range(n - 1):
        flat = int(np.argmin(dist))
        i, j = divmod(flat, n)
        if ids[i] > ids[j]:
            i, j = j, i
        merges.append((int(ids[i]), int(ids[j])))
        ni, nj, nk = size[i], size[j], size
        # Lance–Williams for Ward on squared distances; the merged cluster takes slot i.
        new = ((ni + nk) * dist[i] + (nj + nk) * dist[j] - nk * dist[i, j]) / (ni + nj + nk)
        active[j] = False
        new[~active] = np.inf
        new[i] = np.inf
        dist[i, :] = new
        dist[:, i] = new
        dist[j, :] = np.inf
        dist[:, j] = np.inf
        size[i] = ni + nj
        ids[i] = n + step
    return merges


def induce_hierarchy(classifier_weight: torch.Tensor, normalize: bool = False) -> Hierarchy:
    """NBDT's induced hierarchy: Ward clustering of the classifier's weight rows [C, D]."""
    if classifier_weight.dim() != 2 or classifier_weight.shape[0] < 2:
        raise VipnbError(f"classifier_weight must be [C, D] with C ≥ 2 classes, got shape "
                         f"{tuple(classifier_weight.shape)}; pass the final linear layer's weight")
    w = classifier_weight.detach().double().cpu()
    if normalize:
        w = F.normalize(w, dim=1)
    points = w.numpy()
    if not np.isfinite(points).all():
        raise VipnbError("classifier_weight holds NaN or inf; induce the hierarchy from a "
                         "trained, finite classifier")
    n = points.shape[0]
    children = {n + k: pair for k, pair in enumerate(_ward_merges(points))}
    return Hierarchy(n, 2 * n - 2, children)


def path_log_probs(logits: torch.Tensor, hierarchy: Hierarchy) -> torch.Tensor:
    """log p_path(c) for every class [B, C]: Σ over c's path of log softmax over the node's
    children, a child's logit being the mean of its leaves' logits (NBDT soft inference)."""
    if logits.dim() != 2 or logits.shape[1] != hierarchy.num_classes:
        raise VipnbError(f"logits must be [B, {hierarchy.num_classes}] for this hierarchy, got "
                         f"shape {tuple(logits.shape)}")
    x = logits.to(compute_dtype(logits))
    if not hierarchy.children:
        return torch.zeros_like(x)
    mean, kids, mask, path = hierarchy._tensors(x.device)
    mean, path = mean.to(x.dtype), path.to(x.dtype)  # float64 logits: gradcheck
    node_logits = x @ mean.t()  # [B, nodes]
    child = node_logits[:, kids].masked_fill(~mask, float("-inf"))  # [B, I, K]
    log_p = F.log_softmax(child, dim=-1).masked_fill(~mask, 0.0)
    return log_p.flatten(1) @ path.t()


def tree_supervision_loss(logits: torch.Tensor, targets: torch.Tensor,
                          hierarchy: Hierarchy, reduction: str = "mean") -> torch.Tensor:
    """−Σ_c t_c log p_path(c) per sample (VIPF eq. 7, NBDT soft tree supervision loss);
    `targets` are class indices [B] or a probability matrix [B, C]; `reduction`: "mean" |
    "sum" over the batch, or "none". Computed in float32 at least."""
    check_reduction(reduction)
    log_p = path_log_probs(logits, hierarchy)
    if targets.dim() == 1:
        return reduce(-log_p.gather(1, targets.long().view(-1, 1)).squeeze(1), reduction)
    if targets.shape != log_p.shape:
        raise VipnbError(f"soft targets must be {tuple(log_p.shape)}, got {tuple(targets.shape)}")
    return reduce(-(targets.to(log_p.dtype) * log_p).sum(1), reduction)

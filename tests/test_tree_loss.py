"""Induced hierarchy and tree supervision loss (VIPF eq. 7, NBDT)."""

import math

import pytest
import torch
import torch.nn.functional as F

from vipnb.errors import VipnbError
from vipnb.losses.tree import Hierarchy, induce_hierarchy, path_log_probs, tree_supervision_loss


def _planted_weight(seed=0):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.zeros(8), torch.zeros(8)
    a[0], b[1] = 1.0, 1.0
    rows = [a + 0.05 * torch.randn(8, generator=g) for _ in range(3)]
    rows += [b + 0.05 * torch.randn(8, generator=g) for _ in range(3)]
    return torch.stack(rows)


def test_first_split_separates_planted_groups():
    h = induce_hierarchy(_planted_weight())
    split = {h.leaves[ch] for ch in h.children[h.root]}
    assert split == {(0, 1, 2), (3, 4, 5)}
    nested = h.to_nested()
    assert len(nested) == 2
    assert "node" in h.describe() and "cat" in h.describe([f"cat{i}" for i in range(6)])


def _check_consistent(h):
    assert h.leaves[h.root] == tuple(range(h.num_classes))
    for c, path in enumerate(h.paths):
        assert path[0][0] == h.root
        for (node, k), nxt in zip(path, path[1:] + [(c, None)], strict=True):
            assert h.children[node][k] == nxt[0]
            assert c in h.leaves[node]
    for node, kids in h.children.items():
        assert sorted(sum((h.leaves[k] for k in kids), ())) == list(h.leaves[node])
    leaves = [x for x in _flatten(h.to_nested())]
    assert sorted(leaves) == list(range(h.num_classes))


def _flatten(item):
    if isinstance(item, list):
        for sub in item:
            yield from _flatten(sub)
    else:
        yield item


@pytest.mark.parametrize("num_classes", [2, 3, 7, 40])
def test_paths_are_consistent(num_classes):
    w = torch.randn(num_classes, 5, generator=torch.Generator().manual_seed(num_classes))
    h = induce_hierarchy(w)
    assert len(h.children) == num_classes - 1
    _check_consistent(h)


def test_ward_matches_known_merge_order():
    # 1-D points 0, 1, 10, 12: merge {0,1} (d²=1), then {10,12} (d²=4), then the two pairs.
    h = induce_hierarchy(torch.tensor([[0.0], [1.0], [10.0], [12.0]]))
    assert h.children[4] == (0, 1) and h.children[5] == (2, 3) and h.children[6] == (4, 5)


def test_path_probabilities_sum_to_one():
    h = induce_hierarchy(torch.randn(9, 4, generator=torch.Generator().manual_seed(1)))
    logits = torch.randn(5, 9, generator=torch.Generator().manual_seed(2))
    probs = path_log_probs(logits, h).exp()
    assert torch.allclose(probs.sum(1), torch.ones(5), atol=1e-5)


def test_hand_made_nary_tree_probabilities():
    h = Hierarchy.from_nested([[0, 1], 2, [3, 4, 5]])
    _check_consistent(h)
    logits = torch.tensor([[0.0, 2.0, 1.0, 3.0, 3.0, 0.0]])
    # Root children logits: mean(0,2)=1, 1, mean(3,3,0)=2.
    root = F.softmax(torch.tensor([1.0, 1.0, 2.0]), 0)
    p1 = root[0] * F.softmax(torch.tensor([0.0, 2.0]), 0)[1]
    assert path_log_probs(logits, h)[0, 1].exp().item() == pytest.approx(p1.item(), abs=1e-6)
    assert path_log_probs(logits, h).exp().sum().item() == pytest.approx(1.0, abs=1e-6)


def test_two_class_tree_loss_is_cross_entropy():
    h = induce_hierarchy(torch.randn(2, 3))
    logits = torch.randn(6, 2, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    assert tree_supervision_loss(logits, y, h).item() == pytest.approx(
        F.cross_entropy(logits, y).item(), abs=1e-6)


def test_soft_targets_and_indices_agree_and_gradients_flow():
    h = induce_hierarchy(torch.randn(6, 4, generator=torch.Generator().manual_seed(4)))
    logits = torch.randn(3, 6, generator=torch.Generator().manual_seed(5), requires_grad=True)
    y = torch.tensor([0, 4, 5])
    hard = tree_supervision_loss(logits, y, h)
    soft = tree_supervision_loss(logits, F.one_hot(y, 6).float(), h)
    assert hard.item() == pytest.approx(soft.item(), abs=1e-6)
    mixed = tree_supervision_loss(logits, torch.full((3, 6), 1 / 6), h)
    assert math.isfinite(mixed.item())
    hard.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_user_errors():
    with pytest.raises(VipnbError):
        induce_hierarchy(torch.randn(1, 4))
    h = induce_hierarchy(torch.randn(4, 4))
    with pytest.raises(VipnbError):
        tree_supervision_loss(torch.randn(2, 5), torch.tensor([0, 1]), h)
    with pytest.raises(VipnbError):
        Hierarchy.from_nested([[0, 1], [1, 2]])


def _brute_force_ward(points):
    """Merge the pair whose union raises the within-cluster sum of squares least."""
    clusters = [[i] for i in range(len(points))]
    merged = []
    while len(clusters) > 1:
        best = None
        for i in range(len(clusters)):
            for j in range(i + 1, len(clusters)):
                a, b = points[clusters[i]], points[clusters[j]]
                cost = len(a) * len(b) / (len(a) + len(b)) * float(
                    ((a.mean(0) - b.mean(0)) ** 2).sum())
                if best is None or cost < best[0]:
                    best = (cost, i, j)
        _, i, j = best
        union = sorted(clusters[i] + clusters[j])
        merged.append(tuple(union))
        clusters = [c for k, c in enumerate(clusters) if k not in (i, j)] + [union]
    return merged


def test_ward_agrees_with_the_sum_of_squares_definition():
    points = torch.randn(12, 3, generator=torch.Generator().manual_seed(7)).double()
    h = induce_hierarchy(points, normalize=False)
    ours = [h.leaves[n] for n in sorted(h.children)]
    assert ours == _brute_force_ward(points)


def test_gradients_are_finite_on_an_nary_tree():
    h = Hierarchy.from_nested([[0, 1], 2, [3, 4, 5]])
    logits = torch.randn(4, 6, generator=torch.Generator().manual_seed(8), requires_grad=True)
    tree_supervision_loss(logits, torch.tensor([0, 2, 3, 5]), h).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_normalize_clusters_directions():
    # Rows 0, 1 point along x (different lengths), rows 2, 3 along y: only directions group them.
    w = torch.tensor([[1.0, 0.0], [9.0, 0.5], [0.0, 1.0], [0.5, 9.0]])
    h = induce_hierarchy(w, normalize=True)
    assert {h.leaves[ch] for ch in h.children[h.root]} == {(0, 1), (2, 3)}
    raw = induce_hierarchy(w)  # raw rows: the two long rows 1 and 3 are far from the others
    assert {raw.leaves[ch] for ch in raw.children[raw.root]} != {(0, 1), (2, 3)}


def test_smallest_subtree_holds_exactly_the_classes_under_their_common_ancestor():
    tree = Hierarchy.from_nested([[0, [1, 2]], [3, [4, 5]]])
    assert tree.smallest_subtree([1, 2]) == (1, 2)
    assert tree.smallest_subtree([0, 2]) == (0, 1, 2)
    assert tree.smallest_subtree([2, 4]) == (0, 1, 2, 3, 4, 5)
    with pytest.raises(VipnbError, match="among 0..5"):
        tree.smallest_subtree([6])

"""Tests for the class-hierarchy dendrogram and its WordNet node names."""

from __future__ import annotations

import pytest
from PIL import Image

from vipnb.errors import VipnbError
from vipnb.losses.tree import Hierarchy
from vipnb.report.hierarchy_plot import dendrogram_layout, hierarchy_plot
from vipnb.report.wordnet_names import _load_wordnet, wordnet_node_names

NAMES = ["ant", "bee", "cat", "dog", "eel"]




@pytest.fixture
def planted() -> Hierarchy:
    # Leaves out of index order, so in-order traversal differs from sorting.
    return Hierarchy.from_nested([[3, 1], [2, [0, 4]]])


def test_layout_follows_in_order_traversal(planted):
    leaf_order, xy = dendrogram_layout(planted)
    assert leaf_order == [3, 1, 2, 0, 4]
    assert [xy[c] for c in leaf_order] == [(0.0, float(k)) for k in range(5)]
    # Each inner node sits right of its children, vertically between its first and last child.
    for node, kids in planted.children.items():
        assert xy[node][0] == 1.0 + max(xy[k][0] for k in kids)
        assert xy[node][1] == (xy[kids[0]][1] + xy[kids[-1]][1]) / 2
    assert xy[planted.root][0] == 3.0


def test_layout_of_a_deep_chain_does_not_recurse():
    # ((((0, 1), 2), 3) ...): built directly, since from_nested itself recurses.
    n = 1500
    children = {n: (0, 1), **{n + k: (n + k - 1, k + 1) for k in range(1, n - 1)}}
    leaf_order, xy = dendrogram_layout(Hierarchy(n, 2 * n - 2, children))
    assert leaf_order == list(range(n))
    assert xy[2 * n - 2][0] == n - 1


def test_hierarchy_plot_writes_png(tmp_path, header, planted):
    names = {planted.root: "animal", planted.children[planted.root][0]: "insect"}
    path = hierarchy_plot(planted, NAMES, tmp_path / "tree.png", header, node_names=names,
                          title="Planted")
    assert path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.text["commit"] == "abc1234"


def test_hierarchy_plot_rejects_wrong_class_names(tmp_path, header, planted):
    with pytest.raises(VipnbError, match="4 class names.*5 classes"):
        hierarchy_plot(planted, NAMES[:4], tmp_path / "tree.png", header)
    with pytest.raises(VipnbError, match="not inner nodes"):
        hierarchy_plot(planted, NAMES, tmp_path / "tree.png", header, node_names={0: "ant"})


def test_wordnet_names_none_for_non_wnids(planted):
    fashion = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"]
    assert wordnet_node_names(planted, fashion) is None
    with pytest.raises(VipnbError, match="2 wnids"):
        wordnet_node_names(planted, ["n02085620", "n02099601"])


def test_wordnet_names_dogs():
    pytest.importorskip("nltk")
    if _load_wordnet() is None:
        pytest.skip("no local WordNet (nltk data or /usr/share/wordnet)")
    # Chihuahua and golden retriever under one node, tench (a fish) beside them.
    tree = Hierarchy.from_nested([[0, 1], 2])
    names = wordnet_node_names(tree, ["n02085620", "n02099601", "n01440764"])
    dogs = tree.children[tree.root][0]
    assert names[dogs] in {"dog", "domestic dog", "canine", "canid"}
    assert set(names) == set(tree.children)

"""The semantic class hierarchy of VIPF §3.2 ("a hierarchical architecture is defined according
to the semantic relationship based on 1000 classes"; parents are "superclasses such as animal,
vehicle") built from WordNet, as NBDT's WordNet hierarchy (Wan et al., ICLR 2021,
arXiv 2004.00221; nbdt/graph.py `build_minimal_wordnet_graph`, then
`prune_single_successor_nodes`).

ImageNet classes are WordNet 3.0 noun synsets named by wnid: "n01440764" is the synset at byte
offset 01440764 of the database's `data.noun`. Each line of that file is, per wndb(5):

    synset_offset lex_filenum ss_type w_cnt word lex_id [word lex_id ...] p_cnt
        [pointer_symbol synset_offset pos source/target ...] | gloss

(w_cnt two hex digits, p_cnt three decimal digits; license lines start with two spaces). The
hypernym pointers are `@` (hypernym) and `@i` (instance hypernym). A class's path climbs one
hypernym at a time to the root, entity.n.01 (offset 00001740); where a synset has several
hypernyms the first is taken, as NBDT's tree does (`multi_path=False`): the first of nltk's
`Synset.hypernyms()`, which nltk sorts by synset name ("canine.n.02" before
"domestic_animal.n.01" for dog), so here the hypernym whose first word, lower-cased, sorts first
(two hypernyms with the same first word, never met on an ImageNet class's path, keep the
file's order instead of nltk's sense number). A synset with no `@` climbs its first `@i` (NBDT
reads `@` only and would leave an instance synset without a parent). The paths are merged into
one tree, and chains of single-child inner nodes are collapsed, so every inner node is the
lowest common hypernym of its classes and has at least two children.

nltk is not needed: the database file is read directly (`NounDatabase`), a line at a time by
seeking to the offsets.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vipnb.errors import VipnbError
from vipnb.losses.tree import Hierarchy

WNID = re.compile(r"n(\d{8})")
HYPERNYM, INSTANCE_HYPERNYM = "@", "@i"


@dataclass(frozen=True)
class Synset:
    """One noun synset of `data.noun`: its words and its hypernym pointers in file order."""

    offset: int
    words: tuple[str, ...]
    hypernyms: tuple[int, ...]  # `@`
    instance_hypernyms: tuple[int, ...]  # `@i`

    @property
    def name(self) -> str:
        """The first word with spaces, as WordNet writes them with underscores."""
        return self.words[0].replace("_", " ")


def parse_synset_line(line: str) -> Synset:
    """One `data.noun` line (wndb(5)) → its offset, words and noun hypernym pointers."""
    fields = line.split(" | ", 1)[0].split()
    try:
        offset, count = int(fields[0]), int(fields[3], 16)
        words = tuple(fields[4:4 + 2 * count:2])
        at = 4 + 2 * count
        pointers = int(fields[at])
        hypernyms: dict[str, list[int]] = {HYPERNYM: [], INSTANCE_HYPERNYM: []}
        for k in range(pointers):
            symbol, target, pos = fields[at + 1 + 4 * k: at + 4 + 4 * k]
            if symbol in hypernyms and pos == "n":
                hypernyms[symbol].append(int(target))
    except (IndexError, ValueError):
        raise VipnbError(f"not a WordNet data.noun synset line (wndb(5)): {line[:80]!r}") from None
    if len(words) != count:
        raise VipnbError(f"not a WordNet data.noun synset line (wndb(5)): {line[:80]!r}")
    return Synset(offset, words, tuple(hypernyms[HYPERNYM]),
                  tuple(hypernyms[INSTANCE_HYPERNYM]))


class NounDatabase:
    """The noun synsets of a WordNet 3.0 database directory, read from `data.noun` on demand
    (a synset's offset is its line's byte offset in the file, wndb(5))."""

    def __init__(self, directory: str | Path):
        self.file = Path(directory).expanduser() / "data.noun"
        if not self.file.is_file():
            raise VipnbError(f"{self.file} does not exist: `wordnet_dir` must be a WordNet 3.0 "
                             "database directory holding data.noun (Debian/Ubuntu: apt-get "
                             "install wordnet-base, which puts it in /usr/share/wordnet)")
        self._synsets: dict[int, Synset] = {}

    def synset(self, offset: int) -> Synset:
        if offset not in self._synsets:
            with open(self.file, "rb") as f:
                f.seek(offset)
                line = f.readline().decode("utf-8", errors="replace")
            if not line.startswith(f"{offset:08d} "):
                raise VipnbError(f"n{offset:08d} is not a noun synset of {self.file}: no synset "
                                 "line starts at that offset. ImageNet wnids are WordNet 3.0 "
                                 "offsets; use a WordNet 3.0 database (Debian's wordnet-base)")
            self._synsets[offset] = parse_synset_line(line)
        return self._synsets[offset]

    def parent(self, offset: int) -> int | None:
        """The one hypernym a class's path climbs to (the module docstring's rule), or None
        at a root."""
        synset = self.synset(offset)
        candidates = synset.hypernyms or synset.instance_hypernyms
        if not candidates:
            return None
        # nltk's synset name starts with the lower-cased first word; sorted() is stable.
        return sorted(candidates, key=lambda h: self.synset(h).words[0].lower() + ".")[0]

    def path_to_root(self, offset: int) -> list[int]:
        """The synsets from `offset` up to its root, both included."""
        path = [offset]
        while (parent := self.parent(path[-1])) is not None:
            if parent in path:
                raise VipnbError(f"{self.file}: the hypernyms of n{offset:08d} go round in a "
                                 "circle; the database is damaged")
            path.append(parent)
        return path


@dataclass(frozen=True)
class WordNetTree:
    """The collapsed WordNet tree over classes 0..C−1 and each inner node's synset name."""

    hierarchy: Hierarchy
    names: dict[int, str]  # inner node id (as in `hierarchy`) -> its synset's first word


@dataclass
class _Group:
    name: str
    items: list  # ints (classes) and _Groups, by their smallest class
    first: int  # the smallest class under it


def wordnet_offsets(wnids: Sequence[str]) -> list[int]:
    """The data.noun offsets of ImageNet wnids ("n01440764" → 1440764); a name that is not a
    wnid, or one given twice, is refused."""
    offsets = []
    for wnid in wnids:
        match = WNID.fullmatch(str(wnid))
        if match is None:
            raise VipnbError(f"class {wnid!r} is not a WordNet noun id (n + 8 digits, as "
                             "ImageNet's wnids); a WordNet hierarchy needs wnid classes")
        offsets.append(int(match.group(1)))
    repeated = sorted(w for w, n in Counter(wnids).items() if n > 1)
    if repeated:
        raise VipnbError(f"classes {repeated} are given more than once; each class is one leaf")
    return offsets


def wordnet_tree(wnids: Sequence[str], directory: str | Path) -> WordNetTree:
    """NBDT's WordNet hierarchy over `wnids` (class c = wnids[c]): every class's first-hypernym
    path merged into one tree, single-child chains collapsed (module docstring)."""
    offsets = wordnet_offsets(wnids)
    database = NounDatabase(directory)
    children: dict[int, list[int]] = {}
    class_of = {offset: c for c, offset in enumerate(offsets)}
    roots: list[int] = []
    seen: set[int] = set()
    for offset in offsets:
        path = database.path_to_root(offset)
        for child, parent in zip(path, path[1:], strict=False):
            if child not in seen:
                children.setdefault(parent, []).append(child)
            seen.add(child)
        if path[-1] not in roots:
            roots.append(path[-1])

    def group(offset: int) -> int | _Group:
        # A class whose synset is also another class's hypernym is a leaf beside its hyponyms.
        items = [class_of[offset]] if offset in class_of else []
        items += [group(child) for child in children.get(offset, ())]
        items.sort(key=lambda item: item if isinstance(item, int) else item.first)
        if len(items) == 1:  # a chain: the lower node stands for it
            return items[0]
        first = items[0] if isinstance(items[0], int) else items[0].first
        return _Group(database.synset(offset).name, items, first)

    tops = [group(root) for root in roots]
    top = tops[0] if len(tops) == 1 else _Group("(roots)", tops, 0)  # not one WordNet 3.0 tree
    names: dict[int, str] = {}

    def nested(item: int | _Group) -> int | list:
        # Hierarchy.from_nested numbers inner nodes C, C+1, ... children first, in order.
        if isinstance(item, int):
            return item
        out = [nested(sub) for sub in item.items]
        names[len(wnids) + len(names)] = item.name
        return out

    return WordNetTree(Hierarchy.from_nested(nested(top)), names)


def wordnet_hierarchy(wnids: Sequence[str], directory: str | Path) -> Hierarchy:
    """The class tree of VIPF eq. 7 over ImageNet classes from WordNet (§3.2)."""
    return wordnet_tree(wnids, directory).hierarchy
